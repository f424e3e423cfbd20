"""Optional backends: TensorFlow is imported only where it is used, with one clear error where it is missing.

The distiller, losses, adapters, models, evaluation and statistics run on any
Keras backend (TensorFlow, JAX, PyTorch). tf.data pipelines, SavedModel/TFLite/ONNX
export, int8 calibration and `tf.distribute` need TensorFlow; the modules that
use them refer to it through `tensorflow_module()`, so `import kdistill` works
where TensorFlow is not installed and the first use says what to install.

Example:
    >>> from kdistill import backend
    >>> backend.tensorflow_module().__name__
    'tensorflow'
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
from types import ModuleType
from typing import Iterator

from kdistill.errors import UserError

__all__ = [
    "tensorflow_module",
    "LazyTensorFlow",
    "INSTALL_HINT",
    "native_stderr_silenced",
    "quiet_native_code",
    "KERAS_BACKENDS",
    "check_backend_name",
    "select",
]

#: the names Keras 3 accepts in KERAS_BACKEND; kdistill trains on the first three
KERAS_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")

INSTALL_HINT = (
    'install TensorFlow beside Keras: pip install "tensorflow-cpu==2.21.0" (or "tensorflow==2.21.0" with a GPU). '
    "Without it, train from NumPy arrays (kdistill.data.load_fashion_mnist) with any Keras backend."
)


def tensorflow_module(purpose: str = "this") -> ModuleType:
    """The `tensorflow` module, or an ImportError naming what needs it and how to install it."""
    try:
        return importlib.import_module("tensorflow")
    except ImportError:
        raise ImportError(
            f"TensorFlow is needed for {purpose} (tf.data pipelines, export, int8 calibration, tf.distribute); "
            f"{INSTALL_HINT}"
        ) from None


class LazyTensorFlow:
    """Stands in for `tensorflow` in a module: imports it on first attribute access.

    Args:
        purpose: what the using module does with TensorFlow, for the error message.
    """

    def __init__(self, purpose: str):
        self._purpose = purpose

    def __getattr__(self, name: str):
        return getattr(tensorflow_module(self._purpose), name)


def select(name: str | None) -> None:
    """Sets KERAS_BACKEND to `name` (`kdistill --backend`); refuses when Keras already runs on another one (it reads the variable once)."""
    if name is None:
        return
    keras_module = sys.modules.get("keras")
    if keras_module is not None and hasattr(keras_module, "backend") and keras_module.backend.backend() != name:
        raise UserError(
            f"--backend {name}: Keras is already loaded in this process with the {keras_module.backend.backend()!r} backend, "
            f"and it picks its backend once. Run the command in a new process, or set KERAS_BACKEND={name} before starting Python."
        )
    os.environ["KERAS_BACKEND"] = name


def check_backend_name(name: str | None = None) -> None:
    """Raises `UserError` listing the valid names when `name` (default: KERAS_BACKEND) is no Keras backend.

    Keras itself says only "Unable to import backend : <name>".

    Example:
        >>> check_backend_name("jax")
        >>> check_backend_name("tensorflw")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        kdistill.errors.UserError: KERAS_BACKEND='tensorflw' is not a Keras backend. ...
    """
    name = os.environ.get("KERAS_BACKEND") if name is None else name
    if name and name not in KERAS_BACKENDS:
        raise UserError(
            f"KERAS_BACKEND={name!r} is not a Keras backend. Set it to tensorflow, jax or torch (kdistill trains on these; "
            f"Keras also knows {', '.join(KERAS_BACKENDS[3:])}), pass --backend, or unset it for tensorflow."
        )


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Sends what native code writes to file descriptor 2 to /dev/null (Python's own stderr objects keep working after)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quiet_native_code() -> Iterator[None]:
    """Silences native stderr (TFLite's "fully_quantize: 0, ..." and "Created TensorFlow Lite XNNPACK delegate" lines) unless
    kdistill's logger shows DEBUG (`kdistill --verbose`). Errors still surface as Python exceptions with their messages."""
    if logging.getLogger("kdistill").isEnabledFor(logging.DEBUG):
        yield
        return
    with native_stderr_silenced():
        yield


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow where installed (Keras does on JAX and PyTorch too, to save a model) without the C++ lines it prints; --verbose keeps them."""
    if "tensorflow" in sys.modules or (
        os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" and not importlib.util.find_spec("tensorflow")
    ):
        return
    try:
        with native_stderr_silenced():
            import tensorflow  # noqa: F401
    except ImportError:
        pass  # whatever needs it says so, with the install line
