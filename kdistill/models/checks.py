"""Checks on the models and data a distiller is given, with errors that name the fix.

One check per question, used by every path that asks it: `check_classifier`
(is this a classifier returning logits of shape `(batch, classes)`?) by teacher
loading, the distiller, evaluation and export; `check_labels`, `check_finite`
and `check_image_shape` by the data loaders (`kdistill.data`) and by
`FeatureDistiller.fit` (`check_fit_data`), with the same messages.

Example:
    >>> import numpy as np
    >>> check_labels("training", np.array([0, 1, 5]), 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    kdistill.errors.UserError: 1 training label(s) lie outside [0, 3) for 3 classes (e.g. 5). Labels must be class indices ...
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import keras
import numpy as np
from keras import tree

from kdistill.labels import UNLABELED
from kdistill.errors import UserError

__all__ = [
    "UNLABELED",
    "warn_if_chance_level",
    "check_classifier",
    "check_same_architecture",
    "check_logits_pair",
    "dense_logits",
    "check_segmenter",
    "check_masks",
    "check_not_empty",
    "check_finite",
    "check_labels",
    "check_image_shape",
    "check_fit_data",
]


def _outputs(model) -> list | None:
    """The symbolic outputs of a model (None for a subclassed model that has not run)."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return None if outputs is None else list(outputs)


def _shape(tensor) -> str:
    return "(" + ", ".join("batch" if index == 0 else str(size) for index, size in enumerate(tensor.shape)) + ")"


def check_classifier(model, role: str, path: str | None = None, logits: bool = True) -> None:
    """UserError unless `model` is a classifier with one output of shape `(batch, classes)`, logits (no softmax) when `logits`.

    A saved `FeatureDistiller` is checked through its student. `role` ("teacher",
    "student", "model") and `path` (the file it came from) name it in the message.
    """
    if hasattr(model, "student") and hasattr(model, "teacher"):
        model, role = model.student, "student"
    where = f"The {role} in {path!r}" if path else f"The {role} {getattr(model, 'name', '')!r}"
    outputs = _outputs(model)
    if outputs is None:
        return  # a subclassed model: its output is known only once it runs
    need = "kdistill needs a classifier with one output, logits of shape (batch, classes)"
    if len(outputs) != 1:
        raise UserError(
            f"{where} has {len(outputs)} outputs ({', '.join(_shape(t) for t in outputs)}); {need}. Save the classifier "
            "alone, e.g. keras.Model(model.inputs, model.outputs[0]).save('classifier.keras')."
        )
    if len(outputs[0].shape) != 2 or (outputs[0].shape[-1] is not None and outputs[0].shape[-1] < 2):
        kind = "a feature map" if len(outputs[0].shape) == 4 else "an output"
        raise UserError(
            f"{where} returns {kind} of shape {_shape(outputs[0])}, not logits of shape (batch, classes): {need}. End it "
            "with GlobalAveragePooling2D and Dense(classes), no softmax."
        )
    activation = getattr(model.layers[-1], "activation", None) if getattr(model, "layers", None) else None
    if logits and activation is not None and getattr(activation, "__name__", "") == "softmax":
        raise UserError(
            f"{where} ends in a softmax; kdistill needs logits. Build it with "
            "classifier_activation=None (keras.applications) or a linear last Dense."
        )


def check_same_architecture(model: keras.Model, expected: keras.Model, name: str, path: str) -> None:
    """UserError when `model` (loaded from `path`) is not the architecture `name` builds (`expected`): their kernels differ."""

    def kernels(network):
        return sorted(
            tuple(w.shape) for w in network.weights if w.path.split("/")[-1] in ("kernel", "depthwise_kernel")
        )

    if kernels(model) != kernels(expected):
        raise UserError(
            f"{path!r} holds another architecture than the student {name!r} ({len(kernels(model))} kernels, not the "
            f"{len(kernels(expected))} of {name!r}; the file's model is named {model.name!r}). Pass the student it holds "
            f"(--student), or a {name!r} file (another width counts as another architecture)."
        )


def dense_logits(model) -> bool:
    """True when `model` returns one logit map `(batch, H, W, classes)` (a segmenter), False otherwise (or unknown: a subclassed model)."""
    outputs = _outputs(model)
    return outputs is not None and len(outputs) == 1 and len(outputs[0].shape) == 4


def check_segmenter(model, role: str, why: str = "its teacher is a segmenter") -> None:
    """UserError unless `model` returns one logit map `(batch, H, W, classes)` with at least two classes; `why` says who needs it."""
    outputs = _outputs(model)
    if outputs is None:
        return
    if (
        len(outputs) != 1
        or len(outputs[0].shape) != 4
        or (outputs[0].shape[-1] is not None and outputs[0].shape[-1] < 2)
    ):
        got = ", ".join(_shape(t) for t in outputs)
        raise UserError(
            f"The {role} {getattr(model, 'name', '')!r} returns {got}, but {why}: it needs one output, logit maps of shape "
            "(batch, H, W, classes) (no softmax), as a classifier's teacher needs class logits (batch, classes)."
        )


