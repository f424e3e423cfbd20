"""Training pieces shared by the jobs: the loss the labels need, training a teacher, building and training a student alone.

The optimizers and the teacher recipe are in `kdistill.run.optimizers`.

Example:
    >>> from kdistill.run import training
    >>> training.label_loss(["flip", "mixup"])
    'categorical_crossentropy'
"""

from __future__ import annotations

import hashlib
import logging
import os

import keras
import numpy as np

from kdistill import data as data_module
from kdistill.fit_build import build_before_fit
from kdistill.models import saving, students, teachers
from kdistill.run import callbacks, interrupts
from kdistill.run.backup import SafeBackupAndRestore
from kdistill.run.optimizers import TEACHER_RECIPE, make_optimizer, teacher_optimizer

__all__ = [
    "train_teacher",
    "build_student",
    "train_student",
    "label_loss",
    "teacher_backup_dir",
]

logger = logging.getLogger(__name__)


def label_loss(augment) -> str:
    """The cross-entropy the labels need: one-hot (categorical) when MixUp or CutMix mix them, class indices otherwise.

    Example:
        >>> label_loss(["flip", "mixup"]), label_loss(())
        ('categorical_crossentropy', 'sparse_categorical_crossentropy')
    """
    mixes = any(a in ("mixup", "cutmix") for a in augment)
    return "categorical_crossentropy" if mixes else "sparse_categorical_crossentropy"


_MIN_CHANCE_CHECK_IMAGES = 100


