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

import importlib
from types import ModuleType

__all__ = ["tensorflow_module", "LazyTensorFlow", "INSTALL_HINT"]

INSTALL_HINT = ('install TensorFlow beside Keras: pip install "tensorflow-cpu==2.21.0" (or "tensorflow==2.21.0" with a GPU). '
                "Without it, train from NumPy arrays (kdistill.data.load_fashion_mnist) with any Keras backend.")


def tensorflow_module(purpose: str = "this") -> ModuleType:
    """The `tensorflow` module, or an ImportError naming what needs it and how to install it."""
    try:
        return importlib.import_module("tensorflow")
    except ImportError:
        raise ImportError(f"TensorFlow is needed for {purpose} (tf.data pipelines, export, int8 calibration, tf.distribute); "
                          f"{INSTALL_HINT}") from None


class LazyTensorFlow:
    """Stands in for `tensorflow` in a module: imports it on first attribute access.

    Args:
        purpose: what the using module does with TensorFlow, for the error message.
    """

    def __init__(self, purpose: str):
        self._purpose = purpose

    def __getattr__(self, name: str):
        return getattr(tensorflow_module(self._purpose), name)
