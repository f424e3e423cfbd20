"""Activation ranges for full-integer (int8) TFLite: min/max or percentile calibration.

The TFLite converter sets each activation's int8 range to the minimum and
maximum it saw on the representative images. One rare outlier then widens the
range of the whole tensor, and every other value gets a coarser step (in the
demo's MobileNetV2-0.35 the linear bottlenecks and residual sums reach ranges
of 20-40, against 6 for the ReLU6 outputs).

`percentile` calibration runs the converter's own calibration, then narrows
each inner activation's range to the `percentile`-th and
`(100 - percentile)`-th percentiles of its values on the same images (the
model's input and output tensors keep their min/max), and quantises with the
converter's MLIR quantiser. Values beyond the new range saturate.

It relies on parts of `tf.lite` that are not public API (the calibrate-only
switch, `mlir_quantize`, `flatbuffer_utils`), checked with the pinned
TensorFlow; if they move, `calibration="minmax"` still works and the error says so.

Example:
    >>> import keras, tensorflow as tf
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
    >>> images = np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 3))
    >>> import tempfile
    >>> from kdistill import export
    >>> converter = tf.lite.TFLiteConverter.from_saved_model(export.saved_model(model, tempfile.mkdtemp()))
    >>> flatbuffer = quantize_int8(converter, images, method="percentile")
    >>> tf.lite.Interpreter(model_content=flatbuffer).get_input_details()[0]["dtype"].__name__
    'float32'
"""

from __future__ import annotations

import logging
import warnings
from typing import Iterable

import numpy as np

from kdistill.backend import LazyTensorFlow
from kdistill.export.tflite_runtime import interpreter_class

tf = LazyTensorFlow("int8 calibration")

__all__ = ["METHODS", "check", "quantize_int8", "representative_dataset"]

logger = logging.getLogger(__name__)

#: calibration method -> what it does
METHODS = {
    "minmax": "the converter's own ranges: min and max of each activation on the representative images",
    "percentile": "each inner activation's range cut to its [100 - p, p] percentiles (p = 99.99 by default)",
    "trained": "the ranges a quantization-aware model learned (kdistill.quantize); no representative images",
}

_BINS = 4096


def check(method: str, percentile: float = 99.99) -> None:
    """Raises a clear error for an unknown method or a percentile outside (50, 100].

    Example:
        >>> check("entropy")
        Traceback (most recent call last):
        ...
        ValueError: Unknown int8 calibration 'entropy'; use one of minmax, percentile, trained.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown int8 calibration {method!r}; use one of {', '.join(METHODS)}.")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be a number in (50, 100], e.g. 99.99; received {percentile!r}.")


def representative_dataset(images: list[np.ndarray]):
    """The converter's `representative_dataset`: a callable yielding each image as a batch of one."""

    def generator() -> Iterable[list[np.ndarray]]:
        for image in images:
            yield [image[None, ...]]

    return generator


def _private_api():
    try:
        from tensorflow.lite.python.convert import mlir_quantize
        from tensorflow.lite.tools import flatbuffer_utils
    except ImportError as error:  # pragma: no cover - depends on the TensorFlow version
        raise RuntimeError(
            f"calibration='percentile' needs tf.lite internals that this TensorFlow {tf.__version__} lacks ({error}). "
            "Use calibration='minmax' (the converter's default)."
        ) from error
    return mlir_quantize, flatbuffer_utils


