"""Several teachers as one: a functional model whose logits are the members' averaged probabilities.

`ensemble([teacher_a, teacher_b])` builds a functional `keras.Model` that resizes
its input to each member's own input size, runs every member once, and returns
`T * log(sum_i w_i * softmax(z_i / T))`: logits whose softmax at temperature `T`
is exactly the weighted average of the members' softened probabilities. With `T`
equal to the distiller's temperature, KD's soft targets are those averaged
probabilities. The members stay nested layers of the ensemble, so their own
layers are addressed as taps by `"<member name>/<layer name>"` (see
`kdistill.models.taps.feature_model`), and the ensemble saves, loads, caches and
evaluates like any teacher.

Example:
    >>> import numpy as np, kdistill
    >>> a = kdistill.students.get("resnet8x4", num_classes=10, input_shape=(32, 32, 3))
    >>> b = kdistill.students.get("resnet20", num_classes=10, input_shape=(24, 24, 3))
    >>> a.name, b.name = "teacher_a", "teacher_b"  # taps address them as "teacher_a/<layer>"
    >>> teacher = ensemble([a, b], weights=[2.0, 1.0], temperature=4.0)
    >>> teacher.input_shape, teacher.output_shape
    ((None, 32, 32, 3), (None, 10))
    >>> members(teacher) == [a, b]
    True
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from kdistill.errors import check_number
from kdistill.models.checks import check_logits_pair

__all__ = ["EnsembleLogits", "ensemble", "members"]


@keras.saving.register_keras_serializable(package="kdistill")
class EnsembleLogits(keras.layers.Layer):
    """Combines members' logits into the logits of their weighted average probabilities at a temperature.

    Args:
        weights: one non-negative weight per member (normalised to sum to 1);
            None weighs them equally.
        temperature: the temperature `T` the probabilities are averaged at; the
            output `T * log(sum_i w_i softmax(z_i / T))` has, at temperature `T`,
            exactly the averaged probabilities as its softmax.
    """

    def __init__(self, weights: Sequence[float] | None = None, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.member_weights = None if weights is None else [float(w) for w in weights]
        self.temperature = float(check_number("The ensemble's temperature", temperature, positive=True))

    def call(self, member_logits):
        count = len(member_logits)
        weights = self.member_weights or [1.0] * count
        if len(weights) != count:
            raise ValueError(f"The ensemble has {count} members but {len(weights)} weights were given: {weights}.")
        total = sum(weights)
        # one weight per member, broadcast over the batch and every other axis (classes; positions of segmenters' logit
        # maps)
        log_weights = ops.reshape(
            ops.log(ops.convert_to_tensor([w / total for w in weights], "float32")),
            (count,) + (1,) * len(member_logits[0].shape),
        )
        log_probabilities = ops.stack(
            [ops.log_softmax(ops.cast(z, "float32") / self.temperature, axis=-1) for z in member_logits]
        )
        return self.temperature * ops.logsumexp(log_probabilities + log_weights, axis=0)

    def compute_output_shape(self, member_shapes):
        return member_shapes[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "weights": self.member_weights, "temperature": self.temperature}


def _check_members(teachers: Sequence[keras.Model], weights) -> list[keras.Model]:
    teachers = list(teachers)
    if len(teachers) < 2 or not all(isinstance(t, keras.Model) for t in teachers):
        raise ValueError(
            f"An ensemble needs two or more Keras models, received {[type(t).__name__ for t in teachers]}."
        )
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ValueError(
            f"The teachers' names must differ (taps address them as '<name>/<layer>'), received {names}. "
            "Give each a name when it is built or loaded, e.g. kdistill.teachers.load(path, name='teacher_b')."
        )
    for teacher in teachers:
        check_logits_pair(teacher, teacher)
    classes = {t.name: t.outputs[0].shape[-1] for t in teachers}
    if len(set(classes.values())) != 1:
        raise ValueError(f"The teachers must predict the same classes; their logits: {classes}.")
    if weights is not None and (
        len(weights) != len(teachers) or any(not w >= 0 for w in weights) or not sum(weights) > 0
    ):
        raise ValueError(
            f"weights needs one non-negative weight per teacher ({len(teachers)}), not all zero; received {list(weights)}."
        )
    return teachers


def ensemble(
    teachers: Sequence[keras.Model],
    weights: Sequence[float] | None = None,
    temperature: float = 1.0,
    input_shape: Sequence[int] | None = None,
    name: str = "ensemble",
) -> keras.Model:
    """One teacher made of several: each member sees the input at its own size; the logits average probabilities.

    Args:
        teachers: two or more functional models returning logits of the same
            classes, with distinct names. They may differ in architecture and
            input size.
        weights: one weight per teacher (normalised), or None for equal weights.
        temperature: the temperature the members' probabilities are averaged at
            (`FeatureDistiller` uses its own temperature when given a list).
        input_shape: the ensemble's input shape; by default the largest member
            input. Each member gets the images resized (bilinear) to its own size.
        name: the model's name.

    Returns:
        A functional `keras.Model` from images to ensemble logits.

    Raises:
        ValueError: for fewer than two models, repeated names, different class
            counts or bad weights.
    """
    teachers = _check_members(teachers, weights)
    if input_shape is None:
        input_shape = max((tuple(t.input_shape[1:]) for t in teachers), key=lambda s: (s[0] or 0) * (s[1] or 0))
    inputs = keras.Input(tuple(input_shape), name="image")
    member_logits = []
    for teacher in teachers:
        height, width = teacher.input_shape[1:3]
        x = inputs
        if height is not None and (height, width) != tuple(input_shape[:2]):
            x = keras.layers.Resizing(height, width, interpolation="bilinear", name=f"resize_for_{teacher.name}")(x)
        logits = teacher(x)
        # a model built with outputs=[...]
        member_logits.append(logits[0] if isinstance(logits, (list, tuple)) else logits)
    outputs = EnsembleLogits(weights, temperature, name="ensemble_logits")(member_logits)
    model = keras.Model(inputs, outputs, name=name)
    model.trainable = False
    return model


def members(model: keras.Model) -> list[keras.Model]:
    """The member teachers of an ensemble built by `ensemble` (an empty list for any other model)."""
    if not any(isinstance(layer, EnsembleLogits) for layer in getattr(model, "layers", [])):
        return []
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]
