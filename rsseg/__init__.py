"""rsseg: remote-sensing semantic segmentation with neural-collapse regularizers."""

from rsseg.errors import RsSegError

__all__ = ["RsSegError", "__version__"]
__version__ = "0.1.0"
