"""The per-epoch backup of a run: Keras' `BackupAndRestore`, written whole or not at all and tied to the run's settings.

`kdistill.run.resume` puts it in a run folder and resumes from it; `kdistill.run.training.train_teacher` backs up a
teacher's training with it. Its errors say why a backup cannot be resumed and what to do instead.

Example:
    >>> import tempfile
    >>> backup = SafeBackupAndRestore(tempfile.mkdtemp(), run_config={"epochs": 3})
    >>> backup.run_config
    {'epochs': 3}
"""

from __future__ import annotations

import json
import logging
import os
import zipfile

import keras
import numpy as np

from kdistill import files
from kdistill.errors import UserError, shorten

__all__ = ["SafeBackupAndRestore", "StaleBackupError", "DamagedBackupError"]

logger = logging.getLogger(__name__)

#: what reading a `state.npz` that a kill -9 or a full disk cut short raises
_CUT_SHORT = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


class StaleBackupError(UserError):
    """The backup in a run folder was made by a run with another configuration."""


class DamagedBackupError(UserError):
    """The backup in a run folder cannot be read (cut short by a kill or a full disk)."""


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore`, with backups written whole or not at all and tied to the run's configuration.

    * The weights and the epoch record are written under temporary names and
      renamed into place, and the previous complete pair is kept (`.bkp`) until
      the new one is in place: a kill during a backup leaves a loadable backup
      (Keras' own callback rewrites `latest.weights.h5` in place, so a kill
      mid-write leaves a file the rerun cannot open).
    * `run_config` (the run's settings) is stored beside the backup; resuming
      under another configuration raises `StaleBackupError` naming the keys that
      differ, instead of Keras' "A total of N objects could not be loaded".
    * Only what training changes is backed up (`state.npz`: the student, the
      projections, loss heads, random-seed states and optimizer), not a frozen
      teacher's weights, so a backup is about the student's own size.

    Args:
        backup_dir: the backup folder.
        run_config: JSON-able settings that must match to resume (None: not checked).
        fix: what a refused resumption should do instead, for the messages.
    """

    def __init__(
        self,
        backup_dir: str,
        run_config: dict | None = None,
        fix: str = "Pass a new --output-dir, or --restart to discard the backup and start afresh.",
    ):
        super().__init__(backup_dir, double_checkpoint=True)
        self.run_config = json.loads(json.dumps(run_config, default=str)) if run_config is not None else None
        self.fix = fix
        self._config_path = os.path.join(backup_dir, "run_config.json")

    def _check_run_config(self) -> None:
        if self.run_config is not None and os.path.exists(self._config_path):
            with open(self._config_path) as handle:
                stored = json.load(handle)
            changed = sorted(
                key for key in set(stored) | set(self.run_config) if stored.get(key) != self.run_config.get(key)
            )
            if changed:
                raise StaleBackupError(
                    f"The interrupted run backed up in {self.backup_dir!r} used another configuration (different: {', '.join(changed)}), "
                    f"so it cannot be resumed with this one. {self.fix}"
                )

    @property
    def _state_path(self) -> str:
        return os.path.join(self.backup_dir, "state.npz")

    def _state_variables(self) -> list:
        """What training changes, in a fixed order: every variable but a frozen teacher's, and the optimizer's (metrics restart each epoch)."""
        teacher = getattr(self.model, "teacher", None)
        frozen = (
            {id(v) for v in teacher.variables} if isinstance(teacher, keras.Model) and not teacher.trainable else set()
        )
        optimizer_variables = (
            list(self.model.optimizer.variables) if getattr(self.model, "optimizer", None) is not None else []
        )
        seen, state = set(), []
        for variable in list(self.model.variables) + optimizer_variables:
            if id(variable) not in frozen and id(variable) not in seen:
                seen.add(id(variable))
                state.append(variable)
        return state

    def _write_state(self, path: str) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, *[keras.ops.convert_to_numpy(v) for v in self._state_variables()])

    def _read_state(self, path: str) -> None:
        variables = self._state_variables()
        with np.load(path) as stored:
            values = [stored[f"arr_{index}"] for index in range(len(stored.files))]
        shapes = [tuple(v.shape) for v in variables]
        if len(values) != len(variables) or any(tuple(value.shape) != shape for value, shape in zip(values, shapes)):
            raise StaleBackupError(
                f"The backup {path!r} holds {len(values)} arrays for a model with {len(variables)} variables of other "
                f"shapes: it was made for another model. {self.fix}"
            )
        for variable, value in zip(variables, values):
            variable.assign(value)

    def _load_model(self) -> None:
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # its variables must exist to be restored
        damaged = []
        for state, metadata in (
            (self._state_path, self._training_metadata_path),
            (self._state_path + ".bkp", self._prev_training_metadata_path),
        ):
            if not os.path.exists(state) or not os.path.exists(metadata):
                continue
            try:
                self._read_state(state)
                with open(metadata) as handle:
                    self.model._initial_epoch = json.load(handle)["epoch"]
                return
            except _CUT_SHORT as error:
                if isinstance(error, StaleBackupError):
                    raise
                damaged.append(f"{os.path.basename(state)}: {shorten(str(error), 80)}")
                logger.warning("The backup %s is unreadable (%s); trying the previous one.", state, error)
        if damaged:
            raise DamagedBackupError(
                f"The backup of the interrupted run in {self.backup_dir!r} is damaged ({'; '.join(damaged)}), so it cannot be "
                f"resumed. {self.fix}"
            )

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._check_run_config()
        self._load_model()
        # Before the first epoch, not after it: the new backup is written beside the previous one, so two must fit.
        self._check_space(2 * self._state_bytes(), "the per-epoch backup (two copies while one replaces the other)")

    def _state_bytes(self) -> int:
        return sum(
            int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
            for v in self._state_variables()
        )

    def _check_space(self, needed: int, what: str) -> None:
        kept = (
            "The previous backup is kept; free some space and rerun the same command to resume from it."
            if os.path.exists(self._state_path)
            else "Free some space (or pass another --output-dir) and rerun."
        )
        files.check_free_space(self.backup_dir, needed, what, hint=kept)

    def _save_model(self) -> None:
        self._check_space(self._state_bytes(), "the per-epoch backup")
        os.makedirs(self.backup_dir, exist_ok=True)  # after the check: a full disk leaves no empty backup folder
        with (
            files.atomic_write(self._state_path) as partial_state,
            files.atomic_write(self._training_metadata_path) as partial_metadata,
        ):
            self._write_state(partial_state)
            with open(partial_metadata, "w") as handle:
                json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, handle)
            # The previous complete pair becomes the fallback; leaving the block moves the new pair into place (renames,
            # not rewrites).
            for current, previous in (
                (self._state_path, self._state_path + ".bkp"),
                (self._training_metadata_path, self._prev_training_metadata_path),
            ):
                if os.path.exists(current):
                    os.replace(current, previous)
        if self.run_config is not None and not os.path.exists(self._config_path):
            files.write_json(self._config_path, self.run_config)
