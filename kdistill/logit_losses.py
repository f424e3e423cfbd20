"""Logits distillation beyond Hinton KD: DKD and logit-standardised KD (keras.ops only).

Convention as in `kdistill.losses`: `y_true` is the teacher's logits,
`y_pred` the student's, and `call` returns one value per sample. Losses whose
`uses_labels` is True also read the ground-truth labels; `FeatureDistiller`
passes them through `call_with_labels`.

Example:
    >>> import numpy as np
    >>> t = np.array([[3.0, 1.0, 0.0]], "float32"); s = np.array([[1.0, 1.0, 1.0]], "float32")
    >>> loss = DKD(alpha=1.0, beta=8.0, temperature=4.0)
    >>> float(loss.call_with_labels(t, s, np.array([0]))[0]) > 0
    True
"""

from __future__ import annotations

import keras
from keras import ops

from kdistill._loss_utils import EPSILON, check_temperature

__all__ = ["dkd", "standardized_kd", "DKD", "StandardizedKD"]


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


def _standardize(logits):
    mean = ops.mean(logits, axis=-1, keepdims=True)
    std = ops.sqrt(ops.mean(ops.square(logits - mean), axis=-1, keepdims=True) + 1e-7)
    return (logits - mean) / std


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
    teacher = _standardize(ops.cast(teacher_logits, "float32")) / temperature
    student = _standardize(ops.cast(student_logits, "float32")) / temperature
    teacher_log = ops.log_softmax(teacher, axis=-1)
    student_log = ops.log_softmax(student, axis=-1)
    return ops.sum(ops.exp(teacher_log) * (teacher_log - student_log), axis=-1) * temperature**2


@keras.saving.register_keras_serializable(package="kdistill")
class DKD(keras.losses.Loss):
    """Decoupled KD (see `dkd`); reads the labels through `call_with_labels`.

    Args:
        alpha: TCKD weight (1.0).
        beta: NCKD weight (8.0 on CIFAR-100).
        temperature: softening temperature (4.0).

    Example:
        >>> DKD(beta=2.0).get_config()["beta"]
        2.0
    """

    uses_labels = True

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, reduction="sum_over_batch_size", name="dkd"):
        super().__init__(name=name, reduction=reduction)
        check_temperature(temperature)
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)

    def call(self, y_true, y_pred):
        """Without labels, the teacher's top-1 class is the target."""
        return dkd(y_true, y_pred, None, self.alpha, self.beta, self.temperature)

    def call_with_labels(self, y_true, y_pred, labels):
        return dkd(y_true, y_pred, labels, self.alpha, self.beta, self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "beta": self.beta, "temperature": self.temperature})
        return config


@keras.saving.register_keras_serializable(package="kdistill")
class StandardizedKD(keras.losses.Loss):
    """KD on standardised logits (see `standardized_kd`).

    Example:
        >>> import numpy as np
        >>> z = np.array([[1.0, 2.0, 4.0]], "float32")
        >>> abs(float(StandardizedKD()(z, 10 * z))) < 1e-5  # scale-invariant
        True
    """

    def __init__(self, temperature: float = 2.0, reduction="sum_over_batch_size", name="standardized_kd"):
        super().__init__(name=name, reduction=reduction)
        check_temperature(temperature)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        return standardized_kd(y_true, y_pred, self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config
