"""Callbacks that keep a distillation run's work: stop on a non-finite loss naming the term, keep the best student.

Example:
    >>> from kdistill.run import callbacks
    >>> stop = callbacks.StopOnNonFiniteLoss()
    >>> stop.describe({"loss": float("nan"), "ce_loss": 0.3, "kd_loss": 0.1, "feat_conv4_block6_out": float("nan")})
    'feat_conv4_block6_out = nan (feature loss on tap conv4_block6_out)'
"""

from __future__ import annotations

import json
import logging
import math
import os

import keras
import numpy as np

from kdistill import files
from kdistill.data import batches
from kdistill.errors import ChanceLevelError, UserError
from kdistill.models import saving

# Their homes; the jobs, the CLI and the tests name them here.

__all__ = [
    "DataPass",
    "NonFiniteLossError",
    "ChanceLevelError",
    "StopOnNonFiniteLoss",
    "BestStudentCheckpoint",
    "KeepBestEpoch",
]

logger = logging.getLogger(__name__)


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite; the message names the term that did and what to change."""


def _term_kind(name: str) -> str:
    if name.startswith("feat_"):
        return f"feature loss on tap {name[len('feat_') :]}"
    return {"kd_loss": "logits distillation (KD)", "ce_loss": "cross-entropy with labels", "loss": "total"}.get(
        name, name
    )


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Like `keras.callbacks.TerminateOnNaN`, but raises an error that names the term.

    After each training batch it checks `loss` and every distillation term
    (`ce_loss`, `kd_loss`, `feat_<layer>`); on a NaN or infinity it stops
    training and raises `NonFiniteLossError` saying which term it was and what
    to try. After each epoch it checks the trainable weights too: a NaN pixel
    can poison a kernel while the logged (averaged) losses stay finite. The
    weights saved by earlier checkpoints are left untouched.
    """

    _ADVICE = (
        "Lower the learning rate, the temperature or that term's weight (tap_weights / logits_weight), "
        "or use feature_loss='normalized_mse' for features of large magnitude; and check the input data for NaN or "
        "infinite pixels (kdistill.data refuses them when it loads arrays)."
    )

    def describe(self, logs: dict) -> str:
        """The non-finite terms of `logs`, most specific first."""
        bad = [
            name
            for name, value in logs.items()
            if name.endswith("loss") or name.startswith("feat_")
            if isinstance(value, (int, float)) and not math.isfinite(value)
        ]
        specific = [name for name in bad if name != "loss"]
        if specific or not bad:
            return ", ".join(f"{name} = {logs[name]} ({_term_kind(name)})" for name in specific)
        finite = ", ".join(
            f"{name} = {value:.4g}"
            for name, value in logs.items()
            if name != "loss" and (name.endswith("loss") or name.startswith("feat_"))
        )
        return f"loss = {logs['loss']} (total; every term is finite, so their weighted sum overflowed: {finite})"

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = {name: float(value) for name, value in (logs or {}).items() if _is_number(value)}
        if "loss" in logs and not math.isfinite(logs["loss"]):
            self.model.stop_training = True
            raise NonFiniteLossError(
                f"The training loss became non-finite at batch {batch}: {self.describe(logs)}. {self._ADVICE}"
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        bad = [
            variable.path
            for variable in self.model.trainable_variables
            if not np.isfinite(keras.ops.convert_to_numpy(variable)).all()
        ]
        if bad:
            self.model.stop_training = True
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise NonFiniteLossError(
                f"After epoch {epoch + 1} {len(bad)} weight(s) hold NaN or infinity ({shown}) although the logged "
                f"losses were finite. {self._ADVICE}"
            )


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class BestStudentCheckpoint(keras.callbacks.Callback):
    """Saves the student (inference copy, no teacher, no projections) whenever `monitor` improves.

    The best value is recorded beside the file (`<path>.json`); with
    `resume=True` (an interrupted run going on) training starts from that
    record, so a worse later epoch cannot replace the best student.

    Args:
        path: the `.keras` file to write.
        monitor: a logged metric, by default `val_accuracy`.
        mode: "max" or "min".
        resume: continue from the recorded best of an interrupted run.
    """

    def __init__(self, path: str, monitor: str = "val_accuracy", mode: str = "max", resume: bool = False):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', received {mode!r}.")
        self.path, self.monitor, self.mode, self.resume = path, monitor, mode, resume
        self.best = None
        self.best_epoch = None

    @property
    def record_path(self) -> str:
        return self.path + ".json"

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.resume or not os.path.exists(self.record_path) or not os.path.exists(self.path):
            return
        with open(self.record_path) as handle:
            record = json.load(handle)
        if record.get("monitor") == self.monitor and record.get("mode") == self.mode:
            self.best, self.best_epoch = float(record["best"]), int(record["epoch"])
            logger.info(
                "Resuming with the best %s so far: %.4f (epoch %d)", self.monitor, self.best, self.best_epoch + 1
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            logger.warning(
                "BestStudentCheckpoint: %r is not logged (logged: %s); nothing saved.",
                self.monitor,
                ", ".join(sorted(logs or {})),
            )
            return
        value = float(value)
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better and math.isfinite(value):
            self.best, self.best_epoch = value, epoch
            student = getattr(self.model, "student", self.model)
            saving.save_for_inference(student, self.path)
            files.write_json(
                self.record_path, {"monitor": self.monitor, "mode": self.mode, "best": value, "epoch": epoch}
            )
            logger.info("Epoch %d: %s improved to %.4f; student saved to %s", epoch + 1, self.monitor, value, self.path)


class KeepBestEpoch(keras.callbacks.Callback):
    """Restores the weights of the best epoch (by `monitor`) when training ends, and says when the last epoch fell.

    A run whose last epoch collapses (validation accuracy falling towards chance
    while training accuracy stays high) would otherwise be saved in its collapsed
    state.
    Weights are kept in memory (one copy of the model's variables).

    Args:
        monitor: a validation metric that `fit` logs, by default `val_accuracy`.
        collapse_drop: warn when the last epoch is this far below the best (absolute).
        chance_level: if given (e.g. `1 / num_classes`), raise `ChanceLevelError`
            at the end when even the best epoch is within `chance_margin` of it.
        chance_margin: how far above `chance_level` counts as having learned.

    Example:
        >>> import numpy as np, keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        >>> keep = KeepBestEpoch()
        >>> x, y = np.random.rand(8, 2), np.arange(8) % 2
        >>> _ = model.fit(x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[keep])
        >>> keep.best_epoch in (0, 1)
        True
    """

    def __init__(
        self,
        monitor: str = "val_accuracy",
        collapse_drop: float = 0.05,
        chance_level: float | None = None,
        chance_margin: float = 0.05,
    ):
        super().__init__()
        self.monitor, self.collapse_drop = monitor, float(collapse_drop)
        self.chance_level, self.chance_margin = chance_level, float(chance_margin)
        self.best = None
        self.best_epoch = None
        self.last = None
        self._best_weights = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best, self.best_epoch, self.last, self._best_weights = None, None, None, None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(
                f"KeepBestEpoch monitors {self.monitor!r}, which fit did not log (logged: {', '.join(sorted(logs or {}))}). "
                "Pass validation_data to fit."
            )
        value = float(value)
        self.last = value
        if math.isfinite(value) and (self.best is None or value > self.best):
            self.best, self.best_epoch = value, epoch
            self._best_weights = [keras.ops.convert_to_numpy(v) for v in self.model.weights]

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._best_weights is None:
            return
        if self.last is not None and self.best - self.last > self.collapse_drop:
            logger.warning(
                "The last epoch's %s (%.4f) fell %.1f points below the best epoch's (%.4f, epoch %d); "
                "keeping the best epoch's weights. Lower the learning rate or add warm-up if this recurs.",
                self.monitor,
                self.last,
                100 * (self.best - self.last),
                self.best,
                self.best_epoch + 1,
            )
        for variable, value in zip(self.model.weights, self._best_weights):
            variable.assign(value)
        logger.info("Restored the weights of epoch %d (%s %.4f).", self.best_epoch + 1, self.monitor, self.best)
        if self.chance_level is not None and self.best <= self.chance_level + self.chance_margin:
            raise ChanceLevelError(
                f"The best epoch reached {self.monitor} = {100 * self.best:.1f} %, no better than chance ({100 * self.chance_level:.1f} %). "
                "The model learned nothing usable; lower the learning rate, train longer, or check the labels. Nothing was saved."
            )


class DataPass(keras.callbacks.Callback):
    """Tells the training data which pass each epoch is, so that a resumed run reads epoch k in epoch k's order.

    Keras' `BackupAndRestore` restores the weights and the epoch, not the data
    order: tf.data and NumPy batches start again from their first order, so a
    killed-and-resumed run would read other batches than an uninterrupted one. With this
    callback (used by `kdistill distill`), each epoch draws its order from
    `(seed, epoch)`, whichever process runs it (`kdistill.data.batches.set_pass`).

    Args:
        dataset: the training data (`ArrayBatches` or a kdistill tf.data pipeline).
    """

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        batches.set_pass(self.dataset, epoch)
