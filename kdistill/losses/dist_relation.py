"""DIST: distillation by Pearson correlation of softened predictions, between and within classes.

Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher",
NeurIPS 2022. Instead of matching probabilities exactly (KL), the student
matches the teacher's *relations*: per image, the correlation of the two class
distributions (inter-class); per class, the correlation over the images of the
batch (intra-class). This tolerates a large teacher-student gap. Config name
`"dist"`; typical setting: `logits_loss={"name": "dist", "beta": 2.0, "gamma": 2.0}`
with `temperature=4.0` on CIFAR-sized data (the authors use beta = gamma = 1,
tau = 1 on ImageNet, and 2, 2, 4 on CIFAR-100).

Example:
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(8, 10)).astype("float32")
    >>> abs(float(DIST()(z, z))) < 1e-6
    True
    >>> float(DIST()(z, -z)) > 1.0  # anti-correlated predictions
    True
"""

from __future__ import annotations

import keras
from keras import ops

from kdistill.losses._utils import broadcast_to_batch, check_temperature
from kdistill.losses.base import DistillationLoss
from kdistill.losses.registry import register

__all__ = ["dist_loss", "DIST"]


def _pearson_rows(a, b, eps: float = 1e-8):
    """Pearson correlation of each row of `a` with the same row of `b` (the authors' cosine of centred rows)."""
    a = a - ops.mean(a, axis=1, keepdims=True)
    b = b - ops.mean(b, axis=1, keepdims=True)
    norms = ops.sqrt(ops.sum(ops.square(a), axis=1)) * ops.sqrt(ops.sum(ops.square(b), axis=1))
    return ops.sum(a * b, axis=1) / (norms + eps)


def dist_loss(teacher_logits, student_logits, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0):
    """DIST loss, `T² · (beta · (1 − mean_i ρ(y_s,i, y_t,i)) + gamma · (1 − mean_c ρ(y_s,:c, y_t,:c)))`.

    `y = softmax(z / T)`; `ρ` is Pearson's correlation, over classes for each image
    (inter-class) and over the batch's images for each class (intra-class).

    Args:
        teacher_logits: `(batch, classes)`.
        student_logits: `(batch, classes)`.
        beta: weight of the inter-class term.
        gamma: weight of the intra-class term.
        temperature: softening temperature, > 0.

    Returns:
        `(batch,)` float32: the batch-level value repeated per sample (the
        intra-class term compares images of the batch).
    """
    check_temperature(temperature)
    student = ops.softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
    teacher = ops.softmax(ops.cast(teacher_logits, "float32") / temperature, axis=-1)
    inter = 1.0 - ops.mean(_pearson_rows(student, teacher))
    intra = 1.0 - ops.mean(_pearson_rows(ops.transpose(student), ops.transpose(teacher)))
    return broadcast_to_batch(temperature**2 * (beta * inter + gamma * intra), teacher_logits)


@register("dist", kind="logits")
@keras.saving.register_keras_serializable(package="kdistill")
class DIST(DistillationLoss):
    """DIST (see `dist_loss`). Config name: `"dist"`.

    Args:
        beta: inter-class weight (1.0).
        gamma: intra-class weight (1.0).
        temperature: softening temperature (1.0 in the paper's ImageNet setting).
    """

    def __init__(
        self,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
        reduction="sum_over_batch_size",
        name="dist",
    ):
        check_temperature(temperature)
        super().__init__(
            dist_loss,
            reduction=reduction,
            name=name,
            beta=float(beta),
            gamma=float(gamma),
            temperature=float(temperature),
        )
