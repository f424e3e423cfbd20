"""Registry of small segmenters: a MobileNetV2 student with a light decoder, and a plain convolutional teacher.

Every builder takes `num_classes` and `input_shape` and returns a functional
model that takes raw pixels in [0, 255] and outputs logits `(batch, H, W,
num_classes)` at the input's size (no softmax), so `FeatureDistiller` distils
it with masks at the input size. Each declares its backbone's stage outputs
(layer name, total stride) beside its builder; the decoder's fused map
before the classifier is a tap too (`decoder_out`, `conv_segmenter_decoder_out`).

- `mobilenet_v2_segmenter`: MobileNetV2's stages at strides 4, 8 and 16 (the
  multi-scale outputs KerasHub's MobileNet backbone does not expose), each
  reduced to `decoder_channels` by a 1x1 convolution, upsampled to stride 4 and
  summed (a feature-pyramid-style decoder), a 3x3 convolution, a 1x1 classifier
  and a bilinear upsampling to the input size. Runs on a CPU.
- `conv_segmenter`: three stages of two 3x3 convolutions (strides 2, 4, 8) with
  the same kind of decoder; a small teacher for tests and demos.
- `deeplab_v3`: KerasHub's `DeepLabV3Backbone` over a `ResNetBackbone`, built
  offline from a config (no preset, no download) and inlined into one flat
  graph, so the ResNet's `pyramid_outputs` levels are taps by layer name.
- `"keras_hub:<folder>"` (not in the registry): a DeepLabV3 saved by KerasHub's
  `save_to_preset` (a `DeepLabV3ImageSegmenter` with its head, or a
  `DeepLabV3Backbone`), with its weights, inlined the same way (`from_preset`).

Example:
    >>> import kdistill
    >>> model = kdistill.models.segmenters.get("conv_segmenter", num_classes=11, input_shape=(32, 32, 3), widths=(8, 16, 32))
    >>> model.output.shape
    (None, 32, 32, 11)
"""

from __future__ import annotations

import logging
import os

from typing import Callable, Sequence

import keras

from keras import tree

from kdistill.errors import did_you_mean
from kdistill.models import hub, hub_presets, stages as stage_registry

__all__ = ["register", "available", "get", "mobilenet_v2_segmenter", "conv_segmenter", "deeplab_v3", "from_preset"]

logger = logging.getLogger(__name__)

# name -> builder fn(num_classes, input_shape, **options) -> keras.Model
_REGISTRY: dict[str, Callable[..., keras.Model]] = {}


def register(name: str, stages: Sequence[tuple[str, int]] | None = None) -> Callable:
    """Decorator adding a segmenter builder and its stage table `[(layer name, total stride), ...]` (see `students.register`)."""

    def decorator(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        _REGISTRY[name] = builder
        if stages is not None:
            stage_registry.register(name, stages)
        return builder

    return decorator


def available() -> list[str]:
    """Registered segmenter names."""
    return sorted(_REGISTRY)


def get(name: str, num_classes: int | None, input_shape: tuple[int, int, int] = (64, 64, 3), **options) -> keras.Model:
    """Builds the registered segmenter `name` with random weights (or the builder's `backbone_weights`).

    A `"keras_hub:<folder>"` name is a KerasHub DeepLabV3 preset folder, with its
    weights (`from_preset`; `num_classes` None keeps its head's classes).

    Raises:
        ValueError: for an unknown name (listing the registered ones), or
            fewer than two classes.
    """
    if name not in _REGISTRY and not hub.is_hub_name(name):
        raise ValueError(
            f"Unknown segmenter {name!r}.{did_you_mean(name, available(), count=2)} Registered: {', '.join(available())}, or "
            "'keras_hub:<folder>' (a DeepLabV3 preset); or pass any functional Keras model returning logits (batch, H, W, classes)."
        )
    if not (num_classes is None and hub.is_hub_name(name)) and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
    ):
        raise ValueError(f"num_classes must be an integer >= 2 (background included), received {num_classes!r}.")
    if hub.is_hub_name(name):
        return from_preset(name, num_classes, input_shape, **options)
    return _REGISTRY[name](num_classes=num_classes, input_shape=tuple(input_shape), **options)


