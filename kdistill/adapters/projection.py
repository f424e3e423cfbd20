"""Learned adapters that map a student feature to its teacher's shape.

* Feature maps `(batch, H, W, C)`: spatial alignment (average pooling when the
  student map is an integer multiple larger, bilinear resize otherwise), then a
  1x1 convolution and BatchNormalization (FitNets' regressor).
* Vectors `(batch, C)`: a Dense layer.
* A student map for a teacher vector: global average pooling, then Dense.

`ProjectionAdapter` (`adapter="projection"`, the default) holds one per tap.

Example:
    >>> import numpy as np
    >>> projection = build((None, 8, 8, 32), (None, 4, 4, 64), name="proj")
    >>> tuple(projection(np.zeros((2, 8, 8, 32), "float32")).shape)
    (2, 4, 4, 64)
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers, ops

from kdistill.adapters.base import Adapter, layer_name, register

__all__ = ["ProjectionAdapter", "MapProjection", "VectorProjection", "build", "describe"]


@keras.saving.register_keras_serializable(package="kdistill")
class MapProjection(layers.Layer):
    """Spatial alignment + 1x1 Conv + BatchNorm from a student map to a teacher map.

    Args:
        target_shape: teacher feature shape without batch, `(H, W, C)`.
        alignment: `"auto"` (pool when the student map is an integer multiple
            larger, resize otherwise), `"resize"` or `"pool"`.
        **kwargs: base `Layer` arguments.

    Example:
        >>> import numpy as np
        >>> layer = MapProjection((2, 2, 16))
        >>> tuple(layer(np.zeros((1, 4, 4, 8), "float32")).shape)
        (1, 2, 2, 16)
    """

    def __init__(self, target_shape: Sequence[int], alignment: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if alignment not in ("auto", "resize", "pool"):
            raise ValueError(f"alignment must be 'auto', 'resize' or 'pool', received {alignment!r}.")
        self.target_shape = tuple(int(d) for d in target_shape)
        if len(self.target_shape) != 3:
            raise ValueError(f"MapProjection needs a (H, W, C) target shape, received {target_shape!r}.")
        self.alignment = alignment
        self.conv = layers.Conv2D(self.target_shape[-1], 1, use_bias=False, name="conv1x1")
        self.batch_norm = layers.BatchNormalization(name="bn")
        self._pool_size = None

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        target_height, target_width = self.target_shape[:2]
        if (height, width) != (target_height, target_width):
            divisible = height % target_height == 0 and width % target_width == 0 and height >= target_height
            if self.alignment == "pool" and not divisible:
                raise ValueError(
                    f"Cannot pool a {height}x{width} student map to the teacher's "
                    f"{target_height}x{target_width}: sizes are not integer multiples. "
                    "Use alignment='resize' or tap a student layer of a matching stage."
                )
            if self.alignment in ("auto", "pool") and divisible:
                self._pool_size = (height // target_height, width // target_width)
        self.conv.build((input_shape[0], target_height, target_width, input_shape[-1]))
        self.batch_norm.build((input_shape[0], target_height, target_width, self.target_shape[-1]))

    def call(self, inputs, training=None):
        target_height, target_width = self.target_shape[:2]
        if self._pool_size is not None:
            inputs = ops.average_pool(inputs, self._pool_size, strides=self._pool_size, padding="valid")
        elif tuple(inputs.shape[1:3]) != (target_height, target_width):
            inputs = ops.image.resize(inputs, (target_height, target_width), interpolation="bilinear")
        return self.batch_norm(self.conv(inputs), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.target_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"target_shape": list(self.target_shape), "alignment": self.alignment})
        return config


@keras.saving.register_keras_serializable(package="kdistill")
class VectorProjection(layers.Layer):
    """Dense adapter to a teacher vector; a student map is globally pooled first.

    Args:
        units: size of the teacher vector.
        **kwargs: base `Layer` arguments.

    Example:
        >>> import numpy as np
        >>> tuple(VectorProjection(10)(np.zeros((3, 4, 4, 8), "float32")).shape)
        (3, 10)
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dense = layers.Dense(self.units, name="dense")

    def build(self, input_shape):
        self.dense.build((input_shape[0], input_shape[-1]))

    def call(self, inputs):
        if len(inputs.shape) == 4:
            inputs = ops.mean(inputs, axis=(1, 2))
        return self.dense(inputs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


def describe(student_shape: Sequence, teacher_shape: Sequence) -> str:
    """One line saying how a student feature is mapped to the teacher's shape."""
    student = "x".join(str(d) for d in student_shape[1:])
    teacher = "x".join(str(d) for d in teacher_shape[1:])
    if len(teacher_shape) == 2:
        pooled = "global average pool, " if len(student_shape) == 4 else ""
        return f"{student} -> {pooled}Dense({teacher_shape[-1]}) -> {teacher}"
    if tuple(student_shape[1:3]) == tuple(teacher_shape[1:3]):
        align = ""
    elif (
        student_shape[1] % teacher_shape[1] == 0
        and student_shape[2] % teacher_shape[2] == 0
        and student_shape[1] > teacher_shape[1]
    ):
        align = f"average pool /{student_shape[1] // teacher_shape[1]}, "
    else:
        align = "bilinear resize, "
    return f"{student} -> {align}Conv1x1({teacher_shape[-1]}) + BN -> {teacher}"


def build(student_shape: Sequence, teacher_shape: Sequence, name: str, alignment: str = "auto") -> layers.Layer:
    """Builds the projection from a student feature shape to a teacher feature shape.

    Args:
        student_shape: student feature shape with batch axis, e.g. `(None, 8, 8, 96)`.
        teacher_shape: teacher feature shape with batch axis, e.g. `(None, 4, 4, 512)`.
        name: layer name.
        alignment: spatial alignment for maps (see `MapProjection`).

    Returns:
        A built `MapProjection` or `VectorProjection`.

    Raises:
        ValueError: when no projection can map the shapes (a student vector
            cannot be turned into a teacher feature map).
    """
    student_rank, teacher_rank = len(student_shape), len(teacher_shape)
    if teacher_rank == 4 and student_rank == 4:
        projection = MapProjection(teacher_shape[1:], alignment=alignment, name=name)
    elif teacher_rank == 2 and student_rank in (2, 4):
        projection = VectorProjection(teacher_shape[-1], name=name)
    else:
        raise ValueError(
            f"Cannot project a student feature of shape {tuple(student_shape)} to the teacher's "
            f"{tuple(teacher_shape)}. Projections map a feature map (batch, H, W, C) to a map "
            "(1x1 Conv + BN, with pooling or resizing), or a map or vector to a vector (Dense). "
            "Tap a student feature map for a teacher feature map."
        )
    projection.build(tuple(student_shape))
    return projection


@register("projection")
@keras.saving.register_keras_serializable(package="kdistill")
class ProjectionAdapter(Adapter):
    """One learned projection per tap, each on its own (FitNets' regressor): see `build`.

    Args:
        teacher_shapes: `{teacher_layer: teacher feature shape}` (with the batch axis).
        student_shapes: `{teacher_layer: shape of the student feature tapped for it}`.
        alignment: spatial alignment of feature maps: `"auto"`, `"resize"` or `"pool"` (see `MapProjection`).
        student_layers: `{teacher_layer: student_layer}`, named in errors.
        **kwargs: base `Layer` arguments.

    Example:
        >>> import numpy as np
        >>> adapter = ProjectionAdapter({"t1": (None, 10)}, {"t1": (None, 2, 2, 8)})
        >>> adapter.describe("t1")
        '2x2x8 -> global average pool, Dense(10) -> 10'
        >>> ProjectionAdapter.from_config(adapter.get_config()).order
        ['t1']
    """

    def __init__(self, teacher_shapes, student_shapes, alignment: str = "auto", student_layers=None, **kwargs):
        super().__init__(teacher_shapes, student_shapes, student_layers=student_layers, **kwargs)
        self.alignment = alignment
        self._build_taps()

    def build_tap(self, teacher_layer: str, student_shape: tuple, teacher_shape: tuple) -> layers.Layer:
        return build(
            student_shape, teacher_shape, name=layer_name("projection", teacher_layer), alignment=self.alignment
        )

    def describe(self, teacher_layer: str) -> str:
        return describe(self.student_shapes[teacher_layer], self.teacher_shapes[teacher_layer])

    def get_config(self) -> dict:
        return {**super().get_config(), "alignment": self.alignment}
