"""ISPRS Potsdam: 5 cm RGBIR true orthophotos, 6000 x 6000 tiles (see :mod:`.isprs`)."""

from __future__ import annotations

from rsseg.data.datasets.base import register_dataset
from rsseg.data.datasets.isprs import ISPRSFiles, ISPRSSpec


@register_dataset
class Potsdam(ISPRSSpec):
    name = "potsdam"
    title = "Potsdam"
    file_bands = ("red", "green", "blue", "nir")  # 4_Ortho_RGBIR
    bands = ("red", "green", "blue")
    gsd = 0.05
    files = ISPRSFiles(
        image_zip="4_Ortho_RGBIR.zip",
        label_zip="5_Labels_all.zip",
        eroded_zip="5_Labels_all_noBoundary.zip",
        image_dir="4_Ortho_RGBIR",
        image="{}_RGBIR.tif",
        label="{}_label.tif",
        eroded="{}_label_noBoundary.tif",
    )

    def tile_ids(self, split: str) -> list[str]:
        from torchgeo.datasets.potsdam import Potsdam2D  # imported here: torchgeo is slow to import

        return list(Potsdam2D.splits[split])
