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
