"""KerasHub models as teachers and students: `"keras_hub:<preset name or folder>"`.

A KerasHub preset (a built-in name such as `resnet_50_imagenet`, a
`kaggle://` handle, or a local folder written by `save_to_preset`) becomes a
functional model that takes pixels in [0, 255] and returns logits:

    image -> preprocessing (the preset's own scale and offset) -> backbone -> head -> logits

The backbone stays one nested model named `backbone`, rebuilt at the input size
(static tap shapes). A classifier preset keeps its head (a new `predictions`
layer when `num_classes` differs); a backbone preset gets pooling and a new one.
Taps read `"backbone/<layer>"`; `stage_table` takes the stages from the
backbone's own `pyramid_outputs`, so `kdistill.taps.preset` pairs any two
KerasHub models. With `KDISTILL_OFFLINE` set, a preset name is read from
KerasHub's download cache (`cache_folder(name)`) or fails at once.

Example:
    >>> is_hub_name("keras_hub:resnet_50_imagenet"), is_hub_name("resnet50")
    (True, False)
"""

from __future__ import annotations

import logging
import math
import os

import keras

from kdistill.models import saving, stages
from kdistill.models.hub_presets import PREFIX, load_preset, preset_folder

__all__ = ["is_hub_name", "get", "stage_table", "backbone_of", "flatten"]

logger = logging.getLogger(__name__)

#: name of the nested KerasHub backbone inside the models built here: taps read it as "backbone/<layer>"
BACKBONE = "backbone"

#: pyramid levels kept as stages when a backbone has them (strides 4 to 32, as the bundled stage tables)
_LEVELS = (2, 3, 4, 5)

#: the preprocessing modes one may ask for instead of the preset's own, as (scale, offset) of a Rescaling layer
_MODES = {
    "unit": (1.0 / 255.0, 0.0),
    "tf": (1.0 / 127.5, -1.0),
    # ImageNet mean and standard deviation on [0, 1] pixels (timm's default, used by KerasHub's vision presets)
    "torch": (
        [1.0 / (255.0 * s) for s in (0.229, 0.224, 0.225)],
        [-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
    ),
    "none": None,
}


def is_hub_name(name) -> bool:
    """Whether `name` asks for a KerasHub model (`"keras_hub:<preset or folder>"`)."""
    return isinstance(name, str) and name.startswith(PREFIX)


# === Building the model ===


def _at_input_shape(backbone: keras.Model, input_shape: tuple) -> keras.Model:
    """The backbone rebuilt at a fixed input shape (static tap shapes), named `backbone`, with its weights."""
    config = backbone.get_config()
    key = next((k for k in ("image_shape", "input_shape") if k in config), None)
    if key is None:
        raise ValueError(
            f"Cannot set the input size of the KerasHub backbone {type(backbone).__name__}: its config has no "
            "image_shape or input_shape. kdistill builds KerasHub image backbones (ResNet, MobileNet, EfficientNet, ...)."
        )
    config.update({key: tuple(input_shape), "name": BACKBONE})
    rebuilt = type(backbone).from_config(config)
    try:
        rebuilt.set_weights(backbone.get_weights())
    except ValueError as error:
        raise ValueError(
            f"{type(backbone).__name__}'s get_config does not rebuild the same network ({error}); KerasHub 0.32 leaves "
            "EfficientNetBackbone's num_features out of it, for one."
        ) from error
    return rebuilt


def _preprocessing(converter, mode: str | None):
    """A Rescaling layer doing the preset's own scale and offset (or `mode`'s), or None for no preprocessing."""
    if mode is not None:
        if mode not in _MODES:
            raise ValueError(
                f"Unknown preprocessing {mode!r} for a KerasHub model; known: {', '.join(_MODES)}, or None for the preset's own."
            )
        values = _MODES[mode]
    elif converter is not None:
        values = (
            1.0 if converter.scale is None else converter.scale,
            0.0 if converter.offset is None else converter.offset,
        )
    else:
        logger.info(
            "The KerasHub preset has no image converter: normalising with ImageNet mean and std (preprocessing='torch')."
        )
        values = _MODES["torch"]
    if values is None:
        return None
    scale, offset = (list(v) if isinstance(v, (list, tuple)) else float(v) for v in values)
    return keras.layers.Rescaling(scale, offset, name="preprocessing")


def _logits_head(classifier, backbone: keras.Model, features, num_classes: int | None, role: str):
    """The classifier's own head run on `features`; its last Dense replaced when the classes differ or it is not linear."""
    last = classifier.outputs[0]._keras_history.operation
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(
            f"The KerasHub classifier {type(classifier).__name__} does not end in a Dense layer; pass its backbone preset instead."
        )
    keep = num_classes in (None, last.units)
    if not keep and role == "teacher":
        logger.warning(
            "The teacher's KerasHub classifier predicts %d classes; a new, untrained 'predictions' layer gives %d. Fine-tune "
            "it before distilling from it (kdistill train-teacher --name keras_hub:...).",
            last.units,
            num_classes,
        )
    linear = getattr(last.activation, "__name__", "linear") == "linear"
    replacement = last
    if not keep or not linear:
        replacement = keras.layers.Dense(last.units if keep else num_classes, name="predictions")
    old_backbone = classifier.backbone

    def swap(operation):
        if operation is old_backbone:
            return backbone
        return replacement if operation is last else operation

    outputs = classifier._run_through_graph([features], operation_fn=swap)
    if replacement is not last and keep:  # a softmax head: the same weights, returning logits
        replacement.set_weights(last.get_weights())
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def _new_head(features, num_classes: int):
    """Global average pooling (over positions, or tokens) and a new logits layer."""
    pooling = keras.layers.GlobalAveragePooling2D if len(features.shape) == 4 else keras.layers.GlobalAveragePooling1D
    pooled = pooling(name="avg_pool")(features)
    return keras.layers.Dense(num_classes, name="predictions")(pooled)


def _model_name(preset: str) -> str:
    """The preset's name (a folder's name; a handle's variant) as a model name."""
    if os.path.isdir(preset):
        base = os.path.basename(os.path.normpath(preset))
    else:
        base = preset.rstrip("/").split("/")[-2] if preset.startswith("kaggle://") else preset
    return "".join(c if c.isalnum() or c == "_" else "_" for c in base) or "keras_hub_model"


def _set_momentum(model: keras.Model, momentum: float | None) -> None:
    """Every BatchNormalization's momentum, also inside the backbone's blocks (None keeps KerasHub's)."""
    if momentum is None:
        return
    if not 0.0 < momentum < 1.0:
        raise ValueError(f"batch_norm_momentum must be in (0, 1), received {momentum}.")
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)


