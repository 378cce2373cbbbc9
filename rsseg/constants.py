"""Values every layer of rsseg agrees on (a leaf module: it imports nothing, so losses and metrics
can use it without reaching up into ``rsseg.data``)."""

#: The one ignore value of labels inside rsseg, and the nodata value of predicted class rasters:
#: dataset adapters map their own no-data / boundary codes to it, losses and metrics skip it.
IGNORE_INDEX = 255
