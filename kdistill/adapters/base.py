"""What every adapter is, and the registry that names them.

An adapter is a Keras layer that maps the student's tapped features to the
teacher's shapes: called with `{teacher_layer: student feature}`, it returns the
same keys with each feature at its teacher tap's shape. It is built from the
shapes of both sides and owns one layer per tap (`tap_layers`) and whatever else
it needs (the order ReviewKD walks the taps in). A new adapter subclasses
`Adapter`, implements `build_tap` and `describe` (and `call` when its taps talk
to each other), calls `_build_taps()` at the end of its `__init__`, and registers a name with `@register("name")`; then
`FeatureDistiller(adapter="name")` and `--adapter name` use it.

Example:
    >>> import numpy as np
    >>> from kdistill import adapters
    >>> adapter = adapters.get("projection", {"t1": (None, 4, 4, 8)}, {"t1": (None, 8, 8, 4)})
    >>> tuple(adapter({"t1": np.zeros((2, 8, 8, 4), "float32")})["t1"].shape)
    (2, 4, 4, 8)
    >>> adapters.available()
    ['projection', 'review']
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Sequence

import keras

from kdistill.errors import did_you_mean

__all__ = ["Adapter", "register", "get", "available", "check", "layer_name"]

# adapter name -> its class
_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: `FeatureDistiller(adapter=name)` builds this `Adapter` subclass."""

    def decorate(cls: type) -> type:
        _REGISTRY[name] = cls
        return cls

    return decorate


def available() -> list[str]:
    """The registered adapter names, sorted."""
    return sorted(_REGISTRY)


def check(name: str) -> str:
    """`name` when an adapter is registered under it; otherwise a ValueError listing the known ones."""
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown adapter {name!r}.{did_you_mean(str(name), available())} Use one of {', '.join(available())}."
        )
    return name


def get(
    name: str, teacher_shapes: Mapping[str, Sequence], student_shapes: Mapping[str, Sequence], **options: Any
) -> "Adapter":
    """Builds the adapter registered as `name` for these taps.

    Args:
        name: a registered name (see `available()`): `"projection"` or `"review"` as shipped.
        teacher_shapes: `{teacher_layer: teacher feature shape}` (with the batch axis).
        student_shapes: `{teacher_layer: shape of the student feature tapped for it}`.
        **options: the distiller's adapter options (`alignment`, `review_channels`, `student_depth`, `student_layers`);
            options an adapter does not take are ignored, as `kdistill.losses.get` ignores a temperature.

    Raises:
        ValueError: for an unknown name (listing the known ones), or a tap no adapter can map (naming it).
    """
    cls = _REGISTRY[check(name)]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(teacher_shapes, student_shapes, **{key: value for key, value in options.items() if key in accepted})


def layer_name(prefix: str, teacher_layer: str) -> str:
    """A Keras layer name for a tap (`"/"`, which addresses a layer inside a nested teacher, is not allowed in names)."""
    return f"{prefix}_{teacher_layer.replace('/', '__')}"


def _shapes(shapes: Mapping[str, Sequence]) -> dict[str, tuple]:
    return {str(tap): tuple(None if d is None else int(d) for d in shape) for tap, shape in shapes.items()}


class Adapter(keras.layers.Layer):
    """Base class: one layer per tap, built from the student's and the teacher's feature shapes.

    Args:
        teacher_shapes: `{teacher_layer: teacher feature shape}` (with the batch axis).
        student_shapes: `{teacher_layer: shape of the student feature tapped for it}`.
        student_layers: `{teacher_layer: student_layer}`, named in errors.
        **kwargs: base `Layer` arguments.
    """

    def __init__(
        self,
        teacher_shapes: Mapping[str, Sequence],
        student_shapes: Mapping[str, Sequence],
        student_layers: Mapping[str, str] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.teacher_shapes, self.student_shapes = _shapes(teacher_shapes), _shapes(student_shapes)
        self.student_layers = {str(t): str(s) for t, s in (student_layers or {}).items()}

    def _build_taps(self) -> None:
        """Builds `tap_layers`, one per tap; each subclass calls it at the end of its `__init__`, once its own options are set."""
        layers = {}
        for teacher_layer in self.order:  # built in the order they run, which is the order their weights are drawn in
            try:
                layers[teacher_layer] = self.build_tap(
                    teacher_layer, self.student_shapes[teacher_layer], self.teacher_shapes[teacher_layer]
                )
            except ValueError as error:
                student = f" <- {self.student_layers[teacher_layer]!r}" if teacher_layer in self.student_layers else ""
                raise ValueError(f"Tap {teacher_layer!r}{student}: {error}") from None
        self.tap_layers = {t: layers[t] for t in self.teacher_shapes}
        self.built = True

    @property
    def order(self) -> list[str]:
        """The teacher layers in the order `call` maps them: the taps' order, unless the adapter walks them otherwise."""
        return list(self.teacher_shapes)

    def build_tap(self, teacher_layer: str, student_shape: tuple, teacher_shape: tuple) -> keras.layers.Layer:
        """The built layer that maps this tap's student feature to the teacher's shape."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_tap.")

    def describe(self, teacher_layer: str) -> str:
        """One line saying how the student feature of a tap reaches the teacher's shape."""
        raise NotImplementedError(f"{type(self).__name__} must implement describe.")

    def call(self, features: Mapping, training=None) -> dict:
        return {
            teacher_layer: self.tap_layers[teacher_layer](features[teacher_layer], training=training)
            for teacher_layer in self.order
        }

    def get_config(self) -> dict:
        shapes = {
            key: {tap: list(shape) for tap, shape in getattr(self, key).items()}
            for key in ("teacher_shapes", "student_shapes")
        }
        return {**super().get_config(), **shapes, "student_layers": dict(self.student_layers)}
