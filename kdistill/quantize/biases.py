"""Biases on TFLite's int32 grid, so that the quantization-aware Keras model and its int8 file compute the same integers.

TFLite stores each int8 kernel's bias as int32 with scale `s_in * s_w[c]`
(input scale times the channel's weight scale). The fake-quantized Keras
model adds a float bias instead; the difference (at most half a grid step)
is small, but where a sum lands near a rounding boundary it moves the output
by one int8 step, and in a deep network those steps spread (measured in
`docs/export-and-quantization.md`).

`snap_biases(model)` moves every bias onto that grid (changing each by less
than half a step) once fine-tuning is done; export then reproduces the Keras
model's outputs.
"""

from __future__ import annotations

import keras
import numpy as np

from kdistill.quantize import layers as qlayers
from kdistill.quantize.rewrite import PASS_THROUGH, check_quantized
from kdistill.quantize.weights import weight_range


def _input_quantizer(layer) -> qlayers.ActivationQuantizer:
    """The quantizer whose range sets the scale of `layer`'s input (walking up through scale-keeping layers)."""
    tensor = layer._inbound_nodes[0].input_tensors[0]
    while True:
        producer = tensor._keras_history.operation
        if isinstance(producer, qlayers.ActivationQuantizer):
            return producer
        if hasattr(producer, "output_quantizer"):
            return producer.output_quantizer
        if type(producer).__name__ not in PASS_THROUGH or not producer._inbound_nodes:
            raise ValueError(
                f"The input of {layer.name!r} comes from {producer.name!r} ({type(producer).__name__}), which has no int8 range."
            )
        tensor = producer._inbound_nodes[0].input_tensors[0]


def _weight_scales(kernel: np.ndarray, axis: int | None) -> np.ndarray:
    return keras.ops.convert_to_numpy(weight_range(kernel.astype("float32"), axis)).astype("float64") / 127.0


def snap_biases(model: keras.Model) -> int:
    """Moves the bias of every int8 kernel of a quantization-aware model onto TFLite's int32 grid.

    Call it after fine-tuning and before saving or exporting (kdistill's
    `distill --quantize int8` and the demo do). Idempotent; training again
    moves the biases off the grid, so snap again after.

    Args:
        model: a model made by `kdistill.quantize.quantize_model`.

    Returns:
        How many layers were adjusted.

    Example:
        >>> import numpy as np, kdistill
        >>> twin = kdistill.quantize.quantize_model(kdistill.students.get("resnet8x4", num_classes=10))
        >>> kdistill.quantize.calibrate(twin, np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)))
        >>> snap_biases(twin) > 0
        True
    """
    check_quantized(model)
    adjusted = 0
    for layer in model.layers:
        if not isinstance(layer, (qlayers.QuantizedFoldedConv, qlayers.QuantizedDense)):
            continue
        input_scale = _input_quantizer(layer).scale()
        if isinstance(layer, qlayers.QuantizedFoldedConv):
            kernel, bias = (keras.ops.convert_to_numpy(t).astype("float64") for t in layer.folded())
            step = input_scale * _weight_scales(kernel, axis=2 if layer.depthwise else 3)
            target = np.round(bias / step) * step
            layer.beta.assign((keras.ops.convert_to_numpy(layer.beta) + (target - bias)).astype("float32"))
        else:
            if layer.bias is None:
                continue
            kernel, bias = (keras.ops.convert_to_numpy(v).astype("float64") for v in (layer.kernel, layer.bias))
            step = input_scale * _weight_scales(kernel, axis=None)
            layer.bias.assign((np.round(bias / step) * step).astype("float32"))
        adjusted += 1
    return adjusted
