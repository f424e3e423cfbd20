"""Ship the student: writers (SavedModel, TFLite, ONNX), the parity report, int8 calibration.

* `writers` — `saved_model`, `tflite`, `onnx` (each written whole or not at all, see `kdistill.files`);
* `parity` — `parity_report`, `format_report`, `export_all` (write every format and check it against Keras);
* `segmentation_parity` — `export_segmenter` and its parity report on masks (mIoU, pixel agreement) for segmenters;
* `int8_calibration` — min/max and percentile activation ranges for int8;
* `tflite_runtime` — `tflite_predict`, `tflite_runner`, `latency_ms` (running a .tflite file).

Example:
    >>> import tempfile, keras
    >>> from kdistill import export
    >>> student = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    >>> export.saved_model(student, tempfile.mkdtemp() + "/serving", version=1).endswith("serving/1")
    True
"""

from kdistill.export.parity import (
    AGREEMENT_TARGET,
    collect_images,
    export_all,
    format_report,
    keras_latency_ms,
    onnx_predict,
    parity_report,
)
from kdistill.export.segmentation_parity import export_segmenter, format_segmentation_report, segmentation_parity_report
from kdistill.export.tflite_runtime import latency_ms, tflite_predict, tflite_runner
from kdistill.export.writers import CALIBRATED_MODES, TFLITE_MODES, check_formats, onnx, saved_model, student_of, tflite

__all__ = [
    "collect_images",
    "keras_latency_ms",
    "latency_ms",
    "tflite_runner",
    "saved_model",
    "tflite",
    "onnx",
    "onnx_predict",
    "check_formats",
    "TFLITE_MODES",
    "tflite_predict",
    "parity_report",
    "export_all",
    "format_report",
    "student_of",
    "AGREEMENT_TARGET",
    "CALIBRATED_MODES",
    "export_segmenter",
    "segmentation_parity_report",
    "format_segmentation_report",
]
