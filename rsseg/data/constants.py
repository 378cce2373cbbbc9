"""Values every layer of rsseg agrees on."""

#: The one ignore value of labels inside rsseg, and the nodata value of predicted class rasters:
#: dataset adapters map their own no-data / boundary codes to it, losses and metrics skip it.
IGNORE_INDEX = 255