class _Histograms:
    """Streaming histograms of the tensors that carry one min/max pair, over each tensor's calibrated [min, max]."""

    def __init__(self, ranges: dict[int, tuple[float, float]]):
        self.ranges = ranges
        self.counts = {index: np.zeros(_BINS, dtype=np.int64) for index in ranges}

    def add(self, index: int, values: np.ndarray) -> None:
        low, high = self.ranges[index]
        if high <= low:
            return
        counts, _ = np.histogram(values.ravel(), bins=_BINS, range=(low, high))
        self.counts[index] += counts

    def percentile_range(self, index: int, percentile: float) -> tuple[float, float]:
        low, high = self.ranges[index]
        counts = self.counts[index]
        total = counts.sum()
        if total == 0 or high <= low:
            return min(low, 0.0), max(high, 0.0)
        cumulative = np.cumsum(counts)
        edges = np.linspace(low, high, _BINS + 1)
        tail = (100.0 - percentile) / 100.0
        # The bins holding the tail-th and (1 - tail)-th fractions of the values (a hair below, against rounding).
        low_bin = int(np.searchsorted(cumulative, tail * total - 1e-6, side="left"))
        high_bin = int(np.searchsorted(cumulative, (1.0 - tail) * total - 1e-6, side="left"))
        new_low, new_high = edges[low_bin], edges[min(high_bin + 1, _BINS)]
        return min(float(new_low), 0.0), max(float(new_high), 0.0)


def convert_trained(converter: tf.lite.TFLiteConverter, int8_io: bool = False) -> bytes:
    """Converts a quantization-aware model to full-integer int8 with the ranges it trained (its FakeQuant ops).

    No representative dataset: every tensor's scale and zero point come from the
    model. (The converter refuses `TFLITE_BUILTINS_INT8` without a representative
    dataset, so integer-only is not enforced here: `kdistill.quantize` puts a
    range on every tensor, and its tests check the file has no float tensor.)
    """
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def quantize_int8(
    converter: tf.lite.TFLiteConverter,
    images: Iterable[np.ndarray],
    method: str = "minmax",
    percentile: float = 99.99,
    int8_io: bool = False,
) -> bytes:
    """Converts to a full-integer int8 flatbuffer with the chosen activation calibration.

    Args:
        converter: a `TFLiteConverter` for the float model (its optimisations and
            representative dataset are set here).
        images: calibration images, each of the model's input shape without the batch axis.
        method: one of `METHODS`.
        percentile: for `percentile`, the upper percentile kept (the lower one is `100 - percentile`).
        int8_io: int8 model input and output (else float, quantised inside the model).

    Returns:
        The `.tflite` flatbuffer.
    """
    check(method, percentile)
    images = [np.asarray(image, dtype=np.float32) for image in images]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if method == "minmax":
        return converter.convert()

    mlir_quantize, flatbuffer_utils = _private_api()
    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    graph = model.subgraphs[0]
    boundary = set(int(i) for i in graph.inputs) | set(int(i) for i in graph.outputs)
    ranges = {}
    for index, tensor in enumerate(graph.tensors):
        stats = tensor.quantization
        if index in boundary or stats is None or stats.min is None or stats.max is None or len(stats.min) != 1:
            continue
        ranges[index] = (float(stats.min[0]), float(stats.max[0]))
    histograms = _Histograms(ranges)
    with warnings.catch_warnings():  # preserving every tensor is what calibration needs, not a debugging slip
        warnings.simplefilter("ignore", UserWarning)
        interpreter = interpreter_class()(model_content=bytes(calibrated), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    for image in images:
        interpreter.set_tensor(input_index, image[None, ...])
        interpreter.invoke()
        for index in ranges:
            histograms.add(index, interpreter.get_tensor(index))
    narrowed = 0
    for index, (low, high) in ranges.items():
        new_low, new_high = histograms.percentile_range(index, percentile)
        stats = graph.tensors[index].quantization
        stats.min = np.array([new_low], dtype=np.float32)
        stats.max = np.array([new_high], dtype=np.float32)
        narrowed += (new_high - new_low) < 0.99 * (high - low)
    logger.info("Percentile calibration (p=%s) narrowed %d of %d activation ranges.", percentile, narrowed, len(ranges))
    io_type = tf.int8 if int8_io else tf.float32
    return mlir_quantize(
        bytes(flatbuffer_utils.convert_object_to_bytearray(model)),
        False,
        input_data_type=io_type,
        output_data_type=io_type,
    )
