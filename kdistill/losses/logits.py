"""Logits distillation losses: Hinton KD, DKD and logit-standardised KD (keras.ops only).

Convention (see `kdistill.losses.base`): `y_true` is the teacher's logits,
`y_pred` the student's, and `call` returns one value per sample. Losses whose
`uses_labels` is True also read the ground-truth labels (None: the teacher's
top-1 class stands in).

Example:
    >>> import numpy as np
    >>> t = np.array([[3.0, 1.0, 0.0]], "float32"); s = np.array([[1.0, 1.0, 1.0]], "float32")
    >>> loss = DKD(alpha=1.0, beta=8.0, temperature=4.0)
    >>> float(loss.call(t, s, labels=np.array([0]))[0]) > 0
    True
"""

from __future__ import annotations

import keras
from keras import ops

from kdistill.losses._utils import EPSILON, check_temperature
from kdistill.losses.base import DistillationLoss
from kdistill.losses.registry import register

__all__ = ["kd_kl_divergence", "dkd", "standardize", "standardized_kd", "LogitsKL", "DKD", "StandardizedKD"]


def kd_kl_divergence(teacher_logits, student_logits, temperature: float = 4.0):
    """Hinton knowledge-distillation loss: KL of softened distributions times T².

    `loss_i = T² · Σ_c p_t(c) · (log p_t(c) − log p_s(c))` with
    `p = softmax(logits / T)` (Hinton et al., "Distilling the Knowledge in a
    Neural Network", 2015). The T² factor keeps gradient magnitudes comparable
    across temperatures.

    Args:
        teacher_logits: `(batch, classes)` teacher logits.
        student_logits: `(batch, classes)` student logits.
        temperature: softening temperature, > 0.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:
        >>> import numpy as np
        >>> z = np.array([[1.0, 2.0, 3.0]], "float32")
        >>> abs(float(kd_kl_divergence(z, z, 2.0)[0])) < 1e-6
        True
    """
    check_temperature(temperature)
    teacher_logits = ops.cast(teacher_logits, "float32") / temperature
    student_logits = ops.cast(student_logits, "float32") / temperature
    teacher_log_probs = ops.log_softmax(teacher_logits, axis=-1)
    student_log_probs = ops.log_softmax(student_logits, axis=-1)
    teacher_probs = ops.exp(teacher_log_probs)
    kl = ops.sum(teacher_probs * (teacher_log_probs - student_log_probs), axis=-1)
    return kl * (temperature**2)


def _target_mask(labels, logits):
    """One-hot mask of the target class from sparse or one-hot `labels` of `(batch, classes)` logits."""
    classes = ops.shape(logits)[-1]
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] not in (None, 1):
        labels = ops.argmax(labels, axis=-1)
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    return ops.one_hot(labels, classes, dtype="float32")


def dkd(teacher_logits, student_logits, labels, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0):
    """Decoupled Knowledge Distillation: `alpha · TCKD + beta · NCKD`.

    With `p = softmax(z / T)` and `t` the target class:

    - TCKD = `T² · KL([p_t(t), 1 − p_t(t)] ‖ [p_s(t), 1 − p_s(t)])`, the binary
      target-vs-rest distributions;
    - NCKD = `T² · KL(p̂_t ‖ p̂_s)`, where `p̂` is the softmax over the
      non-target classes only.

    Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022. Hinton KD equals
    `TCKD + (1 − p_t(t)) · NCKD`; DKD frees the NCKD weight (beta = 8 on
    CIFAR-100, 0.5 on ImageNet; alpha = 1; T = 4).

    Args:
        teacher_logits: `(batch, classes)`.
        student_logits: `(batch, classes)`.
        labels: the target class, sparse `(batch,)` or one-hot `(batch, classes)`;
            None uses the teacher's top-1 class.
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: softening temperature, > 0.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    check_temperature(temperature)
    teacher_logits = ops.cast(teacher_logits, "float32") / temperature
    student_logits = ops.cast(student_logits, "float32") / temperature
    if labels is None:
        labels = ops.argmax(teacher_logits, axis=-1)
    target = _target_mask(labels, student_logits)
    other = 1.0 - target
    teacher_probs = ops.softmax(teacher_logits, axis=-1)
    student_probs = ops.softmax(student_logits, axis=-1)
    teacher_binary = ops.stack([ops.sum(teacher_probs * target, -1), ops.sum(teacher_probs * other, -1)], axis=-1)
    student_binary = ops.stack([ops.sum(student_probs * target, -1), ops.sum(student_probs * other, -1)], axis=-1)
    tckd = ops.sum(teacher_binary * (ops.log(teacher_binary + EPSILON) - ops.log(student_binary + EPSILON)), axis=-1)
    # Removing the target class: a large negative logit gives it ~0 probability.
    teacher_other = ops.log_softmax(teacher_logits - 1000.0 * target, axis=-1)
    student_other = ops.log_softmax(student_logits - 1000.0 * target, axis=-1)
    nckd = ops.sum(ops.exp(teacher_other) * (teacher_other - student_other) * other, axis=-1)
    return (alpha * tckd + beta * nckd) * temperature**2


def standardize(logits):
    """Z-score of each row of logits, as the authors' `normalize()`: `(z - mean) / (1e-7 + std)`, std with divisor C - 1."""
    logits = ops.cast(logits, "float32")
    classes = ops.cast(ops.shape(logits)[-1], "float32")
    mean = ops.mean(logits, axis=-1, keepdims=True)
    std = ops.sqrt(ops.sum(ops.square(logits - mean), axis=-1, keepdims=True) / (classes - 1.0))
    return (logits - mean) / (1e-7 + std)


