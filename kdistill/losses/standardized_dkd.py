"""Logit standardisation applied to DKD: Decoupled KD on z-scored logits.

Sun, Ren, Li, Wang & Cao, "Logit Standardization in Knowledge Distillation",
CVPR 2024, show that z-scoring teacher and student logits before the softmax
(`kdistill.losses.logits.standardize`, their `normalize()`) helps KD and its
variants; their code applies it inside DKD's loss (`dkd_loss(..., logit_stand=True)`).
Config name `"standardized_dkd"`; typical setting on CIFAR-100:
`logits_loss={"name": "standardized_dkd", "beta": 8.0}`, `temperature=2.0`.

Example:
    >>> import numpy as np
    >>> t = np.array([[3.0, 1.0, 0.0]], "float32")
    >>> loss = StandardizedDKD(temperature=2.0)
    >>> abs(float(loss.call(t, 5.0 * t + 2.0, labels=np.array([0]))[0])) < 1e-5  # invariant to the student's scale and shift
    True
"""

from __future__ import annotations

import keras

from kdistill.losses._utils import check_temperature
from kdistill.losses.base import DistillationLoss
from kdistill.losses.logits import dkd, standardize
from kdistill.losses.registry import register

__all__ = ["standardized_dkd", "StandardizedDKD"]


def standardized_dkd(
    teacher_logits, student_logits, labels, alpha: float = 1.0, beta: float = 8.0, temperature: float = 2.0
):
    """`dkd(standardize(teacher), standardize(student), labels, alpha, beta, temperature)` (see `kdistill.losses.logits.dkd`)."""
    return dkd(standardize(teacher_logits), standardize(student_logits), labels, alpha, beta, temperature)


@register("standardized_dkd", kind="logits")
@keras.saving.register_keras_serializable(package="kdistill")
class StandardizedDKD(DistillationLoss):
    """DKD on standardised logits; reads the labels. Config name: `"standardized_dkd"`."""

    uses_labels = True

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 2.0,
        reduction="sum_over_batch_size",
        name="standardized_dkd",
    ):
        check_temperature(temperature)
        super().__init__(
            standardized_dkd,
            reduction=reduction,
            name=name,
            alpha=float(alpha),
            beta=float(beta),
            temperature=float(temperature),
        )
