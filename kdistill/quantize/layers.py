"""Fake-quantized Keras layers: what trains is what TFLite's int8 kernels compute.

Every layer here quantizes with `keras.quantizers.fake_quant_with_min_max_vars`,
which on the TensorFlow backend is TensorFlow's own FakeQuant op: the TFLite
converter reads its ranges as the int8 tensors' scales and zero points, so a
quantization-aware model converts to full-integer TFLite without calibration.
On JAX and PyTorch the same op is written in `keras.ops` with a
straight-through gradient, so fine-tuning runs on every backend.

- `ActivationQuantizer`: one int8 range per tensor, tracked by an exponential
  moving average of each training batch's min and max (always containing 0).
- `QuantizedFoldedConv`: Conv2D or DepthwiseConv2D with its BatchNormalization folded
  in (statistics frozen, gamma and beta trained; the fold is
  `kdistill.models.folding.folded_kernel_and_bias`) and ReLU/ReLU6 fused, weights
  int8 per output channel (symmetric, as TFLite stores them), output quantized.
- `QuantizedDense`: Dense with int8 per-tensor weights and a quantized output.
- `QuantizedRescaling`: `x * scale + offset` with its constants and output
  quantized, so that even the input normalisation runs in int8.
- `QuantizedOutput`: any Keras layer (Add, ReLU, ...) with its output quantized.
"""

from __future__ import annotations

import keras
from keras import ops

from kdistill.models.folding import folded_kernel_and_bias
from kdistill.quantize.weights import fake_quant_weights

#: activations a quantized unit can fuse (TFLite fuses these into its int8 kernels)
ACTIVATIONS = (None, "relu", "relu6")


def _activate(x, activation: str | None):
    if activation == "relu":
        return ops.relu(x)
    if activation == "relu6":
        return ops.relu6(x)
    return x


def _check_activation(activation: str | None) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} cannot be fused into an int8 unit; use one of {ACTIVATIONS}.")


@keras.saving.register_keras_serializable(package="kdistill")
class ActivationQuantizer(keras.layers.Layer):
    """Per-tensor int8 fake quantization with a moving-average range.

    In training, the range follows an exponential moving average of each
    batch's minimum and maximum (the first batch sets it); at inference it is
    fixed. The range always contains 0, so that zero is exactly representable.

    Args:
        momentum: weight of the old range in the moving average.
        **kwargs: `keras.layers.Layer` arguments (e.g. `name`).

    Example:
        >>> import numpy as np
        >>> quantizer = ActivationQuantizer()
        >>> _ = quantizer(np.array([[-1.0, 0.5, 3.0]], "float32"), training=True)
        >>> [round(float(v), 2) for v in quantizer.range()]
        [-1.0, 3.0]
    """

    def __init__(self, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), received {momentum}.")
        self.momentum = float(momentum)

    def build(self, input_shape=None):
        # aggregation="mean": under tf.distribute every replica's range update is averaged (as BatchNormalization's
        # statistics).
        self.range_min = self.add_weight(
            name="range_min", shape=(), initializer="zeros", trainable=False, aggregation="mean"
        )
        self.range_max = self.add_weight(
            name="range_max", shape=(), initializer="ones", trainable=False, aggregation="mean"
        )
        self.tracked = self.add_weight(
            name="tracked", shape=(), initializer="zeros", trainable=False, aggregation="mean"
        )

    def range(self) -> tuple[float, float]:
        """The current (min, max) range as Python floats."""
        return float(ops.convert_to_numpy(self.range_min)), float(ops.convert_to_numpy(self.range_max))

    def call(self, inputs, training=False):
        if training:
            values = ops.cast(ops.stop_gradient(inputs), "float32")
            keep = ops.where(self.tracked > 0.5, self.momentum, 0.0)
            self.range_min.assign(keep * self.range_min + (1.0 - keep) * ops.minimum(ops.min(values), 0.0))
            self.range_max.assign(keep * self.range_max + (1.0 - keep) * ops.maximum(ops.max(values), 0.0))
            self.tracked.assign(1.0)
        low, high = self.quantization_range()
        return keras.quantizers.fake_quant_with_min_max_vars(inputs, low, high, num_bits=8)

    def quantization_range(self):
        """The (min, max) the FakeQuant op gets: the tracked range widened to contain 0 and to be no narrower than 1e-6."""
        low, high = ops.minimum(self.range_min, 0.0), ops.maximum(self.range_max, 0.0)
        return low, ops.maximum(high, low + 1e-6)

    def scale(self) -> float:
        """The int8 scale of that range, as the converter writes it into the TFLite file: (max - min) / 255."""
        low, high = (float(ops.convert_to_numpy(v)) for v in self.quantization_range())
        return (high - low) / 255.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum}


