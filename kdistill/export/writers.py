"""Writers: the student as a SavedModel for TF Serving, TFLite (float32, float16, dynamic range, int8, int16x8) or ONNX.

Every writer builds into a temporary folder next to the target and moves the
result into place only when it is complete (`kdistill.files`), so a
failure leaves no half-written model behind. Only the student is exported: passing a
`FeatureDistiller` exports `distiller.student` (and logs that it did).

Example:
    >>> import tempfile, keras
    >>> student = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    >>> folder = tempfile.mkdtemp()
    >>> saved_model(student, folder + "/serving", version=1).endswith("serving/1")
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterable, Iterator

import keras
import numpy as np

from kdistill.backend import LazyTensorFlow, quiet_native_code, tensorflow_module
from kdistill import files
from kdistill.errors import shorten
from kdistill.export import int8_calibration
from kdistill.quantize import rewrite as quantize_rewrite

tf = LazyTensorFlow("exporting models")

__all__ = [
    "saved_model",
    "tflite",
    "onnx",
    "check_formats",
    "check_writable",
    "student_of",
    "TFLITE_MODES",
    "CALIBRATED_MODES",
]

logger = logging.getLogger(__name__)

#: mode -> what the converter does
TFLITE_MODES = {
    "float32": "no quantisation",
    "float16": "weights stored as float16",
    "dynamic": "dynamic-range: int8 weights, float activations",
    "int8": "full-integer: int8 weights and activations (needs a representative dataset)",
    "int16x8": "integer-only with int16 activations and int8 weights (TFLite's experimental 16x8 mode; needs a representative dataset; slower kernels)",
}

#: TFLite modes whose activation ranges are calibrated on representative images
CALIBRATED_MODES = ("int8", "int16x8")


def student_of(model) -> keras.Model:
    """The model to export: a distiller's student, or the model itself."""
    student = getattr(model, "student", None)
    if isinstance(student, keras.Model) and hasattr(model, "teacher"):
        logger.info("Exporting the distiller's student only (no teacher, no projections).")
        return student
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a Keras model or a FeatureDistiller, received {type(model).__name__}.")
    return model


def check_writable(folder: str) -> None:
    """Raises a clear error when `folder` (or the nearest existing folder above it) cannot be written."""
    folder = os.path.abspath(folder or ".")
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise NotADirectoryError(
            f"Cannot write under {folder!r}: {probe!r} is a file, not a folder. Choose another output path."
        )
    if not os.access(probe, os.W_OK):
        raise PermissionError(f"Cannot write under {folder!r}: {probe!r} is not writable. Choose another output path.")


def saved_model(model, base_path: str, version: int = 1) -> str:
    """Exports a SavedModel with a `serving_default` signature in TF Serving's layout.

    The signature takes float32 RGB pixels in [0, 255] of the student's input
    shape (preprocessing is folded into the model) and returns logits.

    Args:
        model: a student, or a `FeatureDistiller` (its student is exported).
        base_path: TF Serving's model base path; the model goes to `base_path/<version>`.
        version: positive integer version folder.

    Returns:
        The version folder.
    """
    tensorflow_module("exporting models")  # fail first, with the install line, where TensorFlow is missing
    student = student_of(model)
    if int(version) < 1:
        raise ValueError(f"version must be a positive integer, received {version!r}.")
    check_writable(base_path)
    target = os.path.join(base_path, str(int(version)))
    files.check_free_space(base_path, _weight_bytes(student), "the SavedModel", hint=_FULL_DISK_HINT)
    with files.new_folders(base_path), files.staging_folder(base_path, prefix=".export-") as staging:
        export_dir = os.path.join(staging, "model")
        archive = keras.export.ExportArchive()
        archive.track(student)
        signature = [tf.TensorSpec((None, *student.input_shape[1:]), tf.float32, name="images")]
        archive.add_endpoint(
            "serving_default", lambda images: {"logits": student(images, training=False)}, input_signature=signature
        )
        with _full_disk_named("the SavedModel", target):
            archive.write_out(export_dir, verbose=False)
        files.replace(export_dir, target)
    return target


