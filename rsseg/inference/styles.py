"""GIS sidecars that make rsseg's outputs open named and coloured: GDAL PAM and QGIS styles.

- :func:`class_raster_pam`: the GDAL PAM ``<raster>.aux.xml`` of a class raster, holding the
  category names (``gdalinfo`` lists them) and a thematic raster attribute table (value, class
  name, red/green/blue/alpha) that QGIS and ArcGIS read as the legend.
- :func:`class_raster_qml`: a QGIS paletted renderer (``<raster stem>.qml``, loaded by QGIS as the
  layer's default style) with one labelled, coloured entry per class.
- :func:`vector_qml`: a QGIS categorized renderer on ``class_name`` for the polygons.

Formats: GDAL's PAM schema (``gdal/data/gdalpamdataset.xsd``: field types 0 integer / 2 string,
usages 0 generic, 2 name, 5 min-max, 6-9 red/green/blue/alpha) and QGIS's QML, version 3.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from rsseg.config import hex_rgb

#: GDAL RAT field (name, GFT type, GFU usage) of a class raster: value, name, RGBA
_RAT_FIELDS = (("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8), ("Alpha", 0, 9))
_QML_HEAD = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def _text(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


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
    for i, (name, color) in enumerate(zip(classes, colors)):
        row = ET.SubElement(rat, "Row", index=str(i))
        for value in (i, name, *hex_rgb(color), 255):
            ET.SubElement(row, "F").text = str(value)
    return _text(root)


def class_raster_qml(classes: list[str], colors: list[str]) -> str:
    """QGIS style of a class raster: a paletted renderer, one labelled colour per class."""
    root = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1",
                             nodataColor="")
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for i, (name, color) in enumerate(zip(classes, colors)):
        ET.SubElement(palette, "paletteEntry", value=str(i), color="#{:02x}{:02x}{:02x}".format(*hex_rgb(color)), label=name,
                      alpha="255")
    return _QML_HEAD + _text(root)


def vector_qml(classes: list[str], colors: list[str], attribute: str = "class_name") -> str:
    """QGIS style of the polygons: categorized on ``attribute``, filled with the class colours."""
    root = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    renderer = ET.SubElement(root, "renderer-v2", type="categorizedSymbol", attr=attribute, symbollevels="0",
                             enableorderby="0", forceraster="0")
    cats = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, (name, color) in enumerate(zip(classes, colors)):
        ET.SubElement(cats, "category", value=name, label=name, symbol=str(i), render="true")
        symbol = ET.SubElement(symbols, "symbol", type="fill", name=str(i), alpha="0.8", clip_to_extent="1",
                               force_rhr="0")
        layer = ET.SubElement(symbol, "layer", attrib={"class": "SimpleFill", "enabled": "1", "pass": "0",
                                                       "locked": "0"})
        options = ET.SubElement(layer, "Option", type="Map")
        rgb = ",".join(map(str, hex_rgb(color)))
        for key, value in (("color", f"{rgb},255"), ("outline_color", f"{rgb},255"), ("outline_width", "0.26"),
                           ("outline_style", "solid"), ("style", "solid")):
            ET.SubElement(options, "Option", type="QString", name=key, value=value)
    return _QML_HEAD + _text(root)
