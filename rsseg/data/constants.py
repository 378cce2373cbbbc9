"""Values every layer of rsseg agrees on; defined in :mod:`rsseg.constants` (importable from the
lower layers), re-exported here for the data layer's callers."""

from rsseg.constants import IGNORE_INDEX

__all__ = ["IGNORE_INDEX"]
