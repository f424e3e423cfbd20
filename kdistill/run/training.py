"""Training pieces shared by the jobs: optimizers, the teacher recipe, building and training a student alone.

Example:
    >>> from kdistill.run import training
    >>> training.TEACHER_RECIPE["schedule"]
    'cosine'
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
from kdistill.run import callbacks
from kdistill.run.backup import SafeBackupAndRestore

__all__ = [
    "make_optimizer",
    "teacher_optimizer",
    "TEACHER_RECIPE",
    "train_teacher",
    "build_student",
    "train_student",
    "label_loss",
    "teacher_backup_dir",
]

logger = logging.getLogger(__name__)


_OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "sgd": lambda **kw: keras.optimizers.SGD(momentum=0.9, **kw),
    "adamw": keras.optimizers.AdamW,
}


def _optimizer_instance(name: str, rate, weight_decay: float | None, global_clipnorm: float | None = None):
    if name not in _OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; known: {', '.join(_OPTIMIZERS)}.")
    kwargs = {"weight_decay": weight_decay} if weight_decay else {}
    if global_clipnorm:
        kwargs["global_clipnorm"] = global_clipnorm
    return _OPTIMIZERS[name](learning_rate=rate, **kwargs)


def make_optimizer(
    name: str,
    learning_rate: float,
    weight_decay: float | None = None,
    decay_epochs=(),
    steps_per_epoch: int | None = None,
    schedule: str = "constant",
    warmup_epochs: float = 0.0,
    epochs: int = 1,
    global_clipnorm: float | None = None,
):
    """Adam / SGD (momentum 0.9) / AdamW for `distill`: a constant rate, a step decay, or warm-up and cosine decay.

    Args:
        name: "adam", "sgd" or "adamw".
        learning_rate: the (peak) rate.
        weight_decay: decoupled weight decay, or None.
        decay_epochs: multiply the rate by 0.1 at each of these epochs (with `schedule="constant"`).
        steps_per_epoch: optimizer steps per epoch (needed by `decay_epochs` and `"cosine"`).
        schedule: "constant", or "cosine": linear warm-up for `warmup_epochs`, then cosine decay to zero at the end of `epochs`.
        warmup_epochs: the warm-up of the cosine schedule (may be fractional).
        epochs: the run's length (for `"cosine"`).
        global_clipnorm: clip the gradients of every trained variable together (the student's, its projections' and the
            losses' own) to this global norm, or None.

    Example:
        >>> optimizer = make_optimizer("adam", 1e-3, schedule="cosine", warmup_epochs=1, epochs=3, steps_per_epoch=10, global_clipnorm=1.0)
        >>> optimizer.global_clipnorm, round(float(optimizer.learning_rate), 6)
        (1.0, 0.0)
    """
    if schedule == "cosine":
        if not steps_per_epoch:
            raise ValueError("A cosine schedule needs the number of steps per epoch.")
        return teacher_optimizer(
            name, learning_rate, epochs, steps_per_epoch, warmup_epochs, "cosine", weight_decay, global_clipnorm
        )
    if schedule != "constant":
        raise ValueError(f"schedule must be 'constant' or 'cosine', received {schedule!r}.")
    rate = learning_rate
    if decay_epochs:
        if not steps_per_epoch:
            raise ValueError("A learning-rate decay by epoch needs the number of steps per epoch.")
        # The first step of epoch e (counting from 0) is step e * steps_per_epoch; it uses the decayed rate.
        boundaries = [int(epoch) * steps_per_epoch - 1 for epoch in sorted(decay_epochs)]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [learning_rate * 0.1**i for i in range(len(boundaries) + 1)]
        )
    return _optimizer_instance(name, rate, weight_decay, global_clipnorm)


def label_loss(augment) -> str:
    """The cross-entropy the labels need: one-hot (categorical) when MixUp or CutMix mix them, class indices otherwise.

    Example:
        >>> label_loss(["flip", "mixup"]), label_loss(())
        ('categorical_crossentropy', 'sparse_categorical_crossentropy')
    """
    mixes = any(a in ("mixup", "cutmix") for a in augment)
    return "categorical_crossentropy" if mixes else "sparse_categorical_crossentropy"


#: the teacher recipe (`train_teacher`'s defaults; benchmarks/README.md, "Notes behind defaults", says why)
TEACHER_RECIPE = {
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "warmup_epochs": 1,
    "schedule": "cosine",
    "weight_decay": None,
}


_MIN_CHANCE_CHECK_IMAGES = 100


def teacher_optimizer(
    optimizer: str = "adam",
    learning_rate: float | None = None,
    epochs: int = 1,
    steps_per_epoch: int = 1,
    warmup_epochs: float = 1,
    schedule: str = "cosine",
    weight_decay: float | None = None,
    global_clipnorm: float | None = None,
):
    """The teacher's optimizer: linear warm-up then cosine decay to zero (or a constant rate).

    Args:
        optimizer: "sgd" (momentum 0.9), "adam" or "adamw".
        learning_rate: peak rate; None picks 0.01 for SGD and 1e-3 otherwise (`benchmarks/README.md` says why).
        epochs, steps_per_epoch: the schedule's length.
        warmup_epochs: epochs of linear warm-up from 0 (may be fractional; 0 for none).
        schedule: "cosine" or "constant".
        weight_decay: decoupled weight decay, or None.
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', received {schedule!r}.")
    peak = learning_rate if learning_rate is not None else (0.01 if optimizer == "sgd" else 1e-3)
    total = max(1, int(epochs * steps_per_epoch))
    warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else peak,
            decay_steps=max(1, total - warmup),
            alpha=0.0,
            warmup_target=peak if warmup else None,
            warmup_steps=warmup,
        )
    else:
        rate = peak
    return _optimizer_instance(optimizer, rate, weight_decay, global_clipnorm)


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
    mixes = any(a in ("mixup", "cutmix") for a in augment)
    teacher.compile(
        optimizer=teacher_optimizer(optimizer, learning_rate, epochs, steps, warmup_epochs, schedule, weight_decay),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True)
        if mixes
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    backup_dir = teacher_backup_dir(output_path)
    progress = callbacks.EpochProgress()  # the epoch a Ctrl-C stops in, for the message
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
    backup = _teacher_backup(splits, backup_dir, settings)
    run_callbacks = [progress, backup, callbacks.DataPass(splits.train), *(callbacks_ or [])]
    keep = _kept_best_epoch(splits, backup_dir)
    if keep is not None:
        run_callbacks.append(keep)
    build_before_fit(teacher, splits.train)
    with callbacks.reporting_interrupts(progress, resumable=True):
        history = teacher.fit(
            splits.train,
            validation_data=splits.validation,
            epochs=epochs,
            verbose=verbose,
            shuffle=False,
            callbacks=run_callbacks,
        ).history
    if keep is not None:
        history["best_epoch"] = keep.best_epoch
    os.makedirs(os.path.dirname(output_path) or ".", exist_ok=True)
    saving.save_for_inference(teacher, output_path)
    return teacher, history


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
        if os.path.exists(os.path.join(self.backup_dir, "training_metadata.json")) and os.path.exists(
            self.path
        ):  # resuming
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