def standardized_kd(teacher_logits, student_logits, temperature: float = 2.0):
    """KD on z-score-standardised logits (logit standardisation).

    `loss_i = T² · KL(softmax(Z(t_i)/T) ‖ softmax(Z(s_i)/T))` with
    `Z(z) = (z − mean(z)) / std(z)` per sample, so the student matches the
    teacher's logit *relations* rather than their scale (Sun et al., "Logit
    Standardization in Knowledge Distillation", CVPR 2024; they use a base
    temperature of 2 and weight the KD term 9x the CE on CIFAR-100).

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    check_temperature(temperature)
    teacher = standardize(ops.cast(teacher_logits, "float32")) / temperature
    student = standardize(ops.cast(student_logits, "float32")) / temperature
    teacher_log = ops.log_softmax(teacher, axis=-1)
    student_log = ops.log_softmax(student, axis=-1)
    return ops.sum(ops.exp(teacher_log) * (teacher_log - student_log), axis=-1) * temperature**2


@register("kl", "kd", kind="logits")
@keras.saving.register_keras_serializable(package="kdistill")
class LogitsKL(DistillationLoss):
    """Hinton KD: temperature-softened KL divergence, scaled by T². Config names: `"kl"`, `"kd"`.

    Args:
        temperature: softening temperature, > 0.

    Example:
        >>> import numpy as np
        >>> loss = LogitsKL(temperature=4.0)
        >>> z = np.array([[0.0, 1.0]], "float32")
        >>> abs(float(loss(z, z))) < 1e-6
        True
    """

    #: on logit maps (segmenters) it is the KD of each pixel, averaged over the valid pixels (`kdistill.losses.dense`)
    dense_logits = "pixels"

    def __init__(self, temperature: float = 4.0, reduction="sum_over_batch_size", name="kd_kl"):
        check_temperature(temperature)
        super().__init__(kd_kl_divergence, reduction=reduction, name=name, temperature=float(temperature))


@register("dkd", kind="logits")
@keras.saving.register_keras_serializable(package="kdistill")
class DKD(DistillationLoss):
    """Decoupled KD (see `dkd`); reads the labels. Config name: `"dkd"`.

    Args:
        alpha: TCKD weight (1.0).
        beta: NCKD weight (8.0 on CIFAR-100).
        temperature: softening temperature (4.0).

    Example:
        >>> DKD(beta=2.0).get_config()["beta"]
        2.0
    """

    uses_labels = True

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        reduction="sum_over_batch_size",
        name="dkd",
    ):
        check_temperature(temperature)
        super().__init__(
            dkd, reduction=reduction, name=name, alpha=float(alpha), beta=float(beta), temperature=float(temperature)
        )


@register("standardized_kd", kind="logits")
@keras.saving.register_keras_serializable(package="kdistill")
class StandardizedKD(DistillationLoss):
    """KD on standardised logits (see `standardized_kd`). Config name: `"standardized_kd"`.

    Example:
        >>> import numpy as np
        >>> z = np.array([[1.0, 2.0, 4.0]], "float32")
        >>> abs(float(StandardizedKD()(z, 10 * z))) < 1e-5  # scale-invariant
        True
    """

    #: on logit maps each pixel's class vector is standardised and distilled, averaged over the valid pixels
    #: (`kdistill.losses.dense`)
    dense_logits = "pixels"

    def __init__(self, temperature: float = 2.0, reduction="sum_over_batch_size", name="standardized_kd"):
        check_temperature(temperature)
        super().__init__(standardized_kd, reduction=reduction, name=name, temperature=float(temperature))