def _pyramid_decoder(features: Sequence, strides: Sequence[int], num_classes: int, channels: int, prefix: str):
    """Sums the 1x1-reduced `features` at the finest stride, refines with a 3x3 conv, classifies, upsamples to the input size."""
    finest = min(strides)
    fused = None
    for feature, stride in zip(features, strides):
        x = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_lateral{stride}")(feature)
        if stride != finest:
            x = keras.layers.UpSampling2D(stride // finest, interpolation="bilinear", name=f"{prefix}_up{stride}")(x)
        fused = x if fused is None else keras.layers.Add(name=f"{prefix}_add{stride}")([fused, x])
    x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{prefix}_conv")(fused)
    x = keras.layers.BatchNormalization(name=f"{prefix}_bn")(x)
    x = keras.layers.ReLU(name=f"{prefix}_out")(x)
    x = keras.layers.Conv2D(num_classes, 1, name=f"{prefix}_classifier")(x)
    if finest > 1:
        x = keras.layers.UpSampling2D(finest, interpolation="bilinear", name=f"{prefix}_logits")(x)
    return x


#: MobileNetV2's stage outputs the segmenter decodes, shallow to deep
MOBILENET_V2_STAGES = [("block_3_expand_relu", 4), ("block_6_expand_relu", 8), ("block_13_expand_relu", 16)]


#: momentum of the segmenters' BatchNormalization moving statistics (MobileNetV2's evaluation read a constant map with
#: Keras' 0.999)
BATCH_NORM_MOMENTUM = 0.9


@register("mobilenet_v2_segmenter", stages=MOBILENET_V2_STAGES)
def mobilenet_v2_segmenter(
    num_classes: int,
    input_shape=(64, 64, 3),
    width: float = 0.35,
    decoder_channels: int = 32,
    backbone_weights: str | None = None,
) -> keras.Model:
    """MobileNetV2 (width `width`) at strides 4/8/16 with a pyramid decoder; logits at the input size.

    Args:
        num_classes: classes, background included.
        input_shape: `(height, width, 3)`, sides divisible by 16 (at least 32).
        width: MobileNetV2's width multiplier (0.35 keeps it small on a CPU).
        decoder_channels: channels of the decoder's maps.
        backbone_weights: None (random) or a MobileNetV2 'notop' weights file
            (e.g. Keras' ImageNet file from its cache) for this width.
    """
    if input_shape[0] % 16 or input_shape[1] % 16 or min(input_shape[:2]) < 32:
        raise ValueError(
            f"mobilenet_v2_segmenter needs sides divisible by 16 and at least 32, received input_shape={tuple(input_shape)}; "
            "resize or pad the images (e.g. 64x64)."
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocessing")(inputs)
    backbone = keras.applications.MobileNetV2(input_tensor=x, alpha=width, weights=backbone_weights, include_top=False)
    # Keras' 0.999 left the moving statistics near their start for hundreds of steps: all background
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BATCH_NORM_MOMENTUM
    features = [backbone.get_layer(name).output for name, _ in MOBILENET_V2_STAGES]
    logits = _pyramid_decoder(
        features, [stride for _, stride in MOBILENET_V2_STAGES], num_classes, decoder_channels, "decoder"
    )
    return keras.Model(inputs, logits, name="mobilenet_v2_segmenter")


@register(
    "conv_segmenter", stages=[("conv_segmenter_stage1", 2), ("conv_segmenter_stage2", 4), ("conv_segmenter_stage3", 8)]
)
def conv_segmenter(
    num_classes: int, input_shape=(64, 64, 3), widths: Sequence[int] = (32, 64, 128), decoder_channels: int = 64
) -> keras.Model:
    """Three stages of two 3x3 conv + BN + ReLU (strides 2, 4, 8) and a pyramid decoder; logits at the input size.

    Args:
        num_classes: classes, background included.
        input_shape: `(height, width, channels)`, sides divisible by 8.
        widths: channels of the three stages.
        decoder_channels: channels of the decoder's maps.
    """
    if input_shape[0] % 8 or input_shape[1] % 8:
        raise ValueError(f"conv_segmenter needs sides divisible by 8, received input_shape={tuple(input_shape)}.")
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="preprocessing")(inputs)
    features = []
    for stage, channels in enumerate(widths, start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(
                channels,
                3,
                strides=2 if conv == 1 else 1,
                padding="same",
                use_bias=False,
                name=f"conv_segmenter_stage{stage}_conv{conv}",
            )(x)
            x = keras.layers.BatchNormalization(
                momentum=BATCH_NORM_MOMENTUM, name=f"conv_segmenter_stage{stage}_bn{conv}"
            )(x)
            x = keras.layers.ReLU(
                name=f"conv_segmenter_stage{stage}" if conv == 2 else f"conv_segmenter_stage{stage}_relu1"
            )(x)
        features.append(x)
    logits = _pyramid_decoder(
        features, [2, 4, 8][: len(widths)], num_classes, decoder_channels, "conv_segmenter_decoder"
    )
    return keras.Model(inputs, logits, name="conv_segmenter")


def _inline_nested(model: keras.Model, name: str) -> keras.Model:
    """`model` as one flat functional graph of new layers: every nested functional model (multi-output ones too) inlined."""

    def inline(operation):
        if not isinstance(operation, keras.Model) or not hasattr(operation, "_run_through_graph"):
            return operation

        def call(*args, **kwargs):
            return operation._run_through_graph(args[0], operation_fn=inline)

        return call

    outputs = model._run_through_graph(model.inputs, operation_fn=inline)
    flat = keras.Model(model.inputs[0], tree.flatten(outputs)[0], name=name)
    # Fresh layers, first called in the flat graph: a tap's `layer.output` then belongs to this graph, not to the nested
    # one the layers were built in. They are cloned in the same order, so the weights carry over as a list.
    clone = keras.models.clone_model(flat)
    clone.set_weights(flat.get_weights())
    return clone


@register("deeplab_v3")
def deeplab_v3(
    num_classes: int,
    input_shape=(64, 64, 3),
    stackwise_num_filters: Sequence[int] = (64, 128, 256),
    stackwise_num_blocks: Sequence[int] = (1, 1, 1),
    block_type: str = "basic_block",
    dilation_rates: Sequence[int] = (2, 4),
    projection_filters: int = 48,
    name: str = "deeplab_v3",
) -> keras.Model:
    """KerasHub's DeepLabV3 over a ResNet, from a config (offline); logits at the input size, ResNet pyramid levels as stages.

    The ResNet has a stride-4 stem and one stack per entry of
    `stackwise_num_filters` (strides 1, 2, 2, ...: levels P2, P3, ...); the
    decoder reads P2 and pools the deepest level. Its stage table (`P<n>` levels'
    layers, e.g. `stack1_block0_out` at stride 8) depends on the options, so it
    is attached to the model returned (`kdistill.models.stages.attach`); a copy
    loaded from a file has none, so give it taps.

    Args:
        num_classes: classes, background included.
        input_shape: `(height, width, 3)`, sides divisible by the deepest stride.
        stackwise_num_filters: channels per stack (KerasHub needs 64 first).
        stackwise_num_blocks: blocks per stack.
        block_type: `"basic_block"` (ResNet-18/34 style) or `"bottleneck_block"`.
        dilation_rates: the atrous rates of the spatial pyramid pooling.
        projection_filters: channels of the low-level projection in the decoder.
        name: the model's name.
    """
    keras_hub = hub_presets._keras_hub()
    stacks = len(stackwise_num_filters)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=list(stackwise_num_filters),
        stackwise_num_blocks=list(stackwise_num_blocks),
        stackwise_num_strides=[1] + [2] * (stacks - 1),
        block_type=block_type,
        use_pre_activation=False,
        image_shape=tuple(input_shape),
    )
    levels = {int(key[1:]): tensor._keras_history.operation.name for key, tensor in encoder.pyramid_outputs.items()}
    deepest = max(levels)
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        low_level_feature_key=f"P{min(levels)}",
        spatial_pyramid_pooling_key=f"P{deepest}",
        upsampling_size=2 ** (deepest - min(levels)),
        dilation_rates=list(dilation_rates),
        projection_filters=projection_filters,
        image_shape=tuple(input_shape),
    )
    inputs = keras.Input(shape=input_shape, name="image")
    features = backbone(keras.layers.Rescaling(1.0 / 255.0, name="preprocessing")(inputs))
    nested = keras.Model(inputs, keras.layers.Conv2D(num_classes, 1, name="segmentation_output")(features))
    return stage_registry.attach(
        _inline_nested(nested, name), [(layer, 2**level) for level, layer in sorted(levels.items())]
    )


