"""True (ellipsoidal) areas of pixels and polygons, for any CRS.

Planar area in the raster's CRS is only right in equal-area projections: in geographic
coordinates it is in square degrees, and in Web Mercator (most aerial imagery) it is inflated by
1/cos^2(latitude). So areas are always geodesic, on the CRS's own ellipsoid (pyproj.Geod,
Karney's algorithm): polygons after transforming their vertices to longitude/latitude, pixels row
by row (for a north-up raster the pixel area depends on the row only; it is evaluated at the
centre column). Without a CRS the coordinates are taken as metres, and the caller warns.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer
from rasterio.crs import CRS as RioCRS


class AreaModel:
    """Areas in m^2 for one raster grid (``transform``, ``crs``, ``width`` x ``height``)."""

    def __init__(self, transform: Affine, crs: RioCRS | None, width: int, height: int) -> None:
        self.transform, self.width, self.height = transform, width, height
        self.crs = CRS.from_wkt(crs.to_wkt()) if crs else None
        if self.crs is not None:
            geo = self.crs.geodetic_crs
            self.geod: Geod | None = self.crs.get_geod()
            self._to_lonlat = Transformer.from_crs(self.crs, geo, always_xy=True)
        else:
            self.geod = None
        self._planar = abs(transform.a * transform.e - transform.b * transform.d)

    def row_areas(self, y0: int, y1: int) -> np.ndarray:
        """Pixel area in m^2 for raster rows [y0, y1) -> float64 [y1 - y0]."""
        if self.geod is None:
            return np.full(y1 - y0, self._planar)
        rows = np.arange(y0, y1, dtype=np.float64)
        cx = np.full_like(rows, self.width // 2)
        corners = [(cx, rows), (cx + 1, rows), (cx + 1, rows + 1), (cx, rows + 1)]
        lon, lat = [], []
        for c, r in corners:
            t = self.transform
            x, y = t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f
            lo, la = self._to_lonlat.transform(x, y)
            lon.append(lo)
            lat.append(la)
        lon, lat = np.stack(lon, 1), np.stack(lat, 1)
        return np.array([abs(self.geod.polygon_area_perimeter(lon[i], lat[i])[0]) for i in range(len(rows))])

    def pixel_size_m(self) -> float:
        """Side of a square with the area of a pixel at the raster's centre row, in metres."""
        mid = self.height // 2
        return float(np.sqrt(self.row_areas(mid, mid + 1)[0]))

    def polygon_areas(self, geoms: np.ndarray) -> np.ndarray:
        """Areas in m^2 of shapely polygons given in the raster's CRS -> float64 [N]."""
        if self.geod is None or len(geoms) == 0:
            return shapely.area(geoms).astype(np.float64) if len(geoms) else np.zeros(0)
        lonlat = shapely.transform(geoms, lambda xy: np.stack(self._to_lonlat.transform(xy[:, 0], xy[:, 1]), 1))
        return np.array([abs(self.geod.geometry_area_perimeter(g)[0]) for g in lonlat])
