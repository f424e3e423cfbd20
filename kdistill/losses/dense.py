"""Dense logits (segmenters): per-pixel cross-entropy and distillation, reduced to one value per sample (keras.ops only).

A segmenter's logits are maps `(batch, H, W, classes)` and its labels integer
masks `(batch, H, W)` (or `(batch, H, W, 1)`). Pixels whose label is the ignore
label (255 by default, as in Pascal VOC and Cityscapes' train ids) or negative
(`kdistill.UNLABELED`) are not *valid*: they get no cross-entropy, and the
per-pixel distillation terms average over the valid pixels of each sample, so
every term stays one value per sample (the loss protocol of
`kdistill.losses.base`). An image without any valid pixel (a transfer-set image
whose mask is all `UNLABELED` or ignored) gets no cross-entropy and is distilled
over all its pixels.

Sizes. The teacher's logit map is the target, so when the two maps differ the
student's logits are resized to the teacher's size (bilinear) before every
logits term, and the target itself is never interpolated. CWD's reference losses
(mmrazor `ChannelWiseDivergence`, the authors' `CriterionCWD`) take maps of
one size and do not resize; this follows the segmentation codebases that pair
them, which bring the student's map to the teacher's. Masks are expected at the
logits' size (the teacher's output size); a mask at another size (the input
size, for a decoder that outputs at a stride) is resized to it by nearest
neighbour, so no new class values appear.

Which logits losses apply. A loss says so with its class attribute
`dense_logits`: `"pixels"` (Hinton KD, logit-standardised KD: the loss of each
pixel's class vector, averaged here over the valid pixels) or `"map"` (CWD:
one value per sample from the whole map). kdistill's other logits losses (DKD,
DIST, the adversarial ones) relate one class vector per image or the images of
a batch and are refused for dense logits. A user's own loss may return
`(batch, H, W)` (averaged over the valid pixels here) or `(batch,)`.

Example:
    >>> import numpy as np
    >>> labels = np.array([[[0, 1], [255, 2]]], "int32")  # one 2x2 mask, one ignored pixel
    >>> clean, valid = pixel_labels(labels, (2, 2))
    >>> np.asarray(valid).tolist(), np.asarray(clean).tolist()
    ([[[1.0, 1.0], [0.0, 1.0]]], [[[0, 1], [0, 2]]])
    >>> float(valid_mean(np.array([[[3.0, 3.0], [100.0, 3.0]]], "float32"), valid)[0])
    3.0
"""

from __future__ import annotations

from typing import Any

from keras import ops

from kdistill.losses import base, registry

__all__ = [
    "IGNORE_LABEL",
    "is_dense",
    "logits_loss_kind",
    "check_ignore_label",
    "check_logits_loss",
    "match_size",
    "pixel_labels",
    "valid_mean",
    "reduce_pixels",
    "dense_label_terms",
    "dense_logits_loss",
]

#: the default ignore label of segmentation masks (Pascal VOC's boundaries, Cityscapes' train ids)
IGNORE_LABEL = 255


def is_dense(logits) -> bool:
    """True for logit maps `(batch, H, W, classes)`, False for class vectors `(batch, classes)`."""
    return len(logits.shape) == 4


def check_ignore_label(ignore_label: Any) -> int | None:
    """The ignore label as an int (None: every non-negative label counts), or a ValueError naming the fix."""
    if ignore_label is None:
        return None
    if isinstance(ignore_label, bool) or not isinstance(ignore_label, int) or ignore_label < 0:
        raise ValueError(
            f"ignore_label must be a non-negative integer (255 for Pascal VOC / Cityscapes masks) or None, received "
            f"{ignore_label!r}. Negative mask values (kdistill.UNLABELED) are always skipped."
        )
    return ignore_label


def logits_loss_kind(identifier: Any) -> str:
    """The registry kind to look a dense logits loss up in: `"feature"` for a feature loss reading a whole map (`"cwd"`), else `"logits"`.

    CWD is registered as a feature loss; on a segmenter's logit map (its
    original setting) it is also a logits loss, by the same name.

    Example:
        >>> logits_loss_kind("cwd"), logits_loss_kind({"name": "cwd", "temperature": 1.0}), logits_loss_kind("kl")
        ('feature', 'feature', 'logits')
    """
    name = identifier.get("name") if isinstance(identifier, dict) else identifier
    if (
        not isinstance(name, str)
        or name.lower() in registry.available("logits")
        or name.lower() not in registry.available("feature")
    ):
        return "logits"
    return "feature" if getattr(registry.lookup(name, "feature")[0], "dense_logits", None) == "map" else "logits"


