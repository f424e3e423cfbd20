"""Registry of teachers: Keras ResNets with a logits classifier (from ImageNet weights, a file, or scratch) and CIFAR ResNets.

A teacher built here takes raw RGB pixels in [0, 255] (its preprocessing is
its first layer: Caffe-style for Keras' ResNets, [-1, 1] for the CIFAR ResNets
of `kdistill.models.cifar_resnets`) and returns logits. `FeatureDistiller`
freezes it; it is returned trainable so `kdistill train-teacher` can train it.

Example:
    >>> import kdistill
    >>> teacher = kdistill.teachers.resnet50(num_classes=10, input_shape=(32, 32, 3))
    >>> teacher.output.shape
    (None, 10)
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Sequence

import keras

from kdistill.errors import did_you_mean, shown
from kdistill.models import cifar_resnets, hub, saving, stages as stage_registry
from kdistill.models.ensemble import ensemble
from kdistill.models.preprocessing import ImagePreprocessing

__all__ = ["register", "get", "available", "load", "resnet50", "imagenet_cache_path", "ensemble", "RESNET_STAGES"]

# name -> builder fn(num_classes, input_shape, weights=None, include_preprocessing=True, resize_to=None) -> keras.Model
_REGISTRY: dict[str, Callable[..., keras.Model]] = {}


def register(
    name: str, builder: Callable[..., keras.Model] | None = None, stages: Sequence[tuple[str, int]] | None = None
) -> Callable:
    """Adds a teacher builder, as `kdistill.students.register` adds a student; a decorator when `builder` is left out.

    The builder is `fn(num_classes, input_shape, weights=None, include_preprocessing=True,
    resize_to=None) -> keras.Model` and returns a functional model named `name`
    that takes pixels in [0, 255] and returns logits; `weights` is None or a
    weights file (a whole saved `.keras` teacher is loaded by `get` without the
    builder). `stages` are its stage outputs `[(layer name, total stride), ...]`,
    shallow to deep, for `kdistill.taps.preset`.

    Example:
        >>> import keras, kdistill
        >>> @kdistill.teachers.register("tiny_teacher", stages=[("tiny_stage", 2)])
        ... def tiny_teacher(num_classes, input_shape, weights=None, include_preprocessing=True, resize_to=None):
        ...     inputs = keras.Input(input_shape)
        ...     x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="tiny_stage")(inputs)
        ...     x = keras.layers.GlobalAveragePooling2D()(x)
        ...     return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="tiny_teacher")
        >>> kdistill.taps.preset("tiny_teacher", "resnet20", stages=[0])
        {'tiny_stage': 'stage1_out'}
    """

    return stage_registry.registering(_REGISTRY, name, builder, stages)


def available() -> list[str]:
    """Registered teacher names `get` accepts (besides `"keras_hub:..."`)."""
    return list(_REGISTRY)


# === Keras' ImageNet ResNets ===

#: ResNet50's stage outputs, the last block at strides 4, 8, 16 and 32. ResNet101 and ResNet152 use the same layers
#: (their conv4_block6_out is the sixth of 23 or 36 blocks): the pairs published with 0.3 read these.
RESNET_STAGES = [("conv2_block3_out", 4), ("conv3_block4_out", 8), ("conv4_block6_out", 16), ("conv5_block3_out", 32)]

#: Keras' ImageNet ResNets, as data: name -> application
_KERAS_RESNETS: dict[str, Callable[..., keras.Model]] = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}


def _notop_file(name: str) -> str:
    return f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def imagenet_cache_path(name: str = "resnet50") -> str:
    """Where Keras keeps the ImageNet 'notop' weights of `name` (`$KERAS_HOME/models`)."""
    return saving.keras_cache_path(_notop_file(name))


def _imagenet_help(name: str) -> str:
    return (
        f"To use ImageNet weights without network, copy {_notop_file(name)!r} (Keras' "
        f"'notop' file for {name}) to {imagenet_cache_path(name)!r}, or pass "
        "weights='/path/to/that_file.h5' (CLI: --weights PATH). Without ImageNet weights, "
        "train a teacher on your data: `kdistill train-teacher`."
    )


def _backbone_weights(name: str, weights: str | None) -> str | None:
    """Resolves 'imagenet' to the cached file when there is one, failing fast offline."""
    if weights != "imagenet":
        return weights
    cached = imagenet_cache_path(name)
    if os.path.exists(cached):
        return cached
    if saving.offline():
        raise ValueError(
            f"ImageNet weights for {name} are not in the Keras cache and KDISTILL_OFFLINE is set. {_imagenet_help(name)}"
        )
    return "imagenet"


def _keras_resnet(
    name: str,
    num_classes: int,
    input_shape,
    weights: str | None = None,
    include_preprocessing: bool = True,
    resize_to: int | None = None,
) -> keras.Model:
    """A Keras ImageNet ResNet (Caffe-style preprocessing inside) with a new `predictions` logits layer."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if resize_to is not None:
        x = keras.layers.Resizing(resize_to, resize_to, interpolation="bilinear", name="upsample")(x)
    x = ImagePreprocessing("caffe", name="preprocessing")(x) if include_preprocessing else x
    backbone_weights = _backbone_weights(name, weights)
    try:
        backbone = _KERAS_RESNETS[name](include_top=False, weights=backbone_weights, input_tensor=x)
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(
            f"Could not get the {name} backbone weights ({type(error).__name__}: {error}). {_imagenet_help(name)}"
        ) from error
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    logits = keras.layers.Dense(num_classes, name="predictions")(features)
    return keras.Model(inputs, logits, name=name)


