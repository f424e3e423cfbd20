"""Registry of student builders: MobileNetV2/V3 and slim CIFAR-style ResNets.

Every builder takes `num_classes` and `input_shape` and returns a functional
model named after it that takes raw pixels in [0, 255] and outputs logits; its
stage outputs are declared beside it (`register(name, stages=...)`), so that
`kdistill.taps.preset` pairs it with a teacher. Register your own with `register`.

Example:
    >>> import kdistill
    >>> student = kdistill.students.get("mobilenet_v2", num_classes=10, input_shape=(32, 32, 3), width=0.5)
    >>> student.output.shape
    (None, 10)
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import keras

from kdistill.errors import UserError, did_you_mean, shown
from kdistill.models import checks, cifar_resnets, graph, hub, saving, stages as stage_registry

__all__ = ["imagenet_notop_file", "get", "register", "available", "load"]

_REGISTRY: dict[str, Callable[..., keras.Model]] = {}


def register(
    name: str, builder: Callable[..., keras.Model] | None = None, stages: Sequence[tuple[str, int]] | None = None
) -> Callable:
    """Adds a builder `fn(num_classes, input_shape, **kwargs) -> keras.Model`; a decorator when `builder` is left out.

    `stages` declares the builder's stage outputs `[(layer name, total stride), ...]`
    (as timm's `feature_info`), so that `kdistill.taps.preset` pairs it with a
    teacher. The model the builder returns carries `name` as its name: that is
    how a built (or saved and loaded) model finds its stages.

    Example:
        >>> import keras, kdistill
        >>> @kdistill.students.register("tiny_cnn", stages=[("conv", 1)])
        ... def tiny_cnn(num_classes, input_shape):
        ...     inputs = keras.Input(input_shape)
        ...     x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
        ...     x = keras.layers.GlobalAveragePooling2D()(x)
        ...     return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="tiny_cnn")
        >>> "tiny_cnn" in kdistill.students.available()
        True
    """

    return stage_registry.registering(_REGISTRY, name, builder, stages)


def available() -> list[str]:
    """Registered student names."""
    return sorted(_REGISTRY)


def imagenet_notop_file(name: str, input_shape, width: float, minimalistic: bool = False) -> str:
    """The file name Keras caches a MobileNet's ImageNet 'notop' weights under (in `$KERAS_HOME/models`)."""
    if name == "mobilenet_v2":
        rows = (
            input_shape[0] if input_shape[0] == input_shape[1] and input_shape[0] in (96, 128, 160, 192, 224) else 224
        )
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(width)}_{rows}_no_top.h5"
    if name == "mobilenet_v3_small":
        return f"weights_mobilenet_v3_small{'_minimalistic' if minimalistic else ''}_224_{width}_float_no_top_v2.h5"
    raise ValueError(
        f"Keras has no ImageNet weights for the student {name!r}; it has them for {', '.join(_IMAGENET_STUDENTS)}. "
        "Pass weights=None or the path of weights you trained."
    )


def _imagenet_weights(name: str, input_shape, width: float, minimalistic: bool = False) -> str:
    """The cached ImageNet 'notop' file of a MobileNet, or 'imagenet' (download) when online; fails fast offline."""
    file_name = imagenet_notop_file(name, input_shape, width, minimalistic)
    cached = saving.keras_cache_path(file_name)
    if os.path.exists(cached):
        return cached
    if saving.offline():
        raise ValueError(
            f"ImageNet weights for {name} (width {width}) are not in the Keras cache and KDISTILL_OFFLINE is set. "
            f"To use them without network, copy {file_name!r} to {cached!r}, or pass weights='/path/to/that_file.h5' "
            "(CLI: --student-weights PATH)."
        )
    return "imagenet"


#: students whose architecture Keras has ImageNet weights for
_IMAGENET_STUDENTS = ("mobilenet_v2", "mobilenet_v3_small")