def check_logits_pair(teacher: keras.Model, student: keras.Model) -> None:
    """UserError unless teacher and student both return logits (no softmax) of the same classes: class vectors, or maps for segmenters."""
    if dense_logits(teacher):
        check_segmenter(student, "student")
    else:
        check_classifier(teacher, "teacher")
        check_classifier(student, "student")
    teacher_classes, student_classes = teacher.outputs[0].shape[-1], student.outputs[0].shape[-1]
    if teacher_classes != student_classes:
        raise UserError(
            f"Teacher and student must predict the same classes: the teacher outputs {teacher_classes} "
            f"logits and the student {student_classes}."
        )


def check_not_empty(data, what: str) -> None:
    """ValueError when `data` (arrays, a tf.data.Dataset of known size, a PyDataset) holds no example."""
    size = None
    if _is_tf_dataset(data) and hasattr(data, "cardinality"):
        size = int(data.cardinality())  # -1 infinite, -2 unknown
    elif isinstance(data, keras.utils.PyDataset):
        size = data.num_batches
    elif data is not None and not callable(data):
        leaves = tree.flatten(data)
        size = len(leaves[0]) if leaves and hasattr(leaves[0], "__len__") else None
    if size == 0:
        raise ValueError(
            f"The {what} is empty (0 examples): there is nothing to train on. Check where it comes from "
            "(train_limit, a filter, an empty folder or array)."
        )


def check_finite(split: str, images) -> None:
    """Float images must hold finite pixels: one NaN pixel can turn a kernel NaN while the averaged loss stays finite."""
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.floating):
        finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
        if not finite.all():
            where = np.flatnonzero(~finite)
            raise UserError(
                f"{len(where)} {split} image(s) hold NaN or infinite pixels (e.g. index {where[0]}): fix or drop them "
                f"before training (e.g. images[np.isfinite(images).all(axis=(1, 2, 3))])."
            )


def check_labels(split: str, labels, num_classes: int, allow_unlabeled: bool = False) -> None:
    """Integer labels must lie in [0, num_classes) (or be UNLABELED where allowed); says which do not, before any training."""
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind in "fc" and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        bad = labels[~(np.isfinite(labels) & (labels == np.round(labels)))]
        raise UserError(
            f"{len(bad)} {split} label(s) are not whole numbers (e.g. {', '.join(f'{v:g}' for v in bad[:3])}): a class-index loss "
            "would cut them to integers and train on those. Give class indices 0..classes-1 (integers); for soft or one-hot "
            "labels compile with loss='categorical_crossentropy'."
        )
    valid = (labels >= 0) & (labels < num_classes)
    if allow_unlabeled:
        valid |= labels == UNLABELED
    bad = labels[~valid]
    if len(bad):
        values = ", ".join(str(v) for v in sorted(set(bad.tolist()))[:5])
        raise UserError(
            f"{len(bad)} {split} label(s) lie outside [0, {num_classes}) for {num_classes} classes (e.g. {values}). "
            "Labels must be class indices 0..classes-1; give class_names for the full list of classes."
        )


def check_image_shape(split: str, shape, model: keras.Model, role: str = "teacher") -> None:
    """UserError when images of `shape` (per image: height, width, channels) do not fit `model`'s input (unknown sizes fit any)."""
    expected = getattr(model, "input_shape", None)
    if not isinstance(expected, tuple) or any(isinstance(part, (tuple, list)) for part in expected):
        return  # several inputs: not an image classifier's
    expected, shape = tuple(expected[1:]), tuple(int(size) for size in shape)
    if len(shape) != len(expected) or any(want is not None and want != got for want, got in zip(expected, shape)):
        size = expected[0] if expected and expected[0] is not None else "N"
        channels = (
            ""
            if expected[-1] in (None, 3)
            else (
                f" kdistill's data are RGB (grey repeated to 3 channels), so a {role} taking "
                f"{expected[-1]} channel(s) needs to be built for 3."
            )
        )
        raise UserError(
            f"The {split} images have shape {shape} per image, but the {role} takes {expected}: resize them to it (the kdistill "
            f"command: --image-size {size}; Python: kdistill.data.from_arrays(x, y, image_size={size}), which also repeats grey "
            f"to RGB).{channels}"
        )


def _is_tf_dataset(data) -> bool:
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "take")


