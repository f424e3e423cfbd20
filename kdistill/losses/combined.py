"""A weighted sum of distillation losses on the same pair of tensors, e.g. `[("crd", 0.8), ("at", 1000.0)]`.

It is a layer, so losses with weights inside it (CRD's heads and memory) are
tracked, built with it, trained and saved with the distiller.

Example:
    >>> import numpy as np
    >>> from kdistill import losses
    >>> loss = losses.get([("mse", 2.0), ("normalized_mse", 1.0)], kind="feature")
    >>> [round(float(v), 4) for v in loss(np.ones((2, 3), "float32"), np.zeros((2, 3), "float32"))]  # 2 * 1 + 1 * 1/3
    [2.3333, 2.3333]
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from kdistill.losses.base import is_stateful, per_sample_loss

__all__ = ["Combined"]


@keras.saving.register_keras_serializable(package="kdistill")
class Combined(keras.layers.Layer):
    """Per-sample `Σ_k weight_k · loss_k(teacher, student, labels)`.

    Args:
        losses: loss objects (see `kdistill.losses.get`), or their serialized configs.
        weights: one weight per loss (default 1 each).
    """

    def __init__(self, losses: Sequence[Any], weights: Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.parts = [
            keras.saving.deserialize_keras_object(loss) if isinstance(loss, dict) else loss for loss in losses
        ]
        self.part_weights = [float(w) for w in (weights if weights is not None else [1.0] * len(self.parts))]
        if len(self.part_weights) != len(self.parts):
            raise ValueError(f"Combined: {len(self.parts)} losses but {len(self.part_weights)} weights.")
        self.uses_labels = any(getattr(loss, "uses_labels", False) for loss in self.parts)

    def build(self, teacher_shape, student_shape=None, labels_shape=None):
        for loss in self.parts:
            if is_stateful(loss) and not loss.built:
                loss.build(teacher_shape, student_shape or teacher_shape)
        self.built = True

    def call(self, teacher, student, labels=None):
        total = 0.0
        for weight, loss in zip(self.part_weights, self.parts):
            total = total + weight * ops.cast(per_sample_loss(loss, teacher, student, labels), "float32")
        return total

    def compute_output_shape(self, teacher_shape, student_shape=None, labels_shape=None):
        return (teacher_shape[0],)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "losses": [keras.saving.serialize_keras_object(loss) for loss in self.parts],
                "weights": list(self.part_weights),
            }
        )
        return config
