"""Ship the student: SavedModel for TF Serving, TFLite (float32, float16, dynamic range, int8, int16x8), parity report.

Every writer builds into a temporary folder next to the target and moves the
result into place only when it is complete, so a failure leaves no
half-written model behind. Only the student is exported: passing a
`FeatureDistiller` exports `distiller.student` (and logs that it did).

Example:
    >>> import tempfile, keras
    >>> student = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    >>> folder = tempfile.mkdtemp()
    >>> saved_model(student, folder + "/serving", version=1).endswith("serving/1")
    True
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Iterable

import keras
import numpy as np
import tensorflow as tf

from kdistill import int8_calibration

__all__ = ["saved_model", "tflite", "onnx", "onnx_predict", "check_formats", "TFLITE_MODES", "tflite_predict", "parity_report", "export_all", "format_report", "student_of", "AGREEMENT_TARGET", "CALIBRATED_MODES"]

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


def _check_writable(folder: str) -> None:
    folder = os.path.abspath(folder or ".")
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise NotADirectoryError(f"Cannot write under {folder!r}: {probe!r} is a file, not a folder. Choose another output path.")
    if not os.access(probe, os.W_OK):
        raise PermissionError(f"Cannot write under {folder!r}: {probe!r} is not writable. Choose another output path.")


def _atomic_move(source: str, target: str) -> None:
    if os.path.isdir(target):
        shutil.rmtree(target)
    elif os.path.exists(target):
        os.remove(target)
    os.replace(source, target)


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
    student = student_of(model)
    if int(version) < 1:
        raise ValueError(f"version must be a positive integer, received {version!r}.")
    _check_writable(base_path)
    os.makedirs(base_path, exist_ok=True)
    target = os.path.join(base_path, str(int(version)))
    staging = tempfile.mkdtemp(prefix=".export-", dir=base_path)
    try:
        export_dir = os.path.join(staging, "model")
        archive = keras.export.ExportArchive()
        archive.track(student)
        signature = [tf.TensorSpec((None, *student.input_shape[1:]), tf.float32, name="images")]
        archive.add_endpoint("serving_default", lambda images: {"logits": student(images, training=False)}, input_signature=signature)
        archive.write_out(export_dir, verbose=False)
        _atomic_move(export_dir, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _representative_images(dataset, count: int) -> list[np.ndarray]:
    """Up to `count` single images from `(images, labels)` or image batches."""
    images = []
    for batch in dataset:
        batch_images = batch[0] if isinstance(batch, (tuple, list)) else batch
        images.extend(np.asarray(batch_images, dtype=np.float32))
        if len(images) >= count:
            break
    if not images:
        raise ValueError("The representative dataset is empty: integer (int8, int16x8) calibration needs real images (e.g. the validation split).")
    return images[:count]


def tflite(model, path: str, quantize: str = "float32", representative: Iterable | None = None, representative_count: int = 500,
           int8_io: bool = False, calibration: str = "minmax", percentile: float = 99.99) -> str:
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
            converter's own) or "percentile" (each inner activation's range cut
            to its [100 - p, p] percentiles, so that rare outliers do not coarsen
            every other value). See `kdistill.int8_calibration`.
        percentile: p for percentile calibration.

    Returns:
        `path`.
    """
    student = student_of(model)
    if quantize not in TFLITE_MODES:
        raise ValueError(f"Unknown quantize={quantize!r}; use one of {', '.join(TFLITE_MODES)}.")
    if quantize in CALIBRATED_MODES and representative is None:
        raise ValueError(f"quantize={quantize!r} needs representative=<dataset of real images> to calibrate activation ranges.")
    int8_calibration.check(calibration, percentile)
    images = _representative_images(representative, representative_count) if quantize in CALIBRATED_MODES else None
    folder = os.path.dirname(os.path.abspath(path))
    _check_writable(folder)
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=folder)
    try:
        exported = saved_model(student, staging, version=1)
        converter = tf.lite.TFLiteConverter.from_saved_model(exported)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantize == "int16x8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = int8_calibration.representative_dataset(images)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        try:
            if quantize == "int8":
                flatbuffer = int8_calibration.quantize_int8(converter, images, method=calibration, percentile=percentile, int8_io=int8_io)
            else:
                flatbuffer = converter.convert()
        except Exception as error:  # noqa: BLE001 - the converter raises ConverterError and others
            raise ValueError(f"TFLite conversion ({quantize}) failed: {error}. Ops without a TFLite kernel cannot be exported as {quantize}.") from error
        staged_file = os.path.join(staging, "model.tflite")
        with open(staged_file, "wb") as handle:
            handle.write(flatbuffer)
        _atomic_move(staged_file, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def onnx(model, path: str, opset: int = 17) -> str:
    """Converts the student to ONNX with `tf2onnx` (the optional `onnx` extra: `pip install "kdistill[onnx]"`).

    The graph takes float32 `images` (raw pixels in [0, 255], batch dimension
    free) and returns logits, like the SavedModel's signature.
    """
    student = student_of(model)
    try:
        import tf2onnx
    except ImportError:
        raise ImportError('ONNX export needs tf2onnx: pip install "kdistill[onnx]" (tf2onnx 1.17, onnx, onnxruntime).') from None
    folder = os.path.dirname(os.path.abspath(path))
    _check_writable(folder)
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=folder)
    try:
        signature = (tf.TensorSpec((None, *student.input_shape[1:]), tf.float32, name="images"),)
        function = tf.function(lambda images: student(images, training=False))
        staged_file = os.path.join(staging, "model.onnx")
        try:
            tf2onnx.convert.from_function(function, input_signature=signature, opset=opset, output_path=staged_file)
        except Exception as error:  # noqa: BLE001 - tf2onnx raises many types
            raise ValueError(f"ONNX conversion failed: {error}. Ops without an ONNX equivalent cannot be exported.") from error
        _atomic_move(staged_file, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def onnx_predict(path: str, images: np.ndarray) -> np.ndarray:
    """Runs an .onnx model with onnxruntime on a batch of images."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.asarray(images, np.float32)})[0]


def _interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    return interpreter


def tflite_predict(path: str, images: np.ndarray) -> np.ndarray:
    """Runs a .tflite model image by image; quantised inputs/outputs are (de)quantised here."""
    interpreter = _interpreter(path)
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


def _collect(dataset, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` images and labels from `(images, labels)` batches."""
    images, labels, count = [], [], 0
    for batch_images, batch_labels in dataset:
        images.append(np.asarray(batch_images, np.float32))
        labels.append(np.asarray(batch_labels))
        count += len(images[-1])
        if count >= limit:
            break
    if not images:
        raise ValueError("The evaluation dataset is empty: the parity report needs test images.")
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit].reshape(-1)


