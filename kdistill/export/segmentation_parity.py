"""Parity report for segmenters: does each exported file predict the masks the Keras student predicts?

Per format: size, mean IoU against the true masks, pixel agreement (the share
of pixels whose predicted class equals the Keras student's), the largest logit
difference and the single-image latency. `export_segmenter` writes the formats
(through `export_all`) and this report; `export_all`'s own report is for
classifiers and refuses segmenters.

Example:
    >>> row = {"size_mb": 0.1, "parameters": 900, "mean_iou": 0.41, "pixel_accuracy": 0.9, "pixel_agreement": 0.995,
    ...        "max_abs_diff": 0.2, "latency_ms": 0.4}
    >>> print(format_segmentation_report({"examples": 8, "formats": {"tflite_int8": row}}).splitlines()[-1])
    | tflite_int8 | 0.100 | 900 | 41.00% | 90.00% | 99.50% | 2.00e-01 | 0.40 |
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from kdistill.export.parity import collect_batches, compare_formats, export_all, report_names
from kdistill.export.writers import student_of
from kdistill.files import write_json
from kdistill.segmentation_metrics import IGNORE_LABEL, confusion_matrix, segmentation_report

__all__ = [
    "collect_masks",
    "segmentation_parity_report",
    "format_segmentation_report",
    "export_segmenter",
    "AGREEMENT_TARGET",
]

#: pixel agreement with the Keras student below which the report warns about a quantised format
AGREEMENT_TARGET = 0.98


def collect_masks(dataset, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` images and masks from `(images, masks)` batches."""
    images, masks = collect_batches(dataset, limit, what="masks")
    return images, masks[..., 0] if masks.ndim == 4 else masks


def segmentation_parity_report(
    model,
    files: dict[str, str],
    images,
    masks,
    class_names: Sequence[str] | None = None,
    ignore_label: int | None = IGNORE_LABEL,
    json_path: str | None = None,
) -> dict:
    """Mean IoU, pixel accuracy, pixel agreement with Keras, largest logit difference and latency of each exported segmenter.

    Args:
        model: the Keras segmenter (or distiller) the files were exported from.
        files: `{format name: path}` of `.tflite` / `.onnx` files or SavedModel folders.
        images: test images `(N, H, W, 3)` as the model takes them.
        masks: their masks `(N, H, W)` at the logits' size.
        class_names: one name per class, kept in the report.
        ignore_label: the mask value no metric counts.
        json_path: also write the report there.
    """
    images, masks = np.asarray(images, np.float32), np.asarray(masks)

    def masks_and_agreement(logits, keras_logits) -> dict:
        predicted = logits.argmax(-1)
        report = segmentation_report(confusion_matrix(masks, predicted, int(keras_logits.shape[-1]), ignore_label))
        return {
            "mean_iou": report["mean_iou"],
            "pixel_accuracy": report["pixel_accuracy"],
            "pixel_agreement": float((predicted == keras_logits.argmax(-1)).mean()),
        }

    rows = compare_formats(student_of(model), files, images, masks_and_agreement)
    report = {
        "task": "segmentation",
        "examples": int(len(images)),
        "class_names": list(class_names) if class_names else None,
        "formats": rows,
    }
    if json_path:
        write_json(json_path, report)
    return report


def format_segmentation_report(report: dict, target: float = AGREEMENT_TARGET) -> str:
    """The report as a Markdown table, with a note for formats whose pixel agreement is below `target`."""
    lines = [
        f"Parity on {report['examples']} test images (agreement = same class per pixel as the Keras segmenter)",
        "",
        "| format | size (MB) | parameters | mIoU | pixel accuracy | pixel agreement | max abs diff | latency (ms, 1 image) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    below = []
    for name, row in report["formats"].items():
        size = "-" if row["size_mb"] is None else f"{row['size_mb']:.3f}"
        lines.append(
            f"| {name} | {size} | {row['parameters']:,} | {100 * row['mean_iou']:.2f}% | {100 * row['pixel_accuracy']:.2f}% | "
            f"{100 * row['pixel_agreement']:.2f}% | {row['max_abs_diff']:.2e} | {row['latency_ms']:.2f} |"
        )
        if row["pixel_agreement"] < target:
            below.append(
                f"{name} agrees with Keras on {100 * row['pixel_agreement']:.2f}% of the pixels (< {100 * target:g}%)"
            )
    if below:
        lines += ["", "Note: " + "; ".join(below) + ". Try int16x8, the other calibration, or a wider student."]
    return "\n".join(lines)


def export_segmenter(
    model,
    output_dir: str,
    formats: Iterable[str] = ("saved_model", "float32", "int8"),
    representative=None,
    test=None,
    class_names: Sequence[str] | None = None,
    ignore_label: int | None = IGNORE_LABEL,
    limit: int = 200,
    **options,
) -> dict:
    """Exports a segmenter in several formats (`export_all`) and, given `test` batches `(images, masks)`, writes its parity report.

    Args:
        model: a segmenter, or a `FeatureDistiller` of segmenters (its student is exported).
        output_dir: the export folder; the report goes to `output_dir/report.json`.
        formats, representative: as `export_all` (int8 calibrates on `representative` batches).
        test: `(images, masks)` batches for the report, or None.
        class_names, ignore_label: as `segmentation_parity_report`.
        limit: test images used by the report.
        **options: other `export_all` options (`version`, `int8_io`, `calibration`, `percentile`).

    Returns:
        `{"files": {format: path}, "report": parity report or None}`.
    """
    files = export_all(model, output_dir, formats=formats, representative=representative, test=None, **options)["files"]
    if test is None:
        return {"files": files, "report": None}
    images, masks = collect_masks(test, limit)
    report = segmentation_parity_report(model, report_names(files), images, masks, class_names, ignore_label)
    report["files"] = files
    write_json(os.path.join(output_dir, "report.json"), report)
    return {"files": files, "report": report}