_FULL_DISK_HINT = "Free some space or choose another --output-dir; an earlier export there is kept."


def _weight_bytes(model: keras.Model) -> int:
    """What the model's weights take on disk, uncompressed: a floor for any file holding them."""
    return sum(
        int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize for v in model.weights
    )


@contextlib.contextmanager
def _full_disk_named(what: str, target: str) -> Iterator[None]:
    """TensorFlow reports a full disk as `ResourceExhaustedError` (not an OSError) naming its staging path: say it in the user's words."""
    try:
        yield
    except tf.errors.ResourceExhaustedError as error:
        first = (str(getattr(error, "message", error)).strip().splitlines() or [type(error).__name__])[0]
        # "<staging path>; No space left on device": the path is ours, not the user's
        detail = shorten(first.rsplit("; ", 1)[-1])
        raise files.InsufficientSpaceError(
            f"Not enough disk space to write {what} {target!r} ({detail}). {_FULL_DISK_HINT}"
        ) from error


def _representative_images(dataset, count: int) -> list[np.ndarray]:
    """Up to `count` single images from `(images, labels)` or image batches."""
    images = []
    for batch in dataset:
        batch_images = batch[0] if isinstance(batch, (tuple, list)) else batch
        images.extend(np.asarray(batch_images, dtype=np.float32))
        if len(images) >= count:
            break
    if not images:
        raise ValueError(
            "The representative dataset is empty: integer (int8, int16x8) calibration needs real images (e.g. the validation split)."
        )
    return images[:count]


def tflite(
    model,
    path: str,
    quantize: str = "float32",
    representative: Iterable | None = None,
    representative_count: int = 500,
    int8_io: bool = False,
    calibration: str = "minmax",
    percentile: float = 99.99,
    saved_model_dir: str | None = None,
) -> str:
    """Converts the student to a TFLite flatbuffer.

    Args:
        model: a student, or a `FeatureDistiller`.
        path: the `.tflite` file to write.
        quantize: one of `TFLITE_MODES`: float32, float16, dynamic, int8, int16x8.
        representative: for int8 and int16x8, a dataset of `(images, labels)`
            or images batches (e.g. the validation pipeline) used to calibrate ranges.
        representative_count: how many images calibrate the ranges.
        int8_io: for int8, make the model's input and output int8 too (else float).
        calibration: for int8, how activation ranges are set: "minmax" (the
            converter's own), "percentile" (each inner activation's range cut
            to its [100 - p, p] percentiles, so that rare outliers do not coarsen
            every other value) or "trained" (a quantization-aware model's own
            ranges, see `kdistill.quantize`; chosen by itself for such a model,
            which needs no representative images). See `kdistill.export.int8_calibration`.
        percentile: p for percentile calibration.
        saved_model_dir: a SavedModel that `saved_model()` wrote from this
            student, converted as it is (several conversions of one student
            then share one export); by default the student is exported anew.

    Returns:
        `path`.
    """
    tensorflow_module("exporting models")  # fail first, with the install line, where TensorFlow is missing
    student = student_of(model)
    trained, calibration = _check_tflite_mode(student, quantize, calibration, percentile, representative)
    images = (
        _representative_images(representative, representative_count)
        if quantize in CALIBRATED_MODES and not trained
        else None
    )
    folder = os.path.dirname(os.path.abspath(path))
    check_writable(folder)
    with files.new_folders(folder), files.staging_folder(folder, prefix=".export-") as staging:
        exported = saved_model_dir or saved_model(student, staging, version=1)
        converter = tf.lite.TFLiteConverter.from_saved_model(exported)
        _set_converter_mode(converter, quantize, images)
        flatbuffer = _convert(converter, quantize, trained, images, calibration, percentile, int8_io)
        staged_file = os.path.join(staging, "model.tflite")
        with open(staged_file, "wb") as handle:
            handle.write(flatbuffer)
        files.replace(staged_file, path)
    return path


