"""GIS sidecars that make rsseg's outputs open named and coloured: GDAL PAM and QGIS styles.

- :func:`class_raster_pam`: the GDAL PAM ``<raster>.aux.xml`` of a class raster, holding the
  category names (``gdalinfo`` lists them) and a thematic raster attribute table (value, class
  name, red/green/blue/alpha) that QGIS and ArcGIS read as the legend.
- :func:`class_raster_qml`: a QGIS paletted renderer (``<raster stem>.qml``, loaded by QGIS as the
  layer's default style) with one labelled, coloured entry per class and the nodata value
  (:data:`~rsseg.constants.IGNORE_INDEX`, 255) transparent.
- :func:`vector_qml`: a QGIS categorized renderer on ``class_name`` for the polygons.
- :func:`transparent_classes`: the classes every style draws transparent (not the GeoTIFF's colour
  table: a TIFF palette holds no alpha, GDAL reads every entry opaque but the nodata value's).

Formats: GDAL's PAM schema (``gdal/data/gdalpamdataset.xsd``: field types 0 integer / 2 string,
usages 0 generic, 2 name, 5 min-max, 6-9 red/green/blue/alpha) and QGIS's QML, version 3. The PAM
file is written as XML because rasterio has no attribute-table or category-name API and GDAL's
Python bindings are not a dependency; ``gdalinfo`` reads it back in the tests.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from rsseg.config import hex_rgb
from rsseg.constants import IGNORE_INDEX as CLASS_NODATA
from rsseg.inference.vectorize import background_named

#: GDAL RAT field (name, GFT type, GFU usage) of a class raster: value, name, RGBA
_RAT_FIELDS = (("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8), ("Alpha", 0, 9))
_QML_HEAD = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def _text(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def transparent_classes(classes: Sequence[str]) -> set[int]:
    """Class ids every style draws transparent: the background of a model with one class of
    interest (``background``, ``building``), so the image shows around the buildings.

    In a land-cover model every class stays opaque: its background is land that is none of the
    other classes (LoveDA's ``background``), not the absence of a class. Nodata (255) is always
    transparent and is not a class.
    """
    named = background_named(classes)
    return set(named) if len(classes) == 2 and len(named) == 1 else set()


def class_alphas(classes: Sequence[str]) -> list[int]:
    """Alpha (0 or 255) of each class in the styles."""
    clear = transparent_classes(classes)
    return [0 if i in clear else 255 for i in range(len(classes))]


def raster_sidecar_paths(path: str | Path) -> tuple[Path, Path]:
    """Where a class raster's sidecars go: ``<raster>.aux.xml`` (read by GDAL) and ``<stem>.qml``
    (the only style file QGIS loads by itself beside a raster)."""
    path = Path(path)
    return path.with_name(path.name + ".aux.xml"), path.with_suffix(".qml")


def class_raster_sidecars(path: str | Path, classes: list[str], colors: list[str]) -> dict[Path, str]:
    """Path -> text of the sidecars of the class raster at ``path`` (:func:`raster_sidecar_paths`)."""
    pam, qml = raster_sidecar_paths(path)
    return {pam: class_raster_pam(classes, colors), qml: class_raster_qml(classes, colors)}


def class_raster_pam(classes: list[str], colors: list[str]) -> str:
    """``.aux.xml`` text for band 1 of a class raster: category names and a thematic RAT."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    cats = ET.SubElement(band, "CategoryNames")
    for name in classes:
        ET.SubElement(cats, "Category").text = name
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for i, (name, type_, usage) in enumerate(_RAT_FIELDS):
        field = ET.SubElement(rat, "FieldDefn", index=str(i))
        ET.SubElement(field, "Name").text = name
        ET.SubElement(field, "Type").text = str(type_)
        ET.SubElement(field, "Usage").text = str(usage)
    for i, (name, color, alpha) in enumerate(zip(classes, colors, class_alphas(classes))):
        row = ET.SubElement(rat, "Row", index=str(i))
        for value in (i, name, *hex_rgb(color), alpha):
            ET.SubElement(row, "F").text = str(value)
    return _text(root)


def class_raster_qml(classes: list[str], colors: list[str]) -> str:
    """QGIS style of a class raster: a paletted renderer, one labelled colour per class, nodata
    transparent even where a user turns off the file's own nodata value."""
    root = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1",
                             nodataColor="")
    nodata = ET.SubElement(ET.SubElement(renderer, "rasterTransparency"), "singleValuePixelList")
    ET.SubElement(nodata, "pixelListEntry", min=str(CLASS_NODATA), max=str(CLASS_NODATA), percentTransparent="100")
    palette = ET.SubElement(renderer, "colorPalette")
    for i, (name, color, alpha) in enumerate(zip(classes, colors, class_alphas(classes))):
        ET.SubElement(palette, "paletteEntry", value=str(i), color="#{:02x}{:02x}{:02x}".format(*hex_rgb(color)), label=name,
                      alpha=str(alpha))
    return _QML_HEAD + _text(root)


def vector_qml(classes: list[str], colors: list[str], alphas: list[int] | None = None,
               attribute: str = "class_name") -> str:
    """QGIS style of the polygons: categorized on ``attribute``, filled with the class colours.
    ``alphas`` (0 or 255 per class; default :func:`class_alphas` of ``classes``): when the polygons
    are some of a model's classes, the model's alphas of those classes, so a class drawn clear in the
    raster style is clear here too."""
    root = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    renderer = ET.SubElement(root, "renderer-v2", type="categorizedSymbol", attr=attribute, symbollevels="0",
                             enableorderby="0", forceraster="0")
    cats = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, (name, color, alpha) in enumerate(zip(classes, colors, class_alphas(classes) if alphas is None else alphas)):
        ET.SubElement(cats, "category", value=name, label=name, symbol=str(i), render="true")
        symbol = ET.SubElement(symbols, "symbol", type="fill", name=str(i), alpha="0.8", clip_to_extent="1",
                               force_rhr="0")
        layer = ET.SubElement(symbol, "layer", attrib={"class": "SimpleFill", "enabled": "1", "pass": "0",
                                                       "locked": "0"})
        options = ET.SubElement(layer, "Option", type="Map")
        rgb = ",".join(map(str, hex_rgb(color)))
        for key, value in (("color", f"{rgb},{alpha}"), ("outline_color", f"{rgb},{alpha}"), ("outline_width", "0.26"),
                           ("outline_style", "solid"), ("style", "solid")):
            ET.SubElement(options, "Option", type="QString", name=key, value=value)
    return _QML_HEAD + _text(root)