def check_logits_loss(loss: Any) -> None:
    """ValueError when `loss` is one of kdistill's logits losses that do not apply to logit maps (see the module docstring)."""
    if loss is None or getattr(loss, "dense_logits", None) in ("pixels", "map"):
        return
    if type(loss).__name__ == "Combined":
        raise ValueError(
            "A weighted list of logits losses is not supported for segmentation logits yet (per-pixel and per-map terms "
            "reduce differently); give one: logits_loss='kl' or {'name': 'cwd', 'temperature': 1.0}, and taps for feature terms."
        )
    if type(loss).__module__.startswith("kdistill."):
        name = getattr(loss, "name", type(loss).__name__)
        raise ValueError(
            f"The logits loss {name!r} compares one class vector per image (or the images of a batch) and does not apply "
            f"to segmentation logits (batch, H, W, classes); use logits_loss='kl' (per-pixel KD) or "
            f"{{'name': 'cwd', 'temperature': 1.0}} (channel-wise distillation of the logit map), or None."
        )


def match_size(student_logits, size):
    """The student's logit map resized (bilinear) to `size`, the teacher's `(H, W)`, when they differ: the teacher's map is the target."""
    size = tuple(size)
    if None in size or tuple(student_logits.shape[1:3]) == size:
        return student_logits
    return ops.image.resize(student_logits, size, interpolation="bilinear")


def pixel_labels(labels, size: tuple[int, int], ignore_label: int | None = IGNORE_LABEL) -> tuple[Any, Any]:
    """`(labels, valid)`: int32 masks `(batch, H, W)` at `size`, invalid pixels set to 0, and their float32 valid mask.

    Args:
        labels: integer masks `(batch, h, w)` or `(batch, h, w, 1)`; at another
            size than `size` they are resized by nearest neighbour.
        size: `(H, W)` of the logits.
        ignore_label: the label of pixels to skip (None: none besides negative labels).
    """
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 4:
        labels = labels[..., 0]
    labels = ops.cast(labels, "int32")
    if tuple(labels.shape[1:3]) != tuple(size) and None not in tuple(size):
        resized = ops.image.resize(ops.cast(labels[..., None], "float32"), tuple(size), interpolation="nearest")
        labels = ops.cast(ops.round(resized[..., 0]), "int32")
    valid = labels >= 0
    if ignore_label is not None:
        valid = ops.logical_and(valid, ops.not_equal(labels, ignore_label))
    return ops.where(valid, labels, ops.zeros_like(labels)), ops.cast(valid, "float32")


def valid_mean(values, valid):
    """Per-sample mean of per-pixel `values` `(batch, H, W)` over the `valid` pixels; over every pixel where a sample has none."""
    values = ops.cast(values, "float32")
    batch = ops.shape(values)[0]
    values, valid = ops.reshape(values, (batch, -1)), ops.reshape(valid, (batch, -1))
    count = ops.sum(valid, axis=1)
    masked = ops.sum(values * valid, axis=1) / ops.maximum(count, 1.0)
    return ops.where(count > 0, masked, ops.mean(values, axis=1))


def reduce_pixels(values, valid):
    """One value per sample from a loss's output: per-pixel values `(batch, H, W)` reduced by `valid_mean`, `(batch,)` as they are."""
    if len(values.shape) == 3:
        return valid_mean(values, ops.ones_like(values) if valid is None else valid)
    return values


def dense_label_terms(label_loss: Any, labels, student_logits, ignore_label: int | None) -> tuple[Any, Any, Any, Any]:
    """`(cross-entropy per sample, labelled-sample mask, pixel labels, valid pixels)` for logit maps and integer masks.

    The cross-entropy of a sample is its per-pixel cross-entropy averaged over
    its valid pixels; the sample mask is 1 for samples with at least one valid
    pixel (the others weigh nothing in the batch's mean, as unlabelled images do).
    """
    labels, valid = pixel_labels(labels, tuple(student_logits.shape[1:3]), ignore_label)
    pixels = ops.cast(label_loss(labels, student_logits), "float32")  # (batch, H, W)
    batch = ops.shape(valid)[0]
    count = ops.sum(ops.reshape(valid, (batch, -1)), axis=1)
    cross_entropy = ops.sum(ops.reshape(pixels * valid, (batch, -1)), axis=1) / ops.maximum(count, 1.0)
    return cross_entropy, ops.cast(count > 0, "float32"), labels, valid


def dense_logits_loss(loss: Any, teacher_logits, student_logits, labels, valid):
    """One value per sample of a logits loss on logit maps: the student's map at the teacher's size, per-pixel values reduced over `valid`."""
    values = base.per_sample_loss(loss, teacher_logits, match_size(student_logits, teacher_logits.shape[1:3]), labels)
    return reduce_pixels(ops.cast(values, "float32"), valid)