def _check_tflite_mode(
    student: keras.Model, quantize: str, calibration: str, percentile: float, representative: Iterable | None
) -> tuple[bool, str]:
    """Whether `student` is quantization-aware, and the calibration its conversion uses; raises on a mode it cannot take."""
    if quantize not in TFLITE_MODES:
        raise ValueError(f"Unknown quantize={quantize!r}; use one of {', '.join(TFLITE_MODES)}.")
    int8_calibration.check(calibration, percentile)
    trained = quantize_rewrite.is_quantized(student)
    if calibration == "trained":
        quantize_rewrite.check_quantized(student)
    if trained and quantize != "int8":
        raise ValueError(
            f"{student.name!r} is quantization-aware: it converts to int8 only, with its trained ranges. "
            f"Export the float student it was made from as {quantize}."
        )
    if trained and calibration != "trained":
        logger.info(
            "%s is quantization-aware: int8 uses its trained ranges (no calibration on representative images).",
            student.name,
        )
        calibration = "trained"
    if quantize in CALIBRATED_MODES and representative is None and not trained:
        raise ValueError(
            f"quantize={quantize!r} needs representative=<dataset of real images> to calibrate activation ranges."
        )
    return trained, calibration


def _set_converter_mode(converter, quantize: str, images: list[np.ndarray] | None) -> None:
    """The converter's optimizations for float16, dynamic and int16x8 (int8 sets its own in `int8_calibration`)."""
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int16x8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = int8_calibration.representative_dataset(images)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]


def _convert(
    converter,
    quantize: str,
    trained: bool,
    images: list[np.ndarray] | None,
    calibration: str,
    percentile: float,
    int8_io: bool,
) -> bytes:
    """The flatbuffer; a failed conversion is a ValueError naming the mode."""
    try:
        with quiet_native_code():  # the converter prints "fully_quantize: 0, ..." to fd 2
            if trained:
                return int8_calibration.convert_trained(converter, int8_io=int8_io)
            if quantize == "int8":
                return int8_calibration.quantize_int8(
                    converter, images, method=calibration, percentile=percentile, int8_io=int8_io
                )
            return converter.convert()
    except Exception as error:
        raise ValueError(
            f"TFLite conversion ({quantize}) failed: {error}. Ops without a TFLite kernel cannot be exported as {quantize}."
        ) from error


def onnx(model, path: str, opset: int = 17) -> str:
    """Converts the student to ONNX with `tf2onnx` (the optional `onnx` extra: `pip install "kdistill[onnx]"`).

    The graph takes float32 `images` (raw pixels in [0, 255], batch dimension
    free) and returns logits, like the SavedModel's signature.
    """
    tensorflow_module("exporting models")  # fail first, with the install line, where TensorFlow is missing
    student = student_of(model)
    try:
        import tf2onnx
    except ImportError:
        raise ImportError(
            'ONNX export needs tf2onnx: pip install "kdistill[onnx]" (tf2onnx 1.17, onnx, onnxruntime).'
        ) from None
    folder = os.path.dirname(os.path.abspath(path))
    check_writable(folder)
    with files.new_folders(folder), files.staging_folder(folder, prefix=".export-") as staging:
        signature = (tf.TensorSpec((None, *student.input_shape[1:]), tf.float32, name="images"),)
        function = tf.function(lambda images: student(images, training=False))
        staged_file = os.path.join(staging, "model.onnx")
        try:
            tf2onnx.convert.from_function(function, input_signature=signature, opset=opset, output_path=staged_file)
        except Exception as error:
            raise ValueError(
                f"ONNX conversion failed: {error}. Ops without an ONNX equivalent cannot be exported."
            ) from error
        files.replace(staged_file, path)
    return path


def check_formats(formats: Iterable[str]) -> list[str]:
    """Raises a clear error for a format `export_all` does not know."""
    formats = list(formats)
    if not formats:
        raise ValueError(f"No export format was given; choose from saved_model, onnx, {', '.join(TFLITE_MODES)}.")
    unknown = sorted(set(formats) - {"saved_model", "onnx", *TFLITE_MODES})
    if unknown:
        raise ValueError(
            f"Unknown export format(s) {unknown}; choose from saved_model, onnx, {', '.join(TFLITE_MODES)}."
        )
    return formats
