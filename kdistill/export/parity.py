"""Parity report: does each exported file compute what the Keras student computes? Size, accuracy, agreement, latency.

Example:
    >>> row = {"size_mb": 0.6, "parameters": 1000, "top1": 0.79, "agreement": 0.99, "max_abs_diff": 0.5, "latency_ms": 0.03}
    >>> print(format_report({"examples": 10, "formats": {"tflite_int8": row}}).splitlines()[-1])
    | tflite_int8 | 0.600 | 1,000 | 79.00% | 99.00% | 5.00e-01 | 0.03 |
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Iterable, Sequence

import numpy as np

from kdistill.backend import LazyTensorFlow
from kdistill.export.tflite_runtime import latency_ms, tflite_predict, tflite_runner
from kdistill.export.writers import check_formats, check_writable, onnx, saved_model, student_of, tflite
from kdistill.files import new_folders, staging_folder, write_json, write_text
from kdistill.models import checks

tf = LazyTensorFlow("the parity report")

__all__ = [
    "onnx_predict",
    "collect_batches",
    "collect_images",
    "keras_latency_ms",
    "compare_formats",
    "report_names",
    "parity_report",
    "format_report",
    "export_all",
    "AGREEMENT_TARGET",
]

logger = logging.getLogger(__name__)

#: top-1 agreement with the Keras student below which the report warns about a quantised format
AGREEMENT_TARGET = 0.98


def format_report(report: dict, target: float = AGREEMENT_TARGET) -> str:
    """The parity report as a Markdown table (one row per format), with a note on formats below `target` agreement.

    Example:
        >>> row = {"size_mb": 0.6, "parameters": 1000, "top1": 0.79, "agreement": 0.975, "max_abs_diff": 5.0, "latency_ms": 0.03}
        >>> print(format_report({"examples": 1000, "formats": {"tflite_int8": row}}).splitlines()[-1].split(". ")[0])
        Note: tflite_int8 agrees with Keras on 97.50% of the images (< 98%)
    """
    lines = [
        f"Parity on {report['examples']} test images (agreement = same top-1 as the Keras student)",
        "",
        "| format | size (MB) | parameters | top-1 | agreement | max abs diff | latency (ms, 1 image) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    below = []
    for name, row in report["formats"].items():
        size = "-" if row["size_mb"] is None else f"{row['size_mb']:.3f}"
        lines.append(
            f"| {name} | {size} | {row['parameters']:,} | {100 * row['top1']:.2f}% | {100 * row['agreement']:.2f}% | "
            f"{row['max_abs_diff']:.2e} | {row['latency_ms']:.2f} |"
        )
        if row["agreement"] < target:
            below.append(
                f"{name} agrees with Keras on {100 * row['agreement']:.2f}% of the images (< {100 * target:g}%)"
            )
    if "keras_int8_aware" in report["formats"]:
        lines += [
            "",
            "keras_int8_aware is the quantization-aware twin (kdistill.quantize) in Keras; tflite_int8_aware is its int8 file "
            "(trained ranges, no calibration), and its agreement is with keras_int8_aware.",
        ]
    if below:
        int16x8 = report["formats"].get("tflite_int16x8")
        tries = "the other --calibration, more --calibration-images, or a wider student"
        if int16x8 is None or int16x8["agreement"] >= target:  # not advised where it fell short too
            tries = "int16x8 (integer-only, int16 activations), " + tries
        lines += ["", "Note: " + "; ".join(below) + f". Try {tries}."]
    return "\n".join(lines)


def onnx_predict(path: str, images: np.ndarray) -> np.ndarray:
    """Runs an .onnx model with onnxruntime on a batch of images."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.asarray(images, np.float32)})[0]