def _first_batch(data, labels):
    """`(images, labels)` as NumPy: arrays whole; a tf.data dataset's or a PyDataset's first batch only (a pass counter is left as it was)."""
    if isinstance(data, tuple) and labels is None:  # validation_data=(x, y) or (x, y, sample_weight)
        data, labels = data[0], (data[1] if len(data) > 1 else None)
    if _is_tf_dataset(data):
        # kdistill's pipelines count their passes (kdistill.data.batches.set_pass)
        counter = getattr(data, "kdistill_pass", None)
        before = None if counter is None else counter.numpy()
        batch = next(iter(data.take(1)), None)
        if counter is not None:
            counter.assign(before)
        data, labels = (
            (batch[0], batch[1] if len(batch) > 1 else None) if isinstance(batch, (tuple, list)) else (batch, None)
        )
    elif isinstance(data, keras.utils.PyDataset):
        batch = data[0] if data.num_batches != 0 else None
        data, labels = (
            (batch[0], batch[1] if len(batch) > 1 else None) if isinstance(batch, (tuple, list)) else (batch, None)
        )
    if isinstance(data, Mapping):  # a teacher cache's {"images", "teacher"} batch
        data = data.get("images")
    if not hasattr(data, "shape") or not hasattr(data, "__len__"):
        return None, None
    return np.asarray(data), (None if labels is None else np.asarray(labels))


def check_masks(split: str, masks, num_classes: int, ignore_label: int | None = None) -> None:
    """Segmentation masks must hold class indices in [0, num_classes), the ignore label or UNLABELED; says which values do not."""
    values = np.unique(np.asarray(masks))
    allowed = (values >= 0) & (values < num_classes) | (values == UNLABELED)
    if ignore_label is not None:
        allowed |= values == ignore_label
    bad = values[~allowed]
    if len(bad):
        listed = ", ".join(str(v) for v in bad[:5].tolist())
        raise UserError(
            f"The {split} masks hold value(s) {listed} outside the {num_classes} classes [0, {num_classes}) and the ignore "
            f"label ({ignore_label}). Map them to class indices, or to the ignore label to skip those pixels "
            "(FeatureDistiller(ignore_label=...) names it)."
        )


def check_fit_data(
    teacher: keras.Model,
    x,
    y=None,
    validation_data=None,
    ignore_label: int | None = None,
    sparse_labels: bool | None = None,
) -> None:
    """The data loaders' checks on what `fit` is given: image shapes against the teacher's input, finite pixels, labels in range.

    Arrays are checked whole; a tf.data dataset or a `keras.utils.PyDataset` by
    its first batch only (the rest is never read here). Labels are class indices
    in `[0, classes)` (training labels may be `UNLABELED`); one-hot rows
    (MixUp, CutMix) are not range-checked, but refused when `sparse_labels`
    (the loss takes class indices). A segmenter's masks may also hold `ignore_label`.
    """
    classes = teacher.outputs[0].shape[-1] if _outputs(teacher) else None
    for split, data, labels in (("training", x, y), ("validation", validation_data, None)):
        images, labels = _first_batch(data, labels)
        if images is None:
            continue
        check_image_shape(split, images.shape[1:], teacher)
        check_finite(split, images)
        if labels is not None and classes and dense_logits(teacher):
            check_masks(split, labels, classes, ignore_label)
            continue
        if labels is not None and classes and labels.ndim == 2 and labels.shape[-1] == classes > 1 and sparse_labels:
            raise UserError(
                f"The {split} labels are one-hot rows (shape {labels.shape}), but the loss is sparse_categorical_crossentropy, "
                "which takes class indices. Compile with loss='categorical_crossentropy', or pass the indices (y.argmax(-1))."
            )
        if labels is not None and classes and (labels.ndim == 1 or labels.shape[-1] == 1):
            check_labels(split, labels, classes, allow_unlabeled=split == "training")


def warn_if_chance_level(teacher: keras.Model, validation_data, margin: float = 0.05, limit: int = 256) -> float | None:
    """Logs a warning when the teacher is no better than chance on the first validation batch (up to `limit` images); returns its top-1.

    `kdistill distill` refuses such a teacher (`kdistill.run.jobs.check_teacher`);
    in Python `FeatureDistiller.fit` warns once: an untrained teacher, or one
    trained with a loss that expected probabilities (teachers output logits:
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`), teaches nothing.
    """
    images, labels = _first_batch(validation_data, None)
    classes = teacher.outputs[0].shape[-1] if _outputs(teacher) else None
    if (
        images is None
        or labels is None
        or not classes
        or len(images) < 32
        or not (labels.ndim == 1 or labels.shape[-1] == 1)
    ):
        return None
    predictions = keras.ops.convert_to_numpy(teacher(images[:limit], training=False)).argmax(-1)
    top1 = float((predictions == labels[:limit].reshape(-1)).mean())
    if top1 <= 1.0 / classes + margin:
        logging.getLogger("kdistill").warning(
            "The teacher reaches %.1f %% top-1 on %d validation images, no better than chance (%.1f %%): distilling it teaches the "
            "student nothing. Train it first (teachers output logits: compile with keras.losses.SparseCategoricalCrossentropy("
            "from_logits=True)) or load a trained one (kdistill.teachers.load).",
            100 * top1,
            len(predictions),
            100 / classes,
        )
    return top1
