"""Creating a model's training variables before `fit`, so that TensorFlow traces the first step once.

With no `tf.distribute` strategy, Keras' TensorFlow trainer leaves the
optimizer's slots and the compiled metrics unbuilt until the first training
step is traced; that trace creates variables, and TensorFlow then traces the
step a second time without them. `build_before_fit` creates them from the
data's shapes first, as Keras itself does under a strategy, so the step is
traced once. Other backends build them before tracing already; there it does
nothing.

Example:
    >>> import keras, numpy as np
    >>> from kdistill.fit_build import build_before_fit
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    >>> build_before_fit(model, np.zeros((8, 4)), np.zeros((8, 3)))
    >>> model.optimizer.built == (keras.backend.backend() == "tensorflow")
    True
"""

from __future__ import annotations

import logging
from typing import Any

import keras
from keras import tree

__all__ = ["build_before_fit"]

logger = logging.getLogger(__name__)


def build_before_fit(model: keras.Model, x: Any, y: Any = None) -> None:
    """Builds a compiled `model`'s optimizer and metrics from the shapes of `x` and `y` (TensorFlow backend).

    Args:
        model: a compiled Keras model.
        x: what `fit` will be given: a `tf.data.Dataset`, or arrays (a
            structure of them).
        y: the labels when `x` is arrays.

    Data whose shapes are unknown without drawing a batch (generators,
    `keras.utils.PyDataset`) are left to Keras, as are a model compiled under
    a `tf.distribute` strategy (Keras builds it then) and one that runs eagerly
    (`run_eagerly=True` or `tf.config.run_functions_eagerly(True)`). Where the
    shapes alone cannot build the model, `fit` builds it while tracing.
    """
    if keras.backend.backend() != "tensorflow" or model.optimizer is None or not hasattr(model, "_symbolic_build"):
        return
    import tensorflow as tf

    if (
        model.run_eagerly
        or tf.config.functions_run_eagerly()
        or getattr(model, "_distribute_strategy", None) is not None
    ):
        return  # nothing is traced when it runs eagerly; under a strategy Keras builds it itself
    batch = _batch_spec(x, y)
    if batch is None:
        return
    try:
        model._symbolic_build(data_batch=batch)
    # a speed-up only: where shapes alone cannot build the model, fit builds it as Keras does
    except Exception as error:
        logger.debug(
            "Building %s before fit failed (%s); fit builds it while tracing its first step.", model.name, error
        )


def _batch_spec(x: Any, y: Any):
    """`tf.TensorSpec`s of one batch of `x` (and `y`), or None where they cannot be read without drawing a batch."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        return x.element_spec
    arrays = (x,) if y is None else (x, y)
    if not all(hasattr(leaf, "shape") and hasattr(leaf, "dtype") for leaf in tree.flatten(arrays)):
        return None

    def spec(array):
        dtype = keras.backend.standardize_dtype(array.dtype)
        dtype = keras.backend.floatx() if "float" in dtype else dtype  # fit casts NumPy floats to floatx
        return tf.TensorSpec((None, *array.shape[1:]), dtype)

    return tree.map_structure(spec, arrays)