@keras.saving.register_keras_serializable(package="kdistill")
class QuantizedFoldedConv(keras.layers.Layer):
    """Conv2D / DepthwiseConv2D + frozen BatchNormalization + ReLU(6), int8-quantized, with weights of its own.

    Unlike the teacher's float `kdistill.models.folding.FoldedConvView`, which
    reads another model's layers, it owns and trains its weights and is saved.
    Computes `act(conv(x, fq(kernel * s)) + (bias - mean) * s + beta)` with
    `s = gamma / sqrt(variance + epsilon)`: the convolution TFLite will run,
    with the per-channel int8 weights it will store. The BatchNormalization
    statistics stay frozen (as in TF-MOT's and PyTorch's folded QAT after
    freezing); its gamma and beta, the kernel and the bias train.

    Args:
        depthwise: a DepthwiseConv2D (depth multiplier 1) instead of a Conv2D.
        filters: output channels (Conv2D only).
        kernel_size, strides, padding: as in Keras' convolutions.
        use_bias: whether the convolution has its own bias.
        epsilon: the folded BatchNormalization's epsilon.
        activation: None, "relu" or "relu6".
        momentum: the output quantizer's moving-average momentum.
        **kwargs: `keras.layers.Layer` arguments.

    Example:
        >>> import numpy as np
        >>> unit = QuantizedFoldedConv(filters=4, kernel_size=(3, 3), activation="relu6")
        >>> tuple(unit(np.ones((1, 8, 8, 3), "float32")).shape)
        (1, 8, 8, 4)
    """

    def __init__(
        self,
        depthwise: bool = False,
        filters: int | None = None,
        kernel_size=(3, 3),
        strides=(1, 1),
        padding: str = "same",
        use_bias: bool = False,
        epsilon: float = 1e-3,
        activation: str | None = None,
        momentum: float = 0.99,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_activation(activation)
        if not depthwise and not filters:
            raise ValueError("A Conv2D unit needs filters=<output channels>.")
        self.depthwise, self.filters, self.use_bias, self.epsilon, self.activation = (
            bool(depthwise),
            filters,
            bool(use_bias),
            float(epsilon),
            activation,
        )
        self.kernel_size, self.strides = tuple(kernel_size), tuple(strides)
        self.padding = padding.lower()
        self.output_quantizer = ActivationQuantizer(momentum=momentum, name="output_quantizer")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        outputs = channels if self.depthwise else int(self.filters)
        shape = (*self.kernel_size, channels, 1) if self.depthwise else (*self.kernel_size, channels, outputs)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(outputs,), initializer="zeros") if self.use_bias else None
        self.gamma = self.add_weight(name="gamma", shape=(outputs,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(outputs,), initializer="zeros")
        self.moving_mean = self.add_weight(name="moving_mean", shape=(outputs,), initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=(outputs,), initializer="ones", trainable=False
        )
        self.output_quantizer.build(None)

    def folded(self):
        """(kernel, bias) with the BatchNormalization folded in, before weight quantization."""
        return folded_kernel_and_bias(
            self.kernel,
            self.moving_mean,
            self.moving_variance,
            self.epsilon,
            gamma=self.gamma,
            beta=self.beta,
            bias=self.bias,
            depthwise=self.depthwise,
        )

    def call(self, inputs, training=False):
        kernel, bias = self.folded()
        if self.depthwise:
            outputs = ops.depthwise_conv(
                inputs, fake_quant_weights(kernel, axis=2), strides=self.strides, padding=self.padding
            )
        else:
            outputs = ops.conv(inputs, fake_quant_weights(kernel, axis=3), strides=self.strides, padding=self.padding)
        outputs = _activate(outputs + ops.cast(bias, outputs.dtype), self.activation)
        return self.output_quantizer(outputs, training=training)

    def compute_output_shape(self, input_shape):
        kernel = keras.KerasTensor((*self.kernel_size, input_shape[-1], 1 if self.depthwise else self.filters))
        if self.depthwise:
            return ops.depthwise_conv(
                keras.KerasTensor(input_shape), kernel, strides=self.strides, padding=self.padding
            ).shape
        return ops.conv(keras.KerasTensor(input_shape), kernel, strides=self.strides, padding=self.padding).shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "depthwise": self.depthwise,
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "use_bias": self.use_bias,
            "epsilon": self.epsilon,
            "activation": self.activation,
            "momentum": self.output_quantizer.momentum,
        }