# === A DeepLabV3 from a local KerasHub preset ===


def _load_deeplab_preset(folder: str):
    """(DeepLabV3 backbone, its segmentation head or None, image converter or None) of a preset folder."""
    keras_hub = hub_presets._keras_hub()
    head = converter = None
    if os.path.exists(os.path.join(folder, "task.json")):
        segmenter = keras_hub.models.ImageSegmenter.from_preset(folder)
        backbone, head = segmenter.backbone, getattr(segmenter, "output_conv", None)
        converter = getattr(getattr(segmenter, "preprocessor", None), "image_converter", None)
    else:
        backbone = keras_hub.models.Backbone.from_preset(folder)
        if os.path.exists(os.path.join(folder, "image_converter.json")):
            converter = keras_hub.layers.ImageConverter.from_preset(folder)
    if not isinstance(backbone, keras_hub.models.DeepLabV3Backbone):
        raise ValueError(
            f"The KerasHub preset {folder!r} holds a {type(backbone).__name__}, not a DeepLabV3Backbone: kdistill.segmenters "
            "reads DeepLabV3 presets (DeepLabV3ImageSegmenter or DeepLabV3Backbone .save_to_preset(folder)); a classifier "
            "preset is a teacher or student of kdistill.teachers / kdistill.students."
        )
    return backbone, head, converter


