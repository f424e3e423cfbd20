"""The loss protocol every distillation loss follows, and the one place that calls it.

A distillation loss maps `(teacher, student, labels=None)` to one value per
sample: `teacher` is the teacher's output (logits or a tapped feature), `student`
the student's (projected to the teacher's shape), `labels` the batch's labels
when the loss reads them (`uses_labels = True`, as DKD). As in Keras' own
`losses.py`, a loss is a plain function doing the math in `keras.ops` and a small
class wrapping it: `DistillationLoss(fn, **options)` stores the options as
attributes and serialises them, so a new loss class is a constructor and nothing
else. Losses with weights (CRD's heads and memory, a discriminator) are
`keras.layers.Layer`s with the same `call` signature.

Losses that relate several taps (IRG's transformation between stages) set
`reads_all_taps = True`: they are called once per step, not once per tap, with
`teacher` and `student` each a dict `{teacher_layer: feature, ..., "logits":
logits}` holding every tap in the order the taps were given (student features
already projected to the teacher's shapes) and the logits. They still return one
value per sample.

Example:
    >>> import numpy as np
    >>> from keras import ops
    >>> def l1(teacher, student, scale=1.0):
    ...     return scale * ops.mean(ops.abs(teacher - student), axis=-1)
    >>> loss = DistillationLoss(l1, name="l1", scale=2.0)
    >>> loss.scale, loss.get_config()["scale"]
    (2.0, 2.0)
    >>> [float(v) for v in per_sample_loss(loss, np.ones((2, 3), "float32"), np.zeros((2, 3), "float32"))]
    [2.0, 2.0]
"""

from __future__ import annotations

from typing import Any, Callable

import keras

__all__ = ["DistillationLoss", "per_sample_loss", "is_stateful", "reads_all_taps"]


@keras.saving.register_keras_serializable(package="kdistill")
class DistillationLoss(keras.losses.Loss):
    """A stateless distillation loss: a function `fn(teacher, student, [labels,] **options)` and its options.

    Calling the object (`loss(teacher, student)`) reduces over the batch as any
    Keras loss; `call(teacher, student, labels=None)` returns the per-sample
    values the distiller weights and averages.

    Args:
        fn: the per-sample function. If the class sets `uses_labels = True`, it
            is called as `fn(teacher, student, labels, **options)`.
        reduction: Keras reduction used by `__call__`.
        name: loss name.
        **options: the function's keyword arguments; each becomes an attribute
            and a `get_config` entry.
    """

    #: True when the loss reads the ground-truth labels (they may be None: then it picks a stand-in, e.g. the teacher's
    #: top class)
    uses_labels = False
    #: how the loss reads a segmenter's logit maps (`kdistill.losses.dense`): "pixels" (per pixel), "map" (per sample),
    #: None (it does not)
    dense_logits = None
    #: True when the loss is called once with every tap (dicts keyed by teacher layer, plus "logits") instead of once
    #: per tap
    reads_all_taps = False

    def __init__(self, fn: Callable, reduction: str = "sum_over_batch_size", name: str | None = None, **options: Any):
        super().__init__(name=name or getattr(fn, "__name__", "distillation_loss"), reduction=reduction)
        self.fn = fn
        self._option_names = list(options)
        for key, value in options.items():
            setattr(self, key, value)

    def options(self) -> dict[str, Any]:
        """The function's keyword arguments, as currently set."""
        return {key: getattr(self, key) for key in self._option_names}

    def call(self, y_true, y_pred, labels=None):
        """Per-sample loss: `y_true` is the teacher's output, `y_pred` the student's."""
        if self.uses_labels:
            return self.fn(y_true, y_pred, labels, **self.options())
        return self.fn(y_true, y_pred, **self.options())

    def get_config(self) -> dict:
        config = super().get_config()
        for key, value in self.options().items():
            config[key] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config: dict):
        if cls is DistillationLoss:
            raise TypeError(
                "A bare DistillationLoss(fn) cannot be rebuilt from its config; subclass it (see kdistill.losses.features)."
            )
        return cls(**config)


def is_stateful(loss: Any) -> bool:
    """True for losses with weights (layers), which each tap gets its own copy of and which must be built."""
    return isinstance(loss, keras.layers.Layer)


def reads_all_taps(loss: Any) -> bool:
    """True for losses called once per step with every tap and the logits (see the module docstring)."""
    return bool(getattr(loss, "reads_all_taps", False))


def per_sample_loss(loss: Any, teacher, student, labels=None):
    """Per-sample values of any distillation loss: the one dispatch point of the protocol.

    Args:
        loss: a `DistillationLoss`, a `keras.losses.Loss` with
            `call(y_true, y_pred)`, a loss layer with `call(teacher, student,
            labels=None)`, or a plain `fn(teacher, student)`.
        teacher, student: the outputs compared.
        labels: the batch's labels, passed to losses that read them.
    """
    if isinstance(loss, DistillationLoss):
        return loss.call(teacher, student, labels=labels)
    if is_stateful(loss):  # loss layers follow the protocol: call(teacher, student, labels=None)
        return loss(teacher, student, labels=labels)
    if isinstance(loss, keras.losses.Loss):  # any Keras loss: call(y_true, y_pred)
        return loss.call(teacher, student)
    return loss(teacher, student)
