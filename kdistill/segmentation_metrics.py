"""Evaluate a segmenter: mean IoU, per-class IoU and pixel accuracy from one confusion matrix (NumPy).

The confusion matrix counts pixels, rows the true class and columns the
predicted one, over every labelled pixel of the set: pixels holding the ignore
label (255 by default) or a negative label are skipped. From it, as in mmseg and
torchmetrics' `JaccardIndex`:

- IoU of class c = `C[c, c] / (row c + column c - C[c, c])`, undefined (None in
  the report, left out of the mean) for a class that is neither in the masks
  nor predicted;
- mean IoU = the mean of the defined IoUs;
- pixel accuracy = `trace(C) / sum(C)`.

Example:
    >>> import numpy as np
    >>> masks = np.array([[[0, 0], [1, 255]]]); predictions = np.array([[[0, 1], [1, 1]]])
    >>> report = segmentation_report(confusion_matrix(masks, predictions, 2), ["background", "item"])
    >>> report["per_class_iou"], round(report["mean_iou"], 4), round(report["pixel_accuracy"], 4)
    ({'background': 0.5, 'item': 0.5}, 0.5, 0.6667)
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from kdistill.models import checks

__all__ = ["IGNORE_LABEL", "confusion_matrix", "iou_per_class", "segmentation_report", "evaluate_segmenter"]

#: mask value of pixels that no metric counts (the default of `FeatureDistiller(ignore_label=...)`)
IGNORE_LABEL = 255


def confusion_matrix(masks, predictions, num_classes: int, ignore_label: int | None = IGNORE_LABEL) -> np.ndarray:
    """Pixel counts `(num_classes, num_classes)`, rows true class, columns predicted, over the labelled pixels of `masks`.

    Args:
        masks: integer masks `(..., H, W)`: class indices, `ignore_label` or negative (skipped).
        predictions: predicted classes, the same shape.
        num_classes: the number of classes.
        ignore_label: mask value to skip (None: only negative values are skipped).

    Raises:
        ValueError: for shapes that differ, or mask or predicted values outside the classes (other than the skipped ones).
    """
    masks, predictions = np.asarray(masks).astype("int64"), np.asarray(predictions).astype("int64")
    if masks.shape != predictions.shape:
        raise ValueError(
            f"masks {masks.shape} and predictions {predictions.shape} must have one shape; resize the predictions to the masks."
        )
    counted = masks >= 0
    if ignore_label is not None:
        counted &= masks != ignore_label
    masks, predictions = masks[counted], predictions[counted]
    for name, values in (("mask", masks), ("predicted", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} values must lie in [0, {num_classes}) besides the ignore label {ignore_label}; received values from "
                f"{values.min()} to {values.max()}. Map them to class indices, or pass num_classes / ignore_label to match."
            )
    return np.bincount(masks * num_classes + predictions, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class from a confusion matrix; NaN for a class neither in the masks nor predicted."""
    confusion = np.asarray(confusion, "float64")
    hits = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, hits / np.maximum(union, 1), np.nan)


def segmentation_report(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """`{"mean_iou", "pixel_accuracy", "per_class_iou": {name: IoU or None}, "pixels"}` from a confusion matrix (JSON-ready)."""
    confusion = np.asarray(confusion)
    names = list(class_names) if class_names is not None else [str(index) for index in range(len(confusion))]
    if len(names) != len(confusion):
        raise ValueError(
            f"{len(names)} class names for {len(confusion)} classes; give one name per class (background included)."
        )
    iou = iou_per_class(confusion)
    total = int(confusion.sum())
    return {
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else None,
        "pixel_accuracy": float(np.trace(confusion) / total) if total else None,
        "per_class_iou": {name: (None if np.isnan(value) else float(value)) for name, value in zip(names, iou)},
        "pixels": total,
    }


def evaluate_segmenter(
    model: keras.Model,
    images,
    masks,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
    ignore_label: int | None = IGNORE_LABEL,
) -> dict:
    """Mean IoU, per-class IoU and pixel accuracy of a segmenter on images and their masks.

    The model's logit maps are resized (bilinear) to the masks' size when they
    differ, so the metrics are counted at the masks' resolution.

    Args:
        model: a segmenter returning logits `(batch, H, W, classes)` (a saved
            `FeatureDistiller` is evaluated through its student).
        images: `(N, height, width, channels)` as the model takes them.
        masks: integer masks `(N, H, W)` (or `(N, H, W, 1)`).
        class_names: one name per class (e.g. `kdistill.data.SCENE_CLASSES`); None numbers them.
        batch_size: images per forward pass.
        ignore_label: mask value of pixels to skip.

    Returns:
        `segmentation_report`'s dict plus `"examples"` and `"classes"`.

    Example:
        >>> import numpy as np, keras
        >>> inputs = keras.Input((8, 8, 3)); model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
        >>> report = evaluate_segmenter(model, np.zeros((2, 8, 8, 3), "float32"), np.zeros((2, 8, 8), "uint8"))
        >>> sorted(report)
        ['classes', 'examples', 'mean_iou', 'per_class_iou', 'pixel_accuracy', 'pixels']
    """
    if hasattr(model, "student") and hasattr(model, "teacher"):
        model = model.student
    checks.check_segmenter(model, "model", why="evaluate_segmenter measures segmenters")
    images, masks = np.asarray(images), np.asarray(masks)
    masks = masks[..., 0] if masks.ndim == 4 else masks
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks; give one mask per image.")
    classes = int(model.outputs[0].shape[-1])
    confusion = np.zeros((classes, classes), "int64")
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size], training=False)
        if tuple(logits.shape[1:3]) != masks.shape[1:3]:
            logits = keras.ops.image.resize(logits, masks.shape[1:3], interpolation="bilinear")
        predictions = keras.ops.convert_to_numpy(keras.ops.argmax(logits, axis=-1))
        confusion += confusion_matrix(masks[start : start + batch_size], predictions, classes, ignore_label)
    return {**segmentation_report(confusion, class_names), "examples": int(len(images)), "classes": classes}