def get(
    name: str,
    num_classes: int | None = None,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    role: str = "teacher",
    weights: str | None = None,
    batch_norm_momentum: float | None = 0.9,
    preprocessing: str | None = None,
    include_preprocessing: bool = True,
    resize_to: int | None = None,
) -> keras.Model:
    """A KerasHub preset as a functional model from pixels in [0, 255] to logits.

    `kdistill.teachers.get("keras_hub:...")` and `kdistill.students.get("keras_hub:...")` come here.

    Args:
        name: `"keras_hub:<preset>"` (or the preset alone): a built-in preset name
            (read from KerasHub's download cache; offline it must be there), a
            `kaggle://` handle, or a local folder written by `save_to_preset`.
        num_classes: classes of the logits. A classifier preset keeps its head
            when None or equal to its own; otherwise the head is new (untrained).
            A backbone preset needs it.
        input_shape: `(height, width, 3)` the model takes; the backbone is rebuilt at it.
        role: "teacher" or "student", for messages.
        weights: None (the preset's weights), or a file: a whole saved model
            (`.keras`, returned as saved) or weights for this model (`.weights.h5`).
        batch_norm_momentum: of every BatchNormalization, also inside KerasHub's
            blocks; None keeps KerasHub's values.
        preprocessing: None for the preset's own image converter (scale and
            offset; ImageNet mean and std when the preset has none), or "unit",
            "tf", "torch", "none". The converter's resize is left out: the model
            runs at `input_shape`.
        include_preprocessing: False starts the model at the backbone (inputs already preprocessed).
        resize_to: upsample inputs to this square size inside the model (as `kdistill.teachers.get`).

    Raises:
        ImportError: when keras-hub is not installed (naming the install line).
        ValueError: for a preset that cannot be found or downloaded offline
            (naming the cache folder), or a backbone preset without `num_classes`.
    """
    name = name.removeprefix(PREFIX)
    if weights is not None and not (isinstance(weights, str) and weights.endswith((".keras", ".weights.h5"))):
        raise ValueError(
            f"weights for a KerasHub {role} are None (the preset's own), a saved model (.keras) or a weights file "
            f"(.weights.h5), received {weights!r}. Pretrained weights come with the preset."
        )
    if weights is not None and not os.path.exists(weights):
        raise FileNotFoundError(f"{role.capitalize()} weights file {weights!r} does not exist.")
    if weights is not None and weights.endswith(".keras"):
        model = saving.load_model(weights, role=role)
        if num_classes not in (None, model.outputs[0].shape[-1]):
            raise ValueError(
                f"The {role} in {weights!r} predicts {model.outputs[0].shape[-1]} classes, not {num_classes}."
            )
        return model
    folder = preset_folder(name)
    backbone, classifier, converter = load_preset(folder)
    if classifier is None and num_classes is None:
        raise ValueError(
            f"{name!r} is a backbone preset without a classifier: pass num_classes for a new head, and fine-tune a teacher "
            f"on your data first (`kdistill train-teacher --name keras_hub:{name}`)."
        )
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if resize_to is not None:
        x = keras.layers.Resizing(resize_to, resize_to, interpolation="bilinear", name="upsample")(x)
    layer = _preprocessing(converter, preprocessing) if include_preprocessing else None
    x = layer(x) if layer is not None else x
    sized = _at_input_shape(backbone, tuple(x.shape[1:]))
    if classifier is not None:
        logits = _logits_head(classifier, sized, x, num_classes, role)
    else:
        logits = _new_head(sized(x), num_classes)
    model = keras.Model(inputs, logits, name=_model_name(name))
    _set_momentum(model, batch_norm_momentum)
    if weights is not None:
        model.load_weights(weights)
    return model


