"""rsseg's error types: user mistakes as :class:`RsSegError` subclasses that are also builtins.

The CLI prints any :class:`RsSegError` as a single clean line (no traceback) and exits 2;
``--verbose`` shows the traceback. Each subclass also derives from the builtin a caller would
catch without knowing rsseg (as TorchGeo's ``DatasetNotFoundError`` and rasterio's errors do):
``except FileNotFoundError`` catches a missing dataset, ``except ValueError`` a bad config key.
Internal consistency checks (tensor shapes inside the library) raise plain ``ValueError`` /
``TypeError``: they are bugs, not user mistakes. Anything else escaping is a bug in rsseg.
"""


class RsSegError(Exception):
    """A problem with the user's input (file, config, flag) that they can fix.

    The message names the problem and the fix, e.g. which file, which key, what was expected.
    """


class ConfigError(RsSegError, ValueError):
    """A config file, config key, override or option value is missing, unknown or invalid."""


class DatasetNotFoundError(RsSegError, FileNotFoundError):
    """A dataset root, split or file is missing; the message says the expected layout and where to get it."""


class DatasetError(RsSegError, ValueError):
    """A dataset's files are there but unusable as found (unpaired images, too few files, broken archive)."""


class InputRasterError(RsSegError, ValueError):
    """A raster cannot be read, or does not fit its partner (size, CRS, band count)."""


class InputNotFoundError(RsSegError, FileNotFoundError):
    """An input raster path does not exist."""


class LabelError(RsSegError, ValueError):
    """A label raster or label array holds values that are neither a class nor the ignore value."""


class CheckpointError(RsSegError, ValueError):
    """A checkpoint or weights file is unreadable, or inconsistent with its metadata."""


class CheckpointNotFoundError(RsSegError, FileNotFoundError):
    """A checkpoint path does not exist."""


class OutputExistsError(RsSegError, FileExistsError):
    """An output file exists and ``--overwrite`` was not given."""


class OutputPathError(RsSegError, OSError):
    """An output location cannot be written (missing or read-only directory)."""


class BackendUnavailableError(RsSegError, RuntimeError):
    """A requested device, engine or cluster is not available here: no CUDA GPU, ONNX Runtime or
    Dask not installed, a Dask scheduler that cannot be reached."""


class MissingExtraError(RsSegError, ImportError):
    """A command or model needs a part of rsseg that this install left out (the ``train`` extra:
    PyTorch and its libraries); the message names what needed it and the ``pip install`` line."""


class TileRequestError(RsSegError, ValueError):
    """A map tile the viewer's tile server will not render; ``status`` is the HTTP answer (404: a
    zoom below the raster's overviews, 403: a file that now leads outside the data directory,
    503: the server is busy)."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


# -- warnings: the run goes on, but the user should know (``-W error::rsseg.errors.RsSegWarning``
# turns them all into errors, as ``--strict`` does for the input-fit checks)


class RsSegWarning(UserWarning):
    """Base class of rsseg's warnings."""


class InputFitWarning(RsSegWarning):
    """An input raster differs from what the model was trained on (pixel size, band names, alpha)."""


class NotGeoreferencedWarning(RsSegWarning):
    """An input raster has no CRS: outputs keep its pixel grid but cannot be placed on a map."""


class MemoryBudgetWarning(RsSegWarning):
    """A memory budget is too small to be efficient (e.g. ``--buffer-mb`` below two tiles)."""


class FallbackWarning(RsSegWarning):
    """A faster path failed and a slower one runs instead (e.g. ONNX export -> PyTorch)."""


class LabelWarning(RsSegWarning):
    """Labels are usable but ambiguous (e.g. a nodata value that is also a class index)."""


class CacheWarning(RsSegWarning):
    """A cache or side product could not be written; the run's results are unaffected."""
