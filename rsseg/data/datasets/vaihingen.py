"""ISPRS Vaihingen: 9 cm IRRG (false-colour) true orthophotos (see :mod:`.isprs`)."""

from __future__ import annotations

from rsseg.data.datasets.base import register_dataset
from rsseg.data.datasets.isprs import ISPRSFiles, ISPRSSpec


@register_dataset
class Vaihingen(ISPRSSpec):
    name = "vaihingen"
    title = "Vaihingen"
    file_bands = ("nir", "red", "green")  # IRRG false-colour orthophotos
    bands = ("nir", "red", "green")
    gsd = 0.09
    files = ISPRSFiles(
        image_zip="ISPRS_semantic_labeling_Vaihingen.zip",
        label_zip="ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip",
        eroded_zip="ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip",
        image_dir="top",
        image="{}.tif",
        label="{}.tif",
        eroded="{}_noBoundary.tif",
    )

    def tile_ids(self, split: str) -> list[str]:
        from torchgeo.datasets.vaihingen import Vaihingen2D  # imported here: torchgeo is slow to import

        return list(Vaihingen2D.splits[split])