# Quantization-aware models saved before the rename (the demo's student_int8_qat.keras) name it "kdistill>FoldedConv".
keras.saving.get_custom_objects()["kdistill>FoldedConv"] = QuantizedFoldedConv


@keras.saving.register_keras_serializable(package="kdistill")
class QuantizedDense(keras.layers.Layer):
    """Dense with int8 per-tensor weights, an optional fused ReLU(6) and a quantized output.

    Per-tensor: TFLite's fully-connected kernels take one weight scale.

    Args:
        units: output size.
        use_bias: whether to add a bias.
        activation: None, "relu" or "relu6".
        momentum: the output quantizer's moving-average momentum.
        **kwargs: `keras.layers.Layer` arguments.

    Example:
        >>> import numpy as np
        >>> tuple(QuantizedDense(3)(np.ones((2, 5), "float32")).shape)
        (2, 3)
    """

    def __init__(
        self, units: int, use_bias: bool = True, activation: str | None = None, momentum: float = 0.99, **kwargs
    ):
        super().__init__(**kwargs)
        _check_activation(activation)
        self.units, self.use_bias, self.activation = int(units), bool(use_bias), activation
        self.output_quantizer = ActivationQuantizer(momentum=momentum, name="output_quantizer")

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(int(input_shape[-1]), self.units), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None
        self.output_quantizer.build(None)

    def call(self, inputs, training=False):
        outputs = ops.matmul(inputs, fake_quant_weights(self.kernel))
        if self.bias is not None:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return self.output_quantizer(_activate(outputs, self.activation), training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            "activation": self.activation,
            "momentum": self.output_quantizer.momentum,
        }


@keras.saving.register_keras_serializable(package="kdistill")
class QuantizedRescaling(keras.layers.Layer):
    """`x * scale + offset` (Keras' Rescaling) with int8 constants and a quantized output (and product, when there is an offset).

    With the constants fake-quantized the converter builds int8 MUL and ADD
    kernels, so an int8 model input feeds integer kernels from the first op.

    Args:
        scale: the scalar factor.
        offset: the scalar offset.
        momentum: the quantizers' moving-average momentum.
        **kwargs: `keras.layers.Layer` arguments.

    Example:
        >>> import numpy as np
        >>> layer = QuantizedRescaling(1 / 127.5, -1.0)
        >>> x = layer(np.array([[0.0, 255.0]], "float32"), training=True)
        >>> [round(v, 2) for v in keras.ops.convert_to_numpy(x)[0].tolist()]
        [-1.0, 1.0]
    """

    def __init__(self, scale: float, offset: float = 0.0, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = float(scale), float(offset)
        self.product_quantizer = ActivationQuantizer(momentum=momentum, name="product_quantizer")
        self.output_quantizer = ActivationQuantizer(momentum=momentum, name="output_quantizer")

    def build(self, input_shape=None):
        self.product_quantizer.build(None)
        self.output_quantizer.build(None)

    @staticmethod
    def _constant(value: float, dtype):
        constant = ops.full((1,), value, dtype="float32")
        return ops.cast(fake_quant_weights(constant) if value else constant, dtype)

    def call(self, inputs, training=False):
        product = inputs * self._constant(self.scale, inputs.dtype)
        # The product is the output: a second range on the same values drifts by rounding, and TFLite then refuses ops
        # that keep their input's scale (a pad).
        if not self.offset:
            return self.output_quantizer(product, training=training)
        outputs = self.product_quantizer(product, training=training) + self._constant(self.offset, inputs.dtype)
        return self.output_quantizer(outputs, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "scale": self.scale,
            "offset": self.offset,
            "momentum": self.output_quantizer.momentum,
        }


@keras.saving.register_keras_serializable(package="kdistill")
class QuantizedOutput(keras.layers.Layer):
    """Runs a Keras layer (Add, ReLU, ...) and fake-quantizes its output.

    Args:
        layer: the wrapped layer (a config dict when loading).
        momentum: the output quantizer's moving-average momentum.
        **kwargs: `keras.layers.Layer` arguments.

    Example:
        >>> import numpy as np
        >>> add = QuantizedOutput(keras.layers.Add())
        >>> tuple(add([np.ones((1, 2), "float32"), np.ones((1, 2), "float32")]).shape)
        (1, 2)
    """

    def __init__(self, layer, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.layer = keras.layers.deserialize(layer) if isinstance(layer, dict) else layer
        self.output_quantizer = ActivationQuantizer(momentum=momentum, name="output_quantizer")

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.output_quantizer.build(None)

    def call(self, inputs, training=False):
        return self.output_quantizer(self.layer(inputs), training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "layer": keras.layers.serialize(self.layer),
            "momentum": self.output_quantizer.momentum,
        }