def get(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    batch_norm_momentum: float | None = 0.9,
    weights: str | None = None,
    **kwargs,
) -> keras.Model:
    """Builds the registered student `name`, from scratch or from pretrained weights.

    Args:
        name: see `available()`: `mobilenet_v2` (kwarg `width`, default 0.5),
            `mobilenet_v3_small` (`width`, default 1.0), `resnet8x4`, `resnet20`;
            or `"keras_hub:<preset or folder>"` (see `kdistill.models.hub.get`).
        num_classes: number of classes.
        input_shape: `(height, width, channels)`, at least 32x32 for MobileNets.
        batch_norm_momentum: momentum of every BatchNormalization layer. 0.9
            (default) lets moving statistics settle within a short schedule;
            Keras' MobileNets use 0.999. None keeps the builder's values.
        weights: None (random), `"imagenet"` (MobileNets: the backbone from
            Keras' ImageNet weights, read from its cache when there; offline it
            fails at once saying which file to put where; a new classifier),
            the path of a saved whole model (`.keras`), or of a weights file
            (`.weights.h5` / backbone `.h5`) for this architecture.
        **kwargs: builder options.

    Raises:
        ValueError: for an unknown name (listing the registered ones), ImageNet
            weights where Keras has none, or a weights file that does not fit.
    """
    if hub.is_hub_name(name):
        return hub.get(
            name,
            num_classes,
            input_shape,
            role="student",
            weights=weights,
            batch_norm_momentum=batch_norm_momentum,
            **kwargs,
        )
    _check_name_and_size(name, input_shape)
    if isinstance(weights, str) and weights != "imagenet":
        if not os.path.exists(weights):
            raise FileNotFoundError(f"Student weights file {weights!r} does not exist.")
        if saving.is_full_model_file(weights):
            return _saved_student(name, weights, num_classes, input_shape, batch_norm_momentum, **kwargs)
    if weights == "imagenet":
        return _with_imagenet_backbone(name, num_classes, input_shape, batch_norm_momentum, **kwargs)
    model = _REGISTRY[name](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
    if isinstance(weights, str) and weights != "imagenet":
        saving.load_weights(model, weights, "student", name, "Pass weights saved from the same architecture and width.")
    return saving.set_batch_norm_momentum(model, batch_norm_momentum)


def _check_name_and_size(name: str, input_shape) -> None:
    """Raises for a name that is not registered, or images too small for a MobileNet."""
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown student {shown(name)}.{did_you_mean(name, available(), count=2)} Registered: {', '.join(available())}; or pass any functional Keras model."
        )
    if name.startswith("mobilenet") and min(tuple(input_shape)[:2]) < 32:  # its stride-2 stages leave less than a pixel
        raise UserError(
            f"{name} needs images of at least 32x32, received input_shape {tuple(input_shape)}. Use --image-size (or "
            "--student-image-size) 32 or more, or a CIFAR student for small images (resnet8x4, resnet20)."
        )


def _saved_student(
    name: str, weights: str, num_classes: int, input_shape, batch_norm_momentum: float | None, **kwargs
) -> keras.Model:
    """The whole student saved in `weights`, checked to be the architecture `name` with `num_classes` classes."""
    model = saving.load_model(weights, role="student")
    built = _REGISTRY[name](num_classes=model.outputs[0].shape[-1], input_shape=tuple(input_shape), **kwargs)
    checks.check_same_architecture(model, built, name, weights)
    if model.outputs[0].shape[-1] != num_classes:
        raise ValueError(
            f"The student in {weights!r} predicts {model.outputs[0].shape[-1]} classes, not {num_classes}."
        )
    return saving.set_batch_norm_momentum(model, batch_norm_momentum)


def _with_imagenet_backbone(
    name: str, num_classes: int, input_shape, batch_norm_momentum: float | None, **kwargs
) -> keras.Model:
    """A MobileNet student on Keras' ImageNet backbone (from its cache, or downloaded) with a new classifier."""
    if name not in _IMAGENET_STUDENTS:
        imagenet_notop_file(name, input_shape, 1.0)  # raises, naming the students that have ImageNet weights
    width = kwargs.get("width", 0.5 if name == "mobilenet_v2" else 1.0)
    kwargs["backbone_weights"] = _imagenet_weights(name, tuple(input_shape), width, kwargs.get("minimalistic", False))
    try:
        return saving.set_batch_norm_momentum(
            _REGISTRY[name](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs), batch_norm_momentum
        )
    except Exception as error:  # Keras' download: "URL fetch failure" without network
        file_name = imagenet_notop_file(name, input_shape, width, kwargs.get("minimalistic", False))
        raise ValueError(
            f"Could not get the ImageNet weights of {name} (width {width}): {type(error).__name__}: {str(error)[:200]}. Without "
            f"network, copy {file_name!r} to {saving.keras_cache_path(file_name)!r}, or pass weights='/path/to/that_file.h5' "
            "(CLI: --student-weights PATH); set KDISTILL_OFFLINE=1 to fail at once instead of trying to download."
        ) from None


