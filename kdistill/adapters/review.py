"""ReviewKD's attention-based fusion (ABF): student stages reviewed from the deepest up.

Chen et al., "Distilling Knowledge via Knowledge Review", CVPR 2021. Instead of
projecting each student tap on its own, ReviewKD walks the taps from the
deepest to the shallowest: each tap's feature is reduced to `mid_channels`
(1x1 conv + BN), fused with the fused map of the deeper tap through a learned
two-way attention (`x·a₀ + residual·a₁`, with `a = sigmoid(conv1x1([x, residual]))`),
and mapped to the teacher's shape by a 3x3 conv + BN; the fused map goes on to
the next shallower tap. The outputs are compared with the teacher's taps by the
hierarchical context loss (`feature_loss="hcl"`).

`ReviewAdapter` (`FeatureDistiller(..., adapter="review")`) holds one
`AttentionFusion` per tap, in place of the 1x1 projections, and the order it
walks them in.

Example:
    >>> import numpy as np
    >>> deep = AttentionFusion((2, 2, 32), mid_channels=8, fuse=False)
    >>> shallow = AttentionFusion((4, 4, 16), mid_channels=8, fuse=True)
    >>> out, fused = deep(np.zeros((1, 2, 2, 24), "float32"))
    >>> tuple(shallow(np.zeros((1, 4, 4, 12), "float32"), residual=fused)[0].shape)
    (1, 4, 4, 16)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import layers, ops

from kdistill.adapters.base import Adapter, layer_name, register

__all__ = ["ReviewAdapter", "AttentionFusion", "describe"]


@keras.saving.register_keras_serializable(package="kdistill")
class AttentionFusion(layers.Layer):
    """One ABF step of ReviewKD: reduce, fuse with the deeper tap's map, map to the teacher's shape.

    Args:
        target_shape: the teacher feature's shape without batch, `(H, W, C)`.
        mid_channels: channels of the reduced and fused maps (ReviewKD uses 256
            on ImageNet-size networks; 64 suits the small students here).
        fuse: whether a deeper tap's map is fused in (False for the deepest tap).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: the student's `(batch, H, W, C)` map at this tap.
        residual: the fused map returned by the deeper tap (needed when `fuse`).

    Returns:
        `(output, fused)`: the map in the teacher's shape, and the fused
        `mid_channels` map at the student's resolution for the next tap up.
    """

    def __init__(self, target_shape: Sequence[int], mid_channels: int = 64, fuse: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        if len(self.target_shape) != 3:
            raise ValueError(
                f"ReviewKD fuses feature maps: the teacher tap must be (H, W, C), received {target_shape!r}."
            )
        self.mid_channels = int(mid_channels)
        self.fuse = bool(fuse)
        self.reduce = layers.Conv2D(self.mid_channels, 1, use_bias=False, name="reduce")
        self.reduce_bn = layers.BatchNormalization(name="reduce_bn")
        self.attention = layers.Conv2D(2, 1, activation="sigmoid", name="attention") if self.fuse else None
        self.output_conv = layers.Conv2D(self.target_shape[-1], 3, padding="same", use_bias=False, name="output_conv")
        self.output_bn = layers.BatchNormalization(name="output_bn")

    def build(self, inputs_shape, residual_shape=None):
        if len(inputs_shape) != 4:
            raise ValueError(
                f"ReviewKD fuses feature maps: the student tap must be (batch, H, W, C), received {tuple(inputs_shape)}."
            )
        batch, height, width = inputs_shape[:3]
        self.reduce.build(inputs_shape)
        self.reduce_bn.build((batch, height, width, self.mid_channels))
        if self.attention is not None:
            self.attention.build((batch, height, width, 2 * self.mid_channels))
        target_height, target_width, channels = self.target_shape
        self.output_conv.build((batch, target_height, target_width, self.mid_channels))
        self.output_bn.build((batch, target_height, target_width, channels))

    def call(self, inputs, residual=None, training=None):
        fused = self.reduce_bn(self.reduce(inputs), training=training)
        if self.attention is not None:
            if residual is None:
                raise ValueError(
                    f"{self.name} fuses a deeper tap's map: pass residual=<the deeper AttentionFusion's fused output>."
                )
            residual = ops.image.resize(
                ops.cast(residual, fused.dtype), tuple(fused.shape[1:3]), interpolation="nearest"
            )
            weights = self.attention(ops.concatenate([fused, residual], axis=-1))
            fused = fused * weights[..., 0:1] + residual * weights[..., 1:2]
        aligned = fused
        if tuple(fused.shape[1:3]) != self.target_shape[:2]:
            aligned = ops.image.resize(fused, self.target_shape[:2], interpolation="bilinear")
        return self.output_bn(self.output_conv(aligned), training=training), fused

    def compute_output_shape(self, inputs_shape, residual_shape=None):
        return (inputs_shape[0], *self.target_shape), (*inputs_shape[:3], self.mid_channels)

    def get_config(self):
        config = super().get_config()
        config.update({"target_shape": list(self.target_shape), "mid_channels": self.mid_channels, "fuse": self.fuse})
        return config


def describe(student_shape: Sequence, teacher_shape: Sequence, mid_channels: int, fuse: bool) -> str:
    """One line saying how a tap's student map reaches the teacher's shape under review."""
    student = "x".join(str(d) for d in student_shape[1:])
    teacher = "x".join(str(d) for d in teacher_shape[1:])
    fusion = " + attention fusion with the deeper tap" if fuse else ""
    resize = "" if tuple(student_shape[1:3]) == tuple(teacher_shape[1:3]) else "bilinear resize, "
    return (
        f"{student} -> Conv1x1({mid_channels}) + BN{fusion} -> {resize}Conv3x3({teacher_shape[-1]}) + BN -> {teacher}"
    )


@register("review")
@keras.saving.register_keras_serializable(package="kdistill")
class ReviewAdapter(Adapter):
    """ReviewKD's fusion: one `AttentionFusion` per tap, run from the deepest student tap up, each passing its fused map on.

    Args:
        teacher_shapes: `{teacher_layer: teacher feature map shape}` (with the batch axis).
        student_shapes: `{teacher_layer: shape of the student map tapped for it}`.
        student_depth: `{teacher_layer: index of the student layer tapped for it}`; the deepest is fused first.
        review_channels: channels of the reduced and fused maps.
        student_layers: `{teacher_layer: student_layer}`, named in errors.
        **kwargs: base `Layer` arguments.

    Example:
        >>> import numpy as np
        >>> shapes = {"t1": (None, 4, 4, 8), "t2": (None, 2, 2, 16)}
        >>> adapter = ReviewAdapter(shapes, {"t1": (None, 8, 8, 4), "t2": (None, 4, 4, 8)}, {"t1": 3, "t2": 7}, review_channels=4)
        >>> adapter.order  # the deepest student tap first
        ['t2', 't1']
        >>> outputs = adapter({"t1": np.zeros((1, 8, 8, 4), "float32"), "t2": np.zeros((1, 4, 4, 8), "float32")})
        >>> {tap: tuple(value.shape) for tap, value in outputs.items()}
        {'t2': (1, 2, 2, 16), 't1': (1, 4, 4, 8)}
    """

    def __init__(
        self,
        teacher_shapes,
        student_shapes,
        student_depth: Mapping[str, int],
        review_channels: int = 64,
        student_layers=None,
        **kwargs,
    ):
        super().__init__(teacher_shapes, student_shapes, student_layers=student_layers, **kwargs)
        self.student_depth = {str(tap): int(depth) for tap, depth in student_depth.items()}
        self.review_channels = int(review_channels)
        self._build_taps()

    @property
    def order(self) -> list[str]:
        return sorted(self.teacher_shapes, key=lambda tap: self.student_depth[tap], reverse=True)

    def build_tap(self, teacher_layer: str, student_shape: tuple, teacher_shape: tuple) -> layers.Layer:
        if len(teacher_shape) != 4 or len(student_shape) != 4:
            raise ValueError(
                f"adapter='review' fuses feature maps, but the shapes are {tuple(student_shape)} and {tuple(teacher_shape)}."
            )
        fusion = AttentionFusion(
            teacher_shape[1:],
            self.review_channels,
            fuse=teacher_layer != self.order[0],
            name=layer_name("review", teacher_layer),
        )
        fusion.build(student_shape)
        return fusion

    def call(self, features: Mapping, training=None) -> dict:
        result, fused = {}, None
        for teacher_layer in self.order:
            result[teacher_layer], fused = self.tap_layers[teacher_layer](
                features[teacher_layer], residual=fused, training=training
            )
        return result

    def describe(self, teacher_layer: str) -> str:
        return describe(
            self.student_shapes[teacher_layer],
            self.teacher_shapes[teacher_layer],
            self.review_channels,
            fuse=teacher_layer != self.order[0],
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "student_depth": dict(self.student_depth),
            "review_channels": self.review_channels,
        }