def train_teacher(
    splits: data_module.Splits,
    output_path: str,
    epochs: int = 4,
    weights: str | None = None,
    learning_rate: float | None = None,
    name: str = "resnet50",
    augment=(),
    verbose: int = 1,
    optimizer: str = TEACHER_RECIPE["optimizer"],
    warmup_epochs: float = TEACHER_RECIPE["warmup_epochs"],
    schedule: str = TEACHER_RECIPE["schedule"],
    weight_decay: float | None = TEACHER_RECIPE["weight_decay"],
    resize_to: int | None = None,
    callbacks_: list | None = None,
) -> tuple[keras.Model, dict]:
    """Trains a ResNet teacher on `splits`, keeps its best epoch and saves it to `output_path` (.keras).

    The recipe is Adam, peak rate 1e-3 after one epoch of linear warm-up, cosine
    decay to zero, BatchNorm momentum 0.9 (`TEACHER_RECIPE`; the measurements
    behind it are in `benchmarks/README.md`). With validation data the weights of
    the best epoch by validation accuracy are kept (`callbacks.KeepBestEpoch`),
    a last epoch far below the best is reported, and a teacher no better than
    chance raises `kdistill.errors.ChanceLevelError` instead of being saved.

    Survives a crash as `distill` does: weights, optimizer state and the best
    epoch so far are backed up to `teacher_backup_dir(output_path)` after every
    epoch, and the same call (the same command) resumes from the last finished
    epoch; the backup is removed when training ends. Ctrl-C raises
    `kdistill.errors.Interrupted` naming the epoch.

    Args:
        splits: data (`kdistill.data.load`).
        output_path: the `.keras` file to write.
        epochs: training epochs.
        weights: None, "imagenet" or a path (see `kdistill.teachers.get`).
        learning_rate: peak rate (None: 0.01 for SGD, 1e-3 for Adam).
        name: a teacher name (`kdistill.teachers.available()`): "resnet50" and the other ImageNet ResNets, or a CIFAR ResNet ("resnet20", ...).
        augment: the augmentations the pipeline applies (mixup/cutmix need one-hot labels).
        verbose: Keras progress bars.
        optimizer, warmup_epochs, schedule, weight_decay: see `teacher_optimizer`.
        resize_to: upsample inputs inside the teacher (see `kdistill.teachers.get`).
        callbacks_: extra Keras callbacks.

    Returns:
        `(teacher, history dict)`; the history also holds `best_epoch` (counting from 0).
    """
    teacher = teachers.get(
        name, num_classes=splits.num_classes, input_shape=splits.image_shape, weights=weights, resize_to=resize_to
    )
    steps = -(-splits.counts["train"] // _batch_size(splits.train))
    teacher.compile(
        optimizer=teacher_optimizer(optimizer, learning_rate, epochs, steps, warmup_epochs, schedule, weight_decay),
        loss=_logits_loss(augment),
        metrics=["accuracy"],
    )
    progress = interrupts.EpochProgress()  # the epoch a Ctrl-C stops in, for the message
    settings = dict(
        name=name,
        weights=weights,
        learning_rate=learning_rate,
        optimizer=optimizer,
        warmup_epochs=warmup_epochs,
        schedule=schedule,
        weight_decay=weight_decay,
        resize_to=resize_to,
        augment=list(augment),
        epochs=epochs,
    )
    run_callbacks, keep = _teacher_callbacks(splits, output_path, settings, progress, callbacks_)
    history = _fit(teacher, splits, epochs, verbose, run_callbacks, progress)
    if keep is not None:
        history["best_epoch"] = keep.best_epoch
    os.makedirs(os.path.dirname(output_path) or ".", exist_ok=True)
    saving.save_for_inference(teacher, output_path)
    return teacher, history


def _logits_loss(augment) -> keras.losses.Loss:
    """`label_loss(augment)`'s cross-entropy, on logits."""
    if label_loss(augment) == "categorical_crossentropy":
        return keras.losses.CategoricalCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _fit(
    teacher: keras.Model,
    splits: data_module.Splits,
    epochs: int,
    verbose: int,
    run_callbacks: list,
    progress: interrupts.EpochProgress,
) -> dict:
    """Trains the compiled teacher; a Ctrl-C raises `Interrupted` naming the epoch. Returns the history."""
    build_before_fit(teacher, splits.train)
    with interrupts.reporting_interrupts(progress, resumable=True):
        return teacher.fit(
            splits.train,
            validation_data=splits.validation,
            epochs=epochs,
            verbose=verbose,
            shuffle=False,
            callbacks=run_callbacks,
        ).history


def _teacher_callbacks(
    splits: data_module.Splits, output_path: str, settings: dict, progress: interrupts.EpochProgress, extra: list | None
) -> tuple[list, _KeptBestEpoch | None]:
    """The teacher's callbacks (progress, backup, data order, `extra`, best epoch), and the one keeping the best epoch."""
    backup_dir = teacher_backup_dir(output_path)
    run_callbacks = [progress, _teacher_backup(splits, backup_dir, settings), callbacks.DataPass(splits.train)]
    keep = _kept_best_epoch(splits, backup_dir)
    return run_callbacks + list(extra or []) + ([keep] if keep is not None else []), keep


def _teacher_backup(splits: data_module.Splits, backup_dir: str, settings: dict) -> SafeBackupAndRestore:
    """Backs up weights and optimizer state after every epoch (removed when training ends); the same command resumes."""
    backup = SafeBackupAndRestore(
        backup_dir,
        run_config=_resume_key(splits, settings),
        fix=f"Delete {backup_dir!r} to start afresh, or pass another --output.",
    )
    if os.path.exists(os.path.join(backup_dir, "training_metadata.json")):
        logger.info("Resuming the interrupted teacher training from %s", backup_dir)
    return backup


def _kept_best_epoch(splits: data_module.Splits, backup_dir: str) -> _KeptBestEpoch | None:
    """With validation data, the callback that keeps the best epoch and checks that the teacher beats chance."""
    if splits.validation is None:
        return None
    # Below ~100 validation images chance and learning cannot be told apart; the best epoch is still kept.
    checkable = splits.counts.get("validation", 0) >= _MIN_CHANCE_CHECK_IMAGES
    if not checkable:
        logger.warning(
            "Only %d validation images: too few to check that the teacher beats chance.",
            splits.counts.get("validation", 0),
        )
    return _KeptBestEpoch(backup_dir, chance_level=1.0 / splits.num_classes if checkable else None)


def teacher_backup_dir(output_path: str) -> str:
    """Where `train_teacher` backs up an unfinished training: `<output>.backup/`, beside the teacher file."""
    return output_path + ".backup"


def _resume_key(splits: data_module.Splits, settings: dict) -> dict:
    """What a teacher's backup must have been made with to be resumed: the recipe and the data (classes, counts, first training batch)."""
    digest = hashlib.sha256()
    if splits.train_plain is not None:  # another --seed or --train-limit draws other images
        for part in next(iter(splits.train_plain))[:2]:
            digest.update(np.ascontiguousarray(np.asarray(part)).tobytes())
    data = {
        "classes": list(splits.class_names),
        "counts": dict(splits.counts),
        "image_shape": list(splits.image_shape),
        "batch_size": _batch_size(splits.train),
        "first_batch": digest.hexdigest(),
    }
    return {**settings, "data": data}


class _KeptBestEpoch(callbacks.KeepBestEpoch):
    """`KeepBestEpoch` whose best epoch so far is written into the backup folder, so that a resumed training still keeps it."""

    def __init__(self, backup_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.backup_dir, self.path = backup_dir, os.path.join(backup_dir, "best_epoch.npz")

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        # resuming
        if os.path.exists(os.path.join(self.backup_dir, "training_metadata.json")) and os.path.exists(self.path):
            with np.load(self.path) as stored:
                self.best, self.best_epoch = float(stored["best"]), int(stored["best_epoch"])
                self._best_weights = [stored[f"weight_{index}"] for index in range(len(self.model.weights))]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        before = self.best_epoch
        super().on_epoch_end(epoch, logs)
        if self.best_epoch != before:  # written whole, then renamed into place
            os.makedirs(self.backup_dir, exist_ok=True)
            partial = f"{self.path}.{os.getpid()}.partial.npz"
            np.savez(
                partial,
                best=self.best,
                best_epoch=self.best_epoch,
                **{f"weight_{i}": value for i, value in enumerate(self._best_weights)},
            )
            os.replace(partial, self.path)


def _batch_size(dataset) -> int:
    """The batch size of a batched pipeline (tf.data or NumPy batches), 64 if unknown."""
    if isinstance(getattr(dataset, "batch_size", None), int):
        return dataset.batch_size
    spec = getattr(dataset, "element_spec", None)
    size = spec[0].shape[0] if isinstance(spec, tuple) else None
    if size is None:
        for images, _ in dataset.take(1):
            return int(images.shape[0])
        return 64
    return int(size)


def build_student(
    name: str,
    splits: data_module.Splits,
    width: float | None,
    seed: int,
    weights: str | None = None,
    image_size: int | None = None,
) -> keras.Model:
    """A registered student for `splits`, seeded; `weights` as in `kdistill.students.get` (None, "imagenet" or a path).

    `image_size` builds it at its own square input size (default: the data's).
    """
    keras.utils.set_random_seed(seed)
    kwargs = {"width": width} if width is not None and name.startswith("mobilenet") else {}
    shape = splits.image_shape if image_size is None else (int(image_size), int(image_size), splits.image_shape[-1])
    return students.get(name, num_classes=splits.num_classes, input_shape=shape, weights=weights, **kwargs)


def train_student(
    splits: data_module.Splits,
    student: keras.Model,
    epochs: int,
    learning_rate: float = 1e-3,
    optimizer: str = "adam",
    verbose: int = 1,
    callbacks=None,
) -> dict:
    """Trains a student on labels alone (the baseline distillation must beat)."""
    student.compile(
        optimizer=make_optimizer(optimizer, learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    build_before_fit(student, splits.train)
    return student.fit(
        splits.train,
        validation_data=splits.validation,
        epochs=epochs,
        verbose=verbose,
        callbacks=callbacks,
        shuffle=False,
    ).history