def collect_batches(dataset, limit: int, what: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` images and their targets (labels, masks) from `(images, targets)` batches, as they come."""
    images, targets, count = [], [], 0
    for batch_images, batch_targets in dataset:
        images.append(np.asarray(batch_images, np.float32))
        targets.append(np.asarray(batch_targets))
        count += len(images[-1])
        if count >= limit:
            break
    if not images:
        raise ValueError(f"The evaluation dataset is empty: the parity report needs test images and {what}.")
    return np.concatenate(images)[:limit], np.concatenate(targets)[:limit]


def collect_images(dataset, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` images and labels from `(images, labels)` batches."""
    images, labels = collect_batches(dataset, limit)
    return images, labels.reshape(-1)


def _runner(path: str):
    """`(batch -> logits, one image -> anything, size in MB)` for a SavedModel folder, an .onnx or a .tflite file."""
    if os.path.isdir(path):
        signature = tf.saved_model.load(path).signatures["serving_default"]
        run = lambda images: signature(images=tf.constant(images))["logits"].numpy()  # noqa: E731
        batch = lambda images: np.concatenate([run(images[i : i + 256]) for i in range(0, len(images), 256)])  # noqa: E731
        total = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
        return batch, run, total / 1e6
    size = os.path.getsize(path) / 1e6
    if path.endswith(".onnx"):
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        run = lambda images: session.run(None, {name: images})[0]  # noqa: E731
        return run, run, size
    return (lambda images: tflite_predict(path, images)), tflite_runner(path), size


def keras_latency_ms(model, image) -> float:
    """Single-image latency of a Keras model's compiled graph (an eager call mostly measures Python overhead)."""
    single = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return latency_ms(lambda x: single(x).numpy(), tf.constant(image))


def compare_formats(
    student, files: dict[str, str], images: np.ndarray, score: Callable[[np.ndarray, np.ndarray], dict]
) -> dict:
    """One row per format (the Keras student first): size, parameters, `score`'s metrics, largest logit difference, latency.

    The one loop every parity report runs: the Keras student and each exported
    file predict `images`; `score(logits, keras_logits)` gives a format's
    metrics (top-1 and agreement for classifiers, mIoU and pixel agreement for
    segmenters).

    Args:
        student: the Keras model the files were exported from.
        files: `{format name: path}` of `.tflite` / `.onnx` files or SavedModel folders.
        images: the test images, as the model takes them.
        score: `(logits, keras_logits) -> {metric: value}`.
    """
    keras_logits = np.asarray(student.predict(images, verbose=0))
    parameters = int(student.count_params())
    rows = {
        "keras": {
            "size_mb": None,
            "parameters": parameters,
            **score(keras_logits, keras_logits),
            "max_abs_diff": 0.0,
            "latency_ms": round(keras_latency_ms(student, images[:1]), 3),
        }
    }
    for name, path in files.items():
        predict, run_one, size_mb = _runner(path)
        logits = np.asarray(predict(images))
        rows[name] = {
            "size_mb": round(size_mb, 3),
            "parameters": parameters,
            **score(logits, keras_logits),
            "max_abs_diff": float(np.abs(logits - keras_logits).max()),
            "latency_ms": round(latency_ms(run_one, images[:1]), 3),
        }
    return rows


def report_names(files: dict[str, str]) -> dict[str, str]:
    """`export_all`'s files under their report names: `saved_model`, `onnx`, `tflite_<mode>`."""
    return {(name if name in ("saved_model", "onnx") else f"tflite_{name}"): path for name, path in files.items()}


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
    _refuse_segmenter(student)
    images, labels = collect_images(dataset, limit)

    def top1(logits, keras_logits) -> dict:
        return {
            "top1": float((logits.argmax(-1) == labels).mean()),
            "agreement": float((logits.argmax(-1) == keras_logits.argmax(-1)).mean()),
        }

    report = {"examples": int(len(labels)), "formats": compare_formats(student, files, images, top1)}
    if json_path:
        write_json(json_path, report)
    return report


def _refuse_segmenter(student) -> None:
    if checks.dense_logits(student):
        raise ValueError(
            f"{student.name!r} is a segmenter (logits {tuple(student.outputs[0].shape)}): its parity report compares masks. "
            "Use kdistill.export.segmentation_parity.export_segmenter(model, output_dir, test=...), or export_all(..., test=None)."
        )


def export_all(
    model,
    output_dir: str,
    formats: Iterable[str] = ("saved_model", "float32", "int8"),
    representative=None,
    test=None,
    version: int = 1,
    int8_io: bool = False,
    limit: int = 1000,
    calibration: str = "minmax",
    percentile: float = 99.99,
    class_names: Sequence[str] | None = None,
    calibration_images: int = 500,
) -> dict:
    """Exports the student in several formats and checks each against Keras.

    Writes `output_dir/serving/<version>/` (SavedModel),
    `output_dir/student_<mode>.tflite`, `output_dir/labels.txt` (one class name
    per line, in the order of the model's outputs) when `class_names` is given,
    then, when `test` is given, the parity report to `output_dir/report.json`.
    Every file takes the images as the Keras student does: float32
    `(batch, height, width, 3)` RGB pixels in [0, 255] (int8 in [-128, 127],
    the pixel value minus 128, with `int8_io`), and returns logits.

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
        class_names: the class names, written to `labels.txt`.
        calibration_images: how many `representative` images calibrate int8 and int16x8.

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
    if test is not None:
        _refuse_segmenter(student)
    formats = list(formats)
    check_formats(formats)
    check_writable(output_dir)
    with new_folders(output_dir):  # removed again if the first write fails (a full disk)
        files = _write_all(
            student,
            output_dir,
            formats,
            (representative, calibration_images),
            version,
            int8_io,
            calibration,
            percentile,
        )
        if class_names is not None:
            write_text(os.path.join(output_dir, "labels.txt"), "".join(f"{name}\n" for name in class_names))
    report = None
    if test is not None:
        report = parity_report(student, report_names(files), test, limit=limit)
        report["files"] = files
        write_json(os.path.join(output_dir, "report.json"), report)
    return {"files": files, "report": report}


def _write_all(
    student,
    output_dir: str,
    formats: list,
    representative: tuple,
    version: int,
    int8_io: bool,
    calibration: str,
    percentile: float,
) -> dict:
    """`export_all`'s files: format -> path, in the order asked for; `representative` is (calibration batches, how many images)."""
    (representative, calibration_images), files = representative, {}
    if "saved_model" in formats:
        logger.info("Exporting saved_model ...")
        files["saved_model"] = saved_model(student, os.path.join(output_dir, "serving"), version=version)
    with staging_folder(output_dir, prefix=".savedmodel-") as staging:
        # one SavedModel for every TFLite conversion (each would trace and write its own)
        source = files.get("saved_model")
        for name in (name for name in formats if name != "saved_model"):
            logger.info("Exporting %s ...", name)
            if name == "onnx":
                files[name] = onnx(student, os.path.join(output_dir, "student.onnx"))
                continue
            source = source or saved_model(student, staging, version=1)
            files[name] = tflite(
                student,
                os.path.join(output_dir, f"student_{name}.tflite"),
                quantize=name,
                representative=representative,
                representative_count=calibration_images,
                int8_io=int8_io,
                calibration=calibration,
                percentile=percentile,
                saved_model_dir=source,
            )
    return {name: files[name] for name in formats}  # in the order asked for