for _name in _KERAS_RESNETS:
    register(_name, functools.partial(_keras_resnet, _name), stages=RESNET_STAGES)


# === CIFAR ResNets (He et al., 2016): small and quick to train at 32x32, no ImageNet weights ===


def _cifar_resnet(
    name: str,
    num_classes: int,
    input_shape,
    weights: str | None = None,
    include_preprocessing: bool = True,
    resize_to: int | None = None,
) -> keras.Model:
    """A CIFAR ResNet teacher, random or with a weights file of the same architecture (a whole saved model is loaded by `get`)."""
    if weights == "imagenet":
        raise ValueError(
            f"There are no ImageNet weights for the CIFAR ResNet {name!r}: train it on your data (`kdistill train-teacher "
            f"--name {name}`), pass weights=None, or use an ImageNet teacher ({', '.join(_KERAS_RESNETS)})."
        )
    model = cifar_resnets.build(
        name, num_classes, tuple(input_shape), resize_to=resize_to, rescale=include_preprocessing
    )
    if weights is not None:
        saving.load_weights(
            model,
            weights,
            "teacher",
            name,
            "Pass weights saved from the same architecture, or a whole saved teacher (.keras).",
        )
    return model


for _name in ("resnet20", "resnet32", "resnet56"):
    register(_name, functools.partial(_cifar_resnet, _name), stages=cifar_resnets.STAGES)


# === Building a teacher by name ===