def _deeplab_at(backbone: keras.Model, input_shape: tuple) -> keras.Model:
    """The DeepLabV3 backbone (and its image encoder) rebuilt at a fixed input shape, with its weights."""
    config = backbone.get_config()
    config["image_shape"] = tuple(input_shape)
    if isinstance(config["image_encoder"], dict) and "image_shape" in config["image_encoder"].get("config", {}):
        config["image_encoder"]["config"]["image_shape"] = tuple(input_shape)
    rebuilt = type(backbone).from_config(config)
    rebuilt.set_weights(backbone.get_weights())
    return rebuilt


def _preset_head(head, num_classes: int | None, folder: str):
    """The preset's 1x1 head returning logits (its weights, no activation), or a new one when the classes differ or it has none."""
    if head is None and num_classes is None:
        raise ValueError(
            f"{folder!r} is a DeepLabV3Backbone preset without a segmentation head: pass num_classes for a new one "
            f"(and train it: `kdistill train-teacher --task segmentation --name keras_hub:{folder}`)."
        )
    if head is not None and num_classes in (None, head.filters):
        logits = keras.layers.Conv2D(head.filters, 1, use_bias=head.use_bias, name="segmentation_output")
        logits.build(head.input.shape)
        logits.set_weights(head.get_weights())
        return logits
    logger.info(
        "The KerasHub preset %r has %s; a new, untrained head gives %d classes: train it before distilling from it.",
        folder,
        "no segmentation head" if head is None else f"a head of {head.filters} classes",
        num_classes,
    )
    return keras.layers.Conv2D(num_classes, 1, name="segmentation_output")


def from_preset(
    name: str,
    num_classes: int | None = None,
    input_shape: tuple[int, int, int] = (64, 64, 3),
    preprocessing: str | None = None,
    batch_norm_momentum: float | None = 0.9,
) -> keras.Model:
    """A KerasHub DeepLabV3 preset folder as one flat segmenter from pixels in [0, 255] to logits at the input size.

    The preset's backbone is rebuilt at `input_shape` with its weights and inlined
    like `deeplab_v3`'s, so its ResNet's `pyramid_outputs` levels are taps by layer
    name and the model carries them as its stage table.

    Args:
        name: `"keras_hub:<folder>"` (or the folder alone) written by `save_to_preset`
            on a `DeepLabV3ImageSegmenter` or a `DeepLabV3Backbone`; a built-in
            preset name is read from KerasHub's download cache (`kdistill.models.hub_presets.preset_folder`).
        num_classes: None keeps the segmenter's head; another number (or a
            backbone preset) gets a new, untrained 1x1 head.
        input_shape: `(height, width, 3)` the model takes.
        preprocessing: None for the preset's image converter (scale and offset;
            ImageNet mean and std without one), or "unit", "tf", "torch", "none".
        batch_norm_momentum: of every BatchNormalization (None keeps KerasHub's).

    Example:
        teacher = kdistill.segmenters.get("keras_hub:saved_models/deeplab_preset", None, (64, 64, 3))
    """
    folder = hub_presets.preset_folder(name.removeprefix(hub_presets.PREFIX))
    backbone, head, converter = _load_deeplab_preset(folder)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    rescaling = hub._preprocessing(converter, preprocessing)
    x = rescaling(inputs) if rescaling is not None else inputs
    sized = _deeplab_at(backbone, tuple(input_shape))
    logits = _preset_head(head, num_classes, folder)(sized(x))
    model = _inline_nested(keras.Model(inputs, logits), hub._model_name(folder))
    hub._set_momentum(model, batch_norm_momentum)
    encoder = sized.image_encoder
    levels = {int(key[1:]): tensor._keras_history.operation.name for key, tensor in encoder.pyramid_outputs.items()}
    return stage_registry.attach(model, [(layer, 2**level) for level, layer in sorted(levels.items())])
