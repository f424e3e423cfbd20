"""Registry of student builders: MobileNetV2/V3 and slim CIFAR-style ResNets.

Every builder takes `num_classes` and `input_shape` and returns a functional
model that takes raw pixels in [0, 255] and outputs logits, with stage
outputs listed in `kdistill.taps.STAGES`. Register your own with `register`.

Example:
    >>> import kdistill
    >>> student = kdistill.students.get("mobilenet_v2", num_classes=10, input_shape=(32, 32, 3), width=0.5)
    >>> student.output.shape
    (None, 10)
"""

from __future__ import annotations

import difflib
from typing import Callable

import keras
from keras import layers

from kdistill.models import saving

__all__ = ["get", "register", "available", "load"]

_REGISTRY: dict[str, Callable[..., keras.Model]] = {}


def register(name: str) -> Callable:
    """Decorator adding a builder `fn(num_classes, input_shape, **kwargs) -> keras.Model`.

    Example:
        >>> import keras, kdistill
        >>> @kdistill.students.register("tiny_cnn")
        ... def tiny_cnn(num_classes, input_shape):
        ...     inputs = keras.Input(input_shape)
        ...     x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
        ...     x = keras.layers.GlobalAveragePooling2D()(x)
        ...     return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="tiny_cnn")
        >>> "tiny_cnn" in kdistill.students.available()
        True
    """

    def decorator(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        _REGISTRY[name] = builder
        return builder

    return decorator


def available() -> list[str]:
    """Registered student names."""
    return sorted(_REGISTRY)


def get(name: str, num_classes: int, input_shape: tuple[int, int, int] = (32, 32, 3), batch_norm_momentum: float | None = 0.9, **kwargs) -> keras.Model:
    """Builds the registered student `name`.

    Args:
        name: see `available()`: `mobilenet_v2` (kwarg `width`, default 0.5),
            `mobilenet_v3_small` (`width`, default 1.0), `resnet8x4`, `resnet20`.
        num_classes: number of classes.
        input_shape: `(height, width, channels)`, at least 32x32 for MobileNets.
        batch_norm_momentum: momentum of every BatchNormalization layer. 0.9
            (default) lets moving statistics settle within a short schedule;
            Keras' MobileNets use 0.999. None keeps the builder's values.
        **kwargs: builder options.

    Raises:
        ValueError: for an unknown name, listing the registered ones.
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, available(), n=2)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown student {name!r}.{hint} Registered: {', '.join(available())}; or pass any functional Keras model.")
    model = _REGISTRY[name](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
    return saving.set_batch_norm_momentum(model, batch_norm_momentum)


def load(path: str) -> keras.Model:
    """Loads a saved student (`.keras` or `.h5`) with `safe_mode=True`."""
    return saving.load_model(path, role="student")


def _to_minus_one_one(inputs):
    """[0, 255] -> [-1, 1] with a built-in Keras layer, so a saved student loads without kdistill installed."""
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocessing")(inputs)


def _rename(model: keras.Model, name: str) -> keras.Model:
    return keras.Model(model.inputs, model.outputs[0], name=name)


@register("mobilenet_v2")
def mobilenet_v2(num_classes: int, input_shape=(32, 32, 3), width: float = 0.5) -> keras.Model:
    """MobileNetV2 (Sandler et al., 2018) with width multiplier `width`, random init."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = _to_minus_one_one(inputs)
    model = keras.applications.MobileNetV2(
        input_tensor=x, alpha=width, weights=None, classes=num_classes, classifier_activation=None
    )
    return _rename(model, "mobilenet_v2")


@register("mobilenet_v3_small")
def mobilenet_v3_small(num_classes: int, input_shape=(32, 32, 3), width: float = 1.0, minimalistic: bool = False) -> keras.Model:
    """MobileNetV3-Small (Howard et al., 2019), random init; its own Rescaling maps [0, 255] to [-1, 1]."""
    inputs = keras.Input(shape=input_shape, name="image")
    model = keras.applications.MobileNetV3Small(
        input_tensor=inputs,
        alpha=width,
        minimalistic=minimalistic,
        weights=None,
        classes=num_classes,
        classifier_activation=None,
        include_preprocessing=True,
    )
    return _rename(model, "mobilenet_v3_small")


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_shortcut_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return y


def _cifar_resnet(num_classes: int, input_shape, filters: list[int], blocks: int, name: str) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    x = _to_minus_one_one(inputs)
    x = layers.Conv2D(filters[0], 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, stage_filters in enumerate(filters[1:], start=1):
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(x, stage_filters, stride, name=f"stage{stage}_block{block + 1}")
            last = block == blocks - 1
            x = layers.ReLU(name=f"stage{stage}_out" if last else f"stage{stage}_block{block + 1}_out")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name)


@register("resnet8x4")
def resnet8x4(num_classes: int, input_shape=(32, 32, 3)) -> keras.Model:
    """CIFAR ResNet-8x4 (as in CRD, Tian et al. 2020): one basic block per stage, 64/128/256 channels."""
    return _cifar_resnet(num_classes, input_shape, [32, 64, 128, 256], blocks=1, name="resnet8x4")


@register("resnet20")
def resnet20(num_classes: int, input_shape=(32, 32, 3)) -> keras.Model:
    """CIFAR ResNet-20 (He et al., 2016): three blocks per stage, 16/32/64 channels."""
    return _cifar_resnet(num_classes, input_shape, [16, 16, 32, 64], blocks=3, name="resnet20")
