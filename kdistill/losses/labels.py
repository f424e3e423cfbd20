"""The label side of a distillation loss: cross-entropy from logits, `alpha`, and masks for unlabelled samples (keras.ops only).

Integer labels below 0 (`kdistill.UNLABELED`, -1) mark transfer-set images: the
cross-entropy and the metrics skip them, the distillation terms do not.

Example:
    >>> import numpy as np
    >>> from kdistill.losses.labels import label_mask
    >>> np.asarray(label_mask(np.array([3, -1, 0], "int32"))).tolist()
    [1.0, 0.0, 1.0]
"""

from __future__ import annotations

from typing import Any

from kdistill.labels import UNLABELED
import keras
from keras import ops

__all__ = ["UNLABELED", "LabelLoss", "check_alpha", "weighted_mean", "label_mask", "masked_mean"]


_LABEL_LOSSES = {
    "sparse_categorical_crossentropy": keras.losses.sparse_categorical_crossentropy,
    "categorical_crossentropy": keras.losses.categorical_crossentropy,
}


class LabelLoss:
    """Per-sample cross-entropy with labels, computed from the student's logits.

    `sparse` says which labels it takes: True for class indices, False for
    one-hot or soft rows, None for a function of the user's own.
    """

    def __init__(self, loss: Any):
        if loss is None:
            loss = "sparse_categorical_crossentropy"
        if isinstance(loss, str):
            if loss not in _LABEL_LOSSES:
                raise ValueError(
                    f"Unknown label loss {loss!r}; use one of {', '.join(_LABEL_LOSSES)}, a "
                    "keras.losses.Loss with from_logits=True, or a callable fn(y_true, logits)."
                )
            self._function = _LABEL_LOSSES[loss]
            self._kwargs = {"from_logits": True}
            # integer labels (a validation split, or views that are not mixed) are made one-hot for the categorical loss
            self._one_hot = loss == "categorical_crossentropy"
            self.sparse = loss.startswith("sparse")
        elif isinstance(loss, keras.losses.Loss):
            if (
                getattr(loss, "from_logits", None) is False
                or getattr(loss, "_fn_kwargs", {}).get("from_logits") is False
            ):
                raise ValueError(
                    f"{type(loss).__name__}(from_logits=False) was passed, but the student outputs "
                    f"logits. Use {type(loss).__name__}(from_logits=True)."
                )
            self._function = loss.call
            self._kwargs = {}
            self.sparse = {
                keras.losses.SparseCategoricalCrossentropy: True,
                keras.losses.CategoricalCrossentropy: False,
            }.get(type(loss))
        elif callable(loss):
            self._function = loss
            self._kwargs = {}
            self.sparse = None  # a function of its own: whatever labels it takes
        else:
            raise TypeError(f"loss must be a name, a keras.losses.Loss or a callable, received {loss!r}.")

    _one_hot = False

    def __call__(self, labels, logits):
        if self._one_hot and len(labels.shape) == len(logits.shape) - 1:
            # UNLABELED (-1) gives a row of zeros
            labels = ops.one_hot(ops.cast(labels, "int32"), ops.shape(logits)[-1])
        return ops.cast(self._function(labels, logits, **self._kwargs), "float32")


def check_alpha(alpha: Any) -> float:
    """Returns alpha as a float, or raises a ValueError saying what alpha means."""
    if isinstance(alpha, str):
        raise ValueError(f"alpha must be a number in [0, 1], received the string {alpha!r} (write it without quotes).")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"alpha must be a number in [0, 1] (the weight of the distillation terms; "
            f"1 - alpha weighs the cross-entropy with labels), received alpha={alpha!r}."
        )
    return float(alpha)


def weighted_mean(values, sample_weight):
    """Per-sample values -> scalar, as Keras' 'sum_over_batch_size' reduction."""
    if sample_weight is None:
        return ops.mean(values)
    sample_weight = ops.cast(ops.reshape(sample_weight, ops.shape(values)), values.dtype)
    return ops.sum(values * sample_weight) / ops.cast(ops.shape(values)[0], values.dtype)


def label_mask(labels):
    """1.0 for labelled samples, 0.0 for `UNLABELED` ones (integer labels < 0); None when every sample counts.

    One-hot (float) labels cannot mark a sample unlabelled, so they are all counted.
    """
    if labels is None or "int" not in str(labels.dtype) or len(labels.shape) > 2:
        return None
    if len(labels.shape) == 2 and labels.shape[-1] != 1:  # one-hot rows, even when stored as integers
        return None
    return ops.cast(ops.reshape(labels, (-1,)) >= 0, "float32")


def masked_mean(values, mask, sample_weight):
    """Mean of per-sample `values` over the labelled samples (weighted by `sample_weight`); 0 when there are none."""
    weights = mask
    if sample_weight is not None:
        weights = weights * ops.cast(ops.reshape(sample_weight, ops.shape(values)), "float32")
    return ops.sum(values * weights) / ops.maximum(ops.sum(mask), 1.0)