# === Stages from the backbone's own metadata ===


def backbone_of(model: keras.Model) -> keras.Model | None:
    """The KerasHub backbone nested in `model` (a layer of a KerasHub Backbone class), or None."""
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model) and type(layer).__module__.startswith("keras_hub."):
            return layer
    return None


def _pyramid_levels(backbone: keras.Model) -> dict[int, str]:
    """Pyramid level -> name of the layer producing it: `pyramid_outputs` where the backbone has them, else by resolution."""
    names = {layer.name for layer in backbone.layers}
    levels = {}
    for key, tensor in (getattr(backbone, "pyramid_outputs", None) or {}).items():
        operation = tensor._keras_history.operation
        if key.startswith("P") and key[1:].isdigit() and operation.name in names:
            levels[int(key[1:])] = operation.name
    if levels:
        return levels
    # No pyramid_outputs (KerasHub's MobileNet): the last computing layer at each resolution, as Pn = stride 2^n.
    size = backbone.inputs[0].shape[1]
    for layer in backbone.layers:
        shape = tuple(layer.output.shape)
        if len(shape) != 4 or not shape[1] or not size or not layer.weights:
            continue
        stride = size / shape[1]
        if stride >= 2 and float(math.log2(stride)).is_integer():
            levels[int(math.log2(stride))] = layer.name
    return levels


def stage_table(model: keras.Model) -> list[tuple[str, int]] | None:
    """Stages of a model holding a KerasHub backbone, `[("backbone/<layer>", stride), ...]` shallow to deep, or None.

    Levels P2 to P5 (strides 4 to 32) are kept where the backbone has them, so
    that stages pair by resolution with each other and with the bundled tables.
    A model made by `flatten` carries its table without `backbone/` (see
    `kdistill.models.stages.attached`).
    """
    backbone = backbone_of(model)
    if backbone is None:
        return None
    levels = _pyramid_levels(backbone)
    kept = {level: layer for level, layer in levels.items() if level in _LEVELS} or levels
    return [(f"{backbone.name}/{layer}", 2**level) for level, layer in sorted(kept.items())] or None


def flatten(model: keras.Model) -> keras.Model:
    """The model with its KerasHub backbone's layers inlined: one flat functional graph, the same layers and weights.

    `kdistill.quantize.quantize_model` rewrites flat graphs only, so a KerasHub
    student goes through here first. Taps of the flat model (and its twin)
    drop the `backbone/` prefix; the flat model carries its stage table
    (`kdistill.models.stages.attach`, handed on by `quantize_model`), so
    `kdistill.taps.preset` pairs it: `twin = kdistill.quantize.quantize_model(hub.flatten(student))`.
    A flat model saved and loaded again has no table: give it taps.
    """
    backbone = backbone_of(model)
    if backbone is None:
        raise ValueError(f"{model.name!r} holds no KerasHub backbone to flatten.")
    table = [(name.split("/", 1)[1], stride) for name, stride in stage_table(model) or []]

    def inline(operation):
        if operation is not backbone:
            return operation

        def call(*args, **kwargs):
            outputs = backbone._run_through_graph(args[0], operation_fn=lambda inner: inner)
            return outputs[0] if isinstance(outputs, (list, tuple)) else outputs

        return call

    outputs = model._run_through_graph(model.inputs, operation_fn=inline)
    flat = keras.Model(model.inputs[0], outputs[0] if isinstance(outputs, (list, tuple)) else outputs, name=model.name)
    return stages.attach(flat, table) if table else flat
