"""Running a .tflite file: LiteRT's interpreter (or TensorFlow's), predictions with (de)quantised inputs and outputs, latency.

Both the int8 calibration (which reads every tensor of a calibrated model) and
the parity report run TFLite files; they share these helpers, which import
nothing else from kdistill's export package.

Example:
    >>> latency_ms(lambda image: image, 0.0, repeats=3) >= 0.0
    True
"""

from __future__ import annotations

import time

import numpy as np

from kdistill.backend import LazyTensorFlow, quiet_native_code

tf = LazyTensorFlow("running TFLite files")

__all__ = ["interpreter_class", "load_interpreter", "tflite_predict", "tflite_runner", "latency_ms"]


def interpreter_class():
    """LiteRT's TFLite interpreter (`pip install "kdistill[litert]"`), else TensorFlow's deprecated `tf.lite.Interpreter`."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return tf.lite.Interpreter
    return Interpreter


def load_interpreter(path: str):
    """An interpreter for the .tflite file at `path`, its tensors allocated."""
    with quiet_native_code():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to fd 2
        interpreter = interpreter_class()(model_path=path)
        interpreter.allocate_tensors()
    return interpreter


def tflite_predict(path: str, images: np.ndarray) -> np.ndarray:
    """Runs a .tflite model image by image; quantised inputs/outputs are (de)quantised here."""
    interpreter = load_interpreter(path)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    outputs = []
    for image in np.asarray(images, dtype=np.float32):
        value = image[None, ...]
        if input_detail["dtype"] != np.float32:
            scale, zero_point = input_detail["quantization"]
            value = np.clip(np.round(value / scale + zero_point), -128, 127).astype(input_detail["dtype"])
        interpreter.set_tensor(input_detail["index"], value)
        interpreter.invoke()
        out = interpreter.get_tensor(output_detail["index"])
        if output_detail["dtype"] != np.float32:
            scale, zero_point = output_detail["quantization"]
            out = (out.astype(np.float32) - zero_point) * scale
        outputs.append(out[0])
    return np.stack(outputs)


def tflite_runner(path: str):
    """A function running a .tflite file on one image (for latency: its output is not read)."""
    interpreter = load_interpreter(path)
    detail = interpreter.get_input_details()[0]

    def run_one(image):
        value = image if detail["dtype"] == np.float32 else np.zeros(detail["shape"], detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()

    return run_one


def latency_ms(function, image, repeats: int = 30) -> float:
    """Median milliseconds of `function(image)` over `repeats` calls, after one warm-up call."""
    function(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)