def _latency_ms(function, image, repeats: int = 30) -> float:
    function(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def _runner(path: str):
    """`(batch -> logits, one image -> anything, size in MB)` for a SavedModel folder, an .onnx or a .tflite file."""
    if os.path.isdir(path):
        signature = tf.saved_model.load(path).signatures["serving_default"]
        run = lambda images: signature(images=tf.constant(images))["logits"].numpy()  # noqa: E731
        batch = lambda images: np.concatenate([run(images[i:i + 256]) for i in range(0, len(images), 256)])  # noqa: E731
        total = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
        return batch, run, total / 1e6
    size = os.path.getsize(path) / 1e6
    if path.endswith(".onnx"):
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        run = lambda images: session.run(None, {name: images})[0]  # noqa: E731
        return run, run, size
    interpreter = _interpreter(path)
    detail = interpreter.get_input_details()[0]

    def run_one(image):
        value = image if detail["dtype"] == np.float32 else np.zeros(detail["shape"], detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()

    return (lambda images: tflite_predict(path, images)), run_one, size


def parity_report(model, files: dict[str, str], dataset, limit: int = 1000, json_path: str | None = None) -> dict:
    """Size, accuracy, agreement with Keras and single-image latency of each exported model.

    Args:
        model: the Keras student (or distiller) the files were exported from.
        files: `{format name: path}` of `.tflite` / `.onnx` files or SavedModel folders.
        dataset: `(images, labels)` batches, e.g. the test split.
        limit: how many images to compare.
        json_path: also write the report there.
    """
    student = student_of(model)
    images, labels = _collect(dataset, limit)
    keras_logits = np.asarray(student.predict(images, verbose=0))
    keras_top1 = keras_logits.argmax(-1)
    parameters = int(student.count_params())
    # The Keras model's latency is that of its compiled graph (an eager call mostly measures Python overhead).
    single = tf.function(lambda x: student(x, training=False), reduce_retracing=True)
    rows = {"keras": {
        "size_mb": None, "parameters": parameters, "top1": float((keras_top1 == labels).mean()), "agreement": 1.0,
        "max_abs_diff": 0.0, "latency_ms": round(_latency_ms(lambda x: single(x).numpy(), tf.constant(images[:1])), 3),
    }}
    for name, path in files.items():
        predict, run_one, size_mb = _runner(path)
        logits = predict(images)
        rows[name] = {
            "size_mb": round(size_mb, 3), "parameters": parameters,
            "top1": float((logits.argmax(-1) == labels).mean()), "agreement": float((logits.argmax(-1) == keras_top1).mean()),
            "max_abs_diff": float(np.abs(logits - keras_logits).max()), "latency_ms": round(_latency_ms(run_one, images[:1]), 3),
        }
    report = {"examples": int(len(labels)), "formats": rows}
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


def check_formats(formats: Iterable[str]) -> list[str]:
    """Raises a clear error for a format `export_all` does not know."""
    formats = list(formats)
    unknown = sorted(set(formats) - {"saved_model", "onnx", *TFLITE_MODES})
    if unknown:
        raise ValueError(f"Unknown export format(s) {unknown}; choose from saved_model, onnx, {', '.join(TFLITE_MODES)}.")
    return formats


def export_all(model, output_dir: str, formats: Iterable[str] = ("saved_model", "float32", "int8"), representative=None, test=None,
               version: int = 1, int8_io: bool = False, limit: int = 1000, calibration: str = "minmax", percentile: float = 99.99) -> dict:
    """Exports the student in several formats and checks each against Keras.

    Writes `output_dir/serving/<version>/` (SavedModel) and
    `output_dir/student_<mode>.tflite`, then, when `test` is given, the parity
    report to `output_dir/report.json`.

    Args:
        model: a student, or a `FeatureDistiller`.
        output_dir: the export folder.
        formats: any of "saved_model", "onnx" (optional extra) and the `TFLITE_MODES`.
        representative: calibration batches for int8 (e.g. the validation split).
        test: `(images, labels)` batches for the report (e.g. the test split).
        version: TF Serving version folder.
        int8_io: int8 model input/output for the int8 file.
        limit: test images used by the report.
        calibration: int8 activation ranges, "minmax" or "percentile" (see `tflite`).
        percentile: p for percentile calibration.

    Returns:
        `{"files": {format: path}, "report": parity report or None}`.

    Example:
        >>> import keras, tempfile
        >>> student = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
        >>> result = export_all(student, tempfile.mkdtemp(), formats=["saved_model", "float32"])
        >>> sorted(result["files"]), result["report"]
        (['float32', 'saved_model'], None)
    """
    student = student_of(model)
    formats = list(formats)
    check_formats(formats)
    _check_writable(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    files = {}
    for name in formats:
        logger.info("Exporting %s ...", name)
        if name == "saved_model":
            files[name] = saved_model(student, os.path.join(output_dir, "serving"), version=version)
        elif name == "onnx":
            files[name] = onnx(student, os.path.join(output_dir, "student.onnx"))
        else:
            files[name] = tflite(student, os.path.join(output_dir, f"student_{name}.tflite"), quantize=name,
                                 representative=representative, int8_io=int8_io, calibration=calibration, percentile=percentile)
    report = None
    if test is not None:
        named = {(name if name in ("saved_model", "onnx") else f"tflite_{name}"): path for name, path in files.items()}
        report = parity_report(student, named, test, limit=limit)
        report["files"] = files
        with open(os.path.join(output_dir, "report.json"), "w") as handle:
            json.dump(report, handle, indent=2)
    return {"files": files, "report": report}


#: top-1 agreement with the Keras student below which the report warns about a quantised format
AGREEMENT_TARGET = 0.98


def format_report(report: dict, target: float = AGREEMENT_TARGET) -> str:
    """The parity report as a Markdown table (one row per format), with a note on formats below `target` agreement.

    Example:
        >>> row = {"size_mb": 0.6, "parameters": 1000, "top1": 0.79, "agreement": 0.975, "max_abs_diff": 5.0, "latency_ms": 0.03}
        >>> print(format_report({"examples": 1000, "formats": {"tflite_int8": row}}).splitlines()[-1].split(". ")[0])
        Note: tflite_int8 agrees with Keras on 97.50% of the images (< 98%)
    """
    lines = [f"Parity on {report['examples']} test images (agreement = same top-1 as the Keras student)", "",
             "| format | size (MB) | parameters | top-1 | agreement | max abs diff | latency (ms, 1 image) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    below = []
    for name, row in report["formats"].items():
        size = "-" if row["size_mb"] is None else f"{row['size_mb']:.3f}"
        lines.append(f"| {name} | {size} | {row['parameters']:,} | {100 * row['top1']:.2f}% | {100 * row['agreement']:.2f}% | "
                     f"{row['max_abs_diff']:.2e} | {row['latency_ms']:.2f} |")
        if row["agreement"] < target:
            below.append(f"{name} agrees with Keras on {100 * row['agreement']:.2f}% of the images (< {100 * target:g}%)")
    if below:
        lines += ["", "Note: " + "; ".join(below) + ". Try int16x8 (integer-only, int16 activations), the other --calibration, "
                  "or a wider student."]
    return "\n".join(lines)
