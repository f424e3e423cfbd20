"""Input preprocessing as a layer, so models take raw pixels in [0, 255].

Teachers and students built by kdistill start with this layer, which is why one
batch of raw images can feed a ResNet50 teacher (Caffe-style BGR mean
subtraction) and a MobileNet student (scaling to [-1, 1]) at the same time, and
why an exported student needs no separate preprocessing.

Example:
    >>> import numpy as np
    >>> layer = ImagePreprocessing("tf")
    >>> float(keras.ops.max(layer(np.full((1, 2, 2, 3), 255.0, "float32"))))
    1.0
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["ImagePreprocessing", "MODES"]

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

#: mode -> what it does to RGB pixels in [0, 255]
MODES = {
    "caffe": "RGB->BGR, subtract the ImageNet mean (ResNet50, VGG)",
    "tf": "scale to [-1, 1] (MobileNetV2, Inception)",
    "torch": "scale to [0, 1], normalise by ImageNet mean and std",
    "unit": "scale to [0, 1]",
    "none": "leave pixels as they are",
}


@keras.saving.register_keras_serializable(package="kdistill")
class ImagePreprocessing(keras.layers.Layer):
    """Maps RGB pixels in [0, 255] to what a network was designed for.

    Args:
        mode: one of `MODES`: `"caffe"`, `"tf"`, `"torch"`, `"unit"`, `"none"`.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Unknown preprocessing mode {mode!r}; known: {', '.join(MODES)}.")
        self.mode = mode

    def call(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            bgr = ops.flip(inputs, axis=-1)
            return bgr - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        if self.mode == "tf":
            return inputs / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=self.compute_dtype)
            return (inputs / 255.0 - mean) / std
        if self.mode == "unit":
            return inputs / 255.0
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