def load(path: str) -> keras.Model:
    """Loads a saved student (`.keras` or `.h5`) with `safe_mode=True`."""
    return saving.load_model(path, role="student")


def _to_minus_one_one(inputs):
    """[0, 255] -> [-1, 1] with a built-in Keras layer, so a saved student loads without kdistill installed."""
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocessing")(inputs)


def _rename(model: keras.Model, name: str) -> keras.Model:
    return keras.Model(graph.call_inputs(model), model.outputs[0], name=name)


def _with_new_classifier(backbone: keras.Model, num_classes: int, name: str) -> keras.Model:
    """A pretrained 'notop' backbone with global pooling and a new logits layer, named as Keras' own classifier."""
    pooled = keras.layers.GlobalAveragePooling2D(name="global_average_pooling2d")(backbone.output)
    logits = keras.layers.Dense(num_classes, name="predictions")(pooled)
    return keras.Model(backbone.inputs, logits, name=name)


#: MobileNetV2's stage outputs (Keras' layer names): the last expansion at strides 4, 8, 16, then the final activation
MOBILENET_V2_STAGES = [
    ("block_3_expand_relu", 4),
    ("block_6_expand_relu", 8),
    ("block_13_expand_relu", 16),
    ("out_relu", 32),
]

#: MobileNetV3-Small's stage outputs: the last block (or its projection) at strides 4, 8, 16 and 32
MOBILENET_V3_SMALL_STAGES = [
    ("expanded_conv_project_bn", 4),
    ("expanded_conv_2_add", 8),
    ("expanded_conv_7_add", 16),
    ("expanded_conv_10_add", 32),
]


@register("mobilenet_v2", stages=MOBILENET_V2_STAGES)
def mobilenet_v2(
    num_classes: int, input_shape=(32, 32, 3), width: float = 0.5, backbone_weights: str | None = None
) -> keras.Model:
    """MobileNetV2 (Sandler et al., 2018) with width multiplier `width` (default 0.5: MobileNetV2-0.5; the README's results use
    0.35); random, or a pretrained backbone (`backbone_weights`)."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = _to_minus_one_one(inputs)
    if backbone_weights is not None:
        # input_shape too: from the tensor alone Keras picks the 224x224 weights file whatever the size
        backbone = keras.applications.MobileNetV2(
            input_tensor=x, input_shape=tuple(input_shape), alpha=width, weights=backbone_weights, include_top=False
        )
        return _with_new_classifier(backbone, num_classes, "mobilenet_v2")
    model = keras.applications.MobileNetV2(
        input_tensor=x, alpha=width, weights=None, classes=num_classes, classifier_activation=None
    )
    return _rename(model, "mobilenet_v2")


@register("mobilenet_v3_small", stages=MOBILENET_V3_SMALL_STAGES)
def mobilenet_v3_small(
    num_classes: int,
    input_shape=(32, 32, 3),
    width: float = 1.0,
    minimalistic: bool = False,
    backbone_weights: str | None = None,
) -> keras.Model:
    """MobileNetV3-Small (Howard et al., 2019), random or pretrained backbone; its own Rescaling maps [0, 255] to [-1, 1]."""
    inputs = keras.Input(shape=input_shape, name="image")
    if backbone_weights is not None:
        backbone = keras.applications.MobileNetV3Small(
            input_tensor=inputs,
            alpha=width,
            minimalistic=minimalistic,
            weights=backbone_weights,
            include_top=False,
            include_preprocessing=True,
        )
        return _with_new_classifier(backbone, num_classes, "mobilenet_v3_small")
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


@register("resnet8x4", stages=cifar_resnets.STAGES)
def resnet8x4(num_classes: int, input_shape=(32, 32, 3)) -> keras.Model:
    """CIFAR ResNet-8x4 (as in CRD, Tian et al. 2020): one basic block per stage, 64/128/256 channels."""
    return cifar_resnets.build("resnet8x4", num_classes, input_shape)


@register("resnet20", stages=cifar_resnets.STAGES)
def resnet20(num_classes: int, input_shape=(32, 32, 3)) -> keras.Model:
    """CIFAR ResNet-20 (He et al., 2016): three blocks per stage, 16/32/64 channels."""
    return cifar_resnets.build("resnet20", num_classes, input_shape)
