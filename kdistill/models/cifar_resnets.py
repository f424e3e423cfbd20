"""CIFAR-style ResNets (He et al., 2016, section 4.2), as students and as small teachers.

Each network is data in `ARCHITECTURES`: the stem's channels, three stages of
basic blocks (the first at full resolution, then stride 2 twice) and the
number of blocks per stage. Because the first stage keeps the input's
resolution, they need many multiply-adds for few parameters.

Example:
    >>> from kdistill.models import cifar_resnets
    >>> model = cifar_resnets.build("resnet56", num_classes=10, input_shape=(32, 32, 3))
    >>> model.get_layer("stage3_out").output.shape
    (None, 8, 8, 64)
"""

from __future__ import annotations

import keras
from keras import layers

__all__ = ["ARCHITECTURES", "STAGES", "build"]

#: name -> stem channels then each stage's channels, and basic blocks per stage
ARCHITECTURES: dict[str, dict] = {
    "resnet8x4": dict(filters=(32, 64, 128, 256), blocks=1),  # CRD's student (Tian et al., 2020)
    "resnet20": dict(filters=(16, 16, 32, 64), blocks=3),
    "resnet32": dict(filters=(16, 16, 32, 64), blocks=5),
    "resnet56": dict(filters=(16, 16, 32, 64), blocks=9),
}

#: the stage outputs every architecture here has, as (layer name, total stride)
STAGES = [("stage1_out", 1), ("stage2_out", 2), ("stage3_out", 4)]


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
    return layers.Add(name=f"{name}_add")([y, shortcut])


def build(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    resize_to: int | None = None,
    rescale: bool = True,
) -> keras.Model:
    """Builds the CIFAR ResNet `name` (a key of `ARCHITECTURES`) with a logits layer named `logits`.

    Args:
        name: `"resnet8x4"`, `"resnet20"`, `"resnet32"` or `"resnet56"`.
        num_classes: number of classes.
        input_shape: `(height, width, channels)`.
        resize_to: upsample the input to `resize_to x resize_to` first (bilinear), as teachers may.
        rescale: start with a `Rescaling` layer mapping pixels in [0, 255] to [-1, 1].

    Returns:
        A functional `keras.Model` named `name`, with the stage outputs of `STAGES`.
    """
    architecture = ARCHITECTURES[name]
    filters, blocks = architecture["filters"], architecture["blocks"]
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if resize_to is not None:
        x = layers.Resizing(resize_to, resize_to, interpolation="bilinear", name="upsample")(x)
    if rescale:  # a built-in layer, so that a saved model loads without kdistill installed
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocessing")(x)
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