def get(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    weights: str | None = None,
    include_preprocessing: bool = True,
    batch_norm_momentum: float | None = 0.9,
    resize_to: int | None = None,
) -> keras.Model:
    """Builds the registered teacher `name` (or a KerasHub model) that outputs logits for `num_classes` classes.

    Args:
        name: a registered teacher (`available()`): `"resnet50"`, `"resnet101"`
            or `"resnet152"` (Keras' ImageNet ResNets); `"resnet20"`, `"resnet32"`
            or `"resnet56"` (CIFAR ResNets, random or from a file); or
            `"keras_hub:<preset or folder>"` for a KerasHub model (see
            `kdistill.models.hub.get`).
        num_classes: number of classes of the new classifier.
        input_shape: `(height, width, 3)`; at least 32x32.
        weights: `None` (random), `"imagenet"` (backbone from Keras' ImageNet
            weights; the classifier is new), a path to a whole saved teacher
            (`.keras` / `.h5`, loaded with `safe_mode=True`), or a path to a
            backbone weights file.
        include_preprocessing: start the model with its preprocessing (Keras'
            ResNets: Caffe-style; CIFAR ResNets: [0, 255] to [-1, 1]) so it takes
            pixels in [0, 255].
        batch_norm_momentum: momentum of every BatchNormalization layer
            (0.9 settles moving statistics within a short schedule; Keras'
            default is 0.99). None keeps Keras' values. A loaded file keeps its own.
        resize_to: upsample the input to `resize_to x resize_to` inside the
            teacher (bilinear), so that data and student stay at `input_shape`.
            Keras' ResNets shrink their input 4x in the stem: at 32x32 the last
            stage sees 1x1 maps; `resize_to=64` gives it 2x2 at 4x the cost.

    Returns:
        A trainable functional `keras.Model` named `name`: Keras' ResNets have
        layers named as in `keras.applications` (`conv3_block4_out`, ...) and a
        `predictions` logits layer; CIFAR ResNets have `stage1_out` to
        `stage3_out` and `logits`.

    Raises:
        ValueError: for an unknown name, a file that cannot be read, or
            ImageNet weights that cannot be obtained offline (the message says
            where to put the file).
    """
    if hub.is_hub_name(name):
        return hub.get(
            name,
            num_classes,
            input_shape,
            role="teacher",
            weights=weights,
            batch_norm_momentum=batch_norm_momentum,
            include_preprocessing=include_preprocessing,
            resize_to=resize_to,
        )
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown teacher {shown(name)}.{did_you_mean(name, available(), count=2)} Known: {', '.join(available())}; "
            "or pass any functional Keras model."
        )
    if isinstance(weights, str) and weights != "imagenet":
        if not os.path.exists(weights):
            raise FileNotFoundError(
                f"Teacher weights file {weights!r} does not exist. {_imagenet_help(name) if name in _KERAS_RESNETS else ''}".rstrip()
            )
        if saving.is_full_model_file(weights):
            return load(weights)
    _check_resize_to(resize_to)
    model = _REGISTRY[name](
        num_classes,
        tuple(input_shape),
        weights=weights,
        include_preprocessing=include_preprocessing,
        resize_to=resize_to,
    )
    return saving.set_batch_norm_momentum(model, batch_norm_momentum)


def _check_resize_to(resize_to) -> None:
    if resize_to is not None and (isinstance(resize_to, bool) or not isinstance(resize_to, int) or resize_to < 32):
        raise ValueError(f"resize_to must be an image size of at least 32 (e.g. 64), received {resize_to!r}.")


def resnet50(
    num_classes: int,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    weights: str | None = None,
    include_preprocessing: bool = True,
    batch_norm_momentum: float | None = 0.9,
    resize_to: int | None = None,
) -> keras.Model:
    """ResNet50 teacher with a logits classifier: `get("resnet50", ...)`; see `get` for the arguments.

    Example:
        >>> import kdistill
        >>> teacher = kdistill.teachers.resnet50(num_classes=10, weights=None)
        >>> teacher.get_layer("conv4_block6_out").output.shape
        (None, 2, 2, 1024)
    """
    return get("resnet50", num_classes, input_shape, weights, include_preprocessing, batch_norm_momentum, resize_to)


def load(path: str, input_shape: tuple[int, int, int] | None = None) -> keras.Model:
    """Loads a saved teacher (`.keras` or `.h5`) with `safe_mode=True`, or a KerasHub classifier (`"keras_hub:..."`, its own head)."""
    if hub.is_hub_name(path):
        return hub.get(path, None, input_shape or (224, 224, 3), role="teacher")
    return saving.load_model(path, role="teacher")
