"""One factory for every adapter: build them for a set of taps, apply them, describe them.

`FeatureDistiller` calls these three functions whatever the adapter, so it has
no adapter-specific branch: `"projection"` maps each tap on its own,
`"review"` fuses the student's taps from the deepest up (ReviewKD).

Example:
    >>> import numpy as np
    >>> layers, order = build("projection", {"t1": (None, 4, 4, 8)}, {"t1": (None, 8, 8, 4)}, {"t1": 0})
    >>> projected = apply("projection", layers, order, {"t1": np.zeros((2, 8, 8, 4), "float32")})
    >>> tuple(projected["t1"].shape)
    (2, 4, 4, 8)
"""

from __future__ import annotations

from typing import Mapping, Sequence

from kdistill.adapters import projection, review

__all__ = ["ADAPTERS", "build", "apply", "describe", "layer_name", "summary_rows"]

#: adapter names FeatureDistiller accepts
ADAPTERS = ("projection", "review")


def layer_name(prefix: str, teacher_layer: str) -> str:
    """A Keras layer name for a tap (`"/"`, which addresses a layer inside a nested teacher, is not allowed in names)."""
    return f"{prefix}_{teacher_layer.replace('/', '__')}"


def check(adapter: str) -> str:
    if adapter not in ADAPTERS:
        raise ValueError(f"Unknown adapter {adapter!r}; use one of {', '.join(ADAPTERS)}.")
    return adapter


def build(adapter: str, teacher_shapes: Mapping[str, Sequence], student_shapes: Mapping[str, Sequence],
          student_depth: Mapping[str, int], alignment: str = "auto", review_channels: int = 64,
          student_layers: Mapping[str, str] | None = None) -> tuple[dict, list[str]]:
    """Builds one adapter layer per tap.

    Args:
        adapter: `"projection"` or `"review"`.
        teacher_shapes: `{teacher_layer: teacher feature shape}` (with the batch axis).
        student_shapes: `{teacher_layer: shape of the student feature tapped for it}`.
        student_depth: `{teacher_layer: index of the student layer}`, which orders review's fusion.
        alignment: spatial alignment of projections (see `kdistill.adapters.projection`).
        review_channels: channels of review's fused maps.
        student_layers: `{teacher_layer: student_layer}`, named in errors.

    Returns:
        `({teacher_layer: built layer}, order)`: the order in which `apply` runs them.

    Raises:
        ValueError: naming the tap, when no adapter can map its shapes.
    """
    check(adapter)
    order = sorted(teacher_shapes, key=lambda t: student_depth[t], reverse=True) if adapter == "review" else list(teacher_shapes)
    layers = {}
    for teacher_layer in order:
        teacher_shape, student_shape = teacher_shapes[teacher_layer], student_shapes[teacher_layer]
        try:
            if adapter == "review":
                if len(teacher_shape) != 4 or len(student_shape) != 4:
                    raise ValueError(f"review=True fuses feature maps, but the shapes are {tuple(student_shape)} and {tuple(teacher_shape)}.")
                fusion = review.AttentionFusion(teacher_shape[1:], review_channels, fuse=teacher_layer != order[0],
                                                name=layer_name("review", teacher_layer))
                fusion.build(student_shape)
                layers[teacher_layer] = fusion
            else:
                layers[teacher_layer] = projection.build(student_shape, teacher_shape, name=layer_name("projection", teacher_layer),
                                                         alignment=alignment)
        except ValueError as error:
            student = f" <- {student_layers[teacher_layer]!r}" if student_layers else ""
            raise ValueError(f"Tap {teacher_layer!r}{student}: {error}") from None
    return {t: layers[t] for t in teacher_shapes}, order


def apply(adapter: str, layers: Mapping, order: Sequence[str], student_features: Mapping, training=None) -> dict:
    """`{teacher_layer: student feature at the teacher's shape}` from `{teacher_layer: student feature}`."""
    result, fused = {}, None
    for teacher_layer in order:
        if adapter == "review":
            result[teacher_layer], fused = layers[teacher_layer](student_features[teacher_layer], residual=fused, training=training)
        else:
            result[teacher_layer] = layers[teacher_layer](student_features[teacher_layer], training=training)
    return result


def describe(adapter: str, teacher_layer: str, order: Sequence[str], student_shape: Sequence, teacher_shape: Sequence,
             review_channels: int = 64) -> str:
    """One line saying how the student feature of a tap reaches the teacher's shape."""
    if adapter == "review":
        return review.describe(student_shape, teacher_shape, review_channels, fuse=teacher_layer != order[0])
    return projection.describe(student_shape, teacher_shape)


def summary_rows(adapter: str, taps: Mapping[str, str], order: Sequence[str], teacher_shapes: Mapping, student_shapes: Mapping,
                 review_channels: int, tap_weights: Mapping[str, float]) -> list[dict]:
    """One row per tap (`FeatureDistiller.projection_summary`): teacher layer, student layer, shapes, the adapter's mapping, weight."""
    return [
        {
            "teacher_layer": teacher_layer,
            "student_layer": student_layer,
            "teacher_shape": tuple(teacher_shapes[teacher_layer][1:]),
            "student_shape": tuple(student_shapes[teacher_layer][1:]),
            "projection": describe(adapter, teacher_layer, order, student_shapes[teacher_layer], teacher_shapes[teacher_layer], review_channels),
            "weight": tap_weights[teacher_layer],
        }
        for teacher_layer, student_layer in taps.items()
    ]
