"""Quantization-aware distillation: int8 students that compute what their TFLite files compute.

`quantize_model(student)` rewrites a trained float student into a
fake-quantized twin (BatchNormalization folded, int8 per-channel weights,
moving-average activation ranges); fine-tune it inside a `FeatureDistiller`
like any student, put its biases on TFLite's int32 grid with
`snap_biases(twin)`, then `kdistill.export.tflite(twin, path, quantize="int8")`
writes a full-integer TFLite file with the trained ranges (no calibration)
that computes what the twin computes.

Example:
    >>> import kdistill
    >>> student = kdistill.students.get("mobilenet_v2", num_classes=10, width=0.35)
    >>> twin = kdistill.quantize.quantize_model(student)
    >>> kdistill.quantize.is_quantized(twin)
    True
"""

from kdistill.quantize.biases import snap_biases
from kdistill.quantize.layers import (
    ActivationQuantizer,
    QuantizedFoldedConv,
    QuantizedDense,
    QuantizedOutput,
    QuantizedRescaling,
)
from kdistill.quantize.rewrite import calibrate, check_quantized, is_quantized, quantize_model, unsupported_layers

__all__ = [
    "ActivationQuantizer",
    "QuantizedFoldedConv",
    "QuantizedDense",
    "QuantizedOutput",
    "QuantizedRescaling",
    "calibrate",
    "check_quantized",
    "is_quantized",
    "quantize_model",
    "snap_biases",
    "unsupported_layers",
]
