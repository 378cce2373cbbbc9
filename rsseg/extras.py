"""The optional part of the install, and the one error for its absence.

``pip install rsseg`` is the analyst's install: predict, evaluate, reports and the viewer, on ONNX
Runtime, with no PyTorch. Training, ``export``, ``import``, ``weights``, ``stats``, the demo and
running a PyTorch checkpoint (``.ckpt``) need the ``train`` extra. Code that needs it imports
its libraries as usual; :func:`missing_extra` (or :func:`needs_train` around a block) turns the
``ModuleNotFoundError`` of one of them into a :class:`~rsseg.errors.MissingExtraError` naming what
needed it and the install line, so every such path fails with the same one-line advice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rsseg.errors import MissingExtraError

TRAIN_INSTALL = "pip install 'rsseg[train]'"
#: the module of each CPU runtime that runs an exported ``.onnx`` model, by engine name
RUNTIME_MODULE = {"onnx": "onnxruntime", "openvino": "openvino"}
#: what installs each of them (ONNX Runtime is in the base install)
RUNTIME_INSTALL = {"onnx": "pip install onnxruntime", "openvino": "pip install 'rsseg[openvino]'"}
#: top-level modules that come with the train extra and that rsseg imports
TRAIN_MODULES = frozenset({"torch", "torchvision", "timm", "torchgeo", "lightning", "onnx", "onnxscript",
                           "safetensors", "huggingface_hub", "tensorboard"})
#: what a PyTorch checkpoint's user can do instead of installing PyTorch
CHECKPOINT_INSTEAD = ("; or run the model's .onnx file instead (written by `rsseg export -m MODEL.ckpt -o MODEL.onnx` "
                      "where the extra is installed), which needs no PyTorch")


def missing_train_module(exc: BaseException) -> str | None:
    """The train-extra module whose absence raised ``exc``, or None for any other error."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    return top if top in TRAIN_MODULES else None


def missing_extra(what: str, exc: BaseException, instead: str = "") -> MissingExtraError | None:
    """The error to raise for ``exc`` when it says the train extra is missing (else None):
    ``what`` (e.g. ``rsseg train``) needs it, the install line, then ``instead``."""
    module = missing_train_module(exc)
    if module is None:
        return None
    return MissingExtraError(f"{what} needs the training extra ({module} is not installed): {TRAIN_INSTALL}{instead}")


@contextlib.contextmanager
def needs_train(what: str, instead: str = "") -> Iterator[None]:
    """Run a block that imports the train extra's libraries; their absence raises
    :class:`~rsseg.errors.MissingExtraError` (:func:`missing_extra`). Any other error passes."""
    try:
        yield
    except ModuleNotFoundError as exc:
        error = missing_extra(what, exc, instead)
        if error is None:
            raise
        raise error from None
