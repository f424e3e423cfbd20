"""Resuming an interrupted run: the per-epoch backup in its run folder, the settings it must match, and its history.

A run writes `<run folder>/backup/` after every epoch (`kdistill.run.backup.SafeBackupAndRestore`) and `history.csv` as it goes;
running the same command again resumes from the last finished epoch. `kdistill.run.jobs.distill` (classifiers) and
`kdistill.run.segmentation.distill` (segmenters) share these steps.

Example:
    >>> "epochs" in RESUMABLE_CHANGES
    True
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import NamedTuple

import keras

from kdistill.errors import UserError
from kdistill.run import callbacks, interrupts
from kdistill.run.backup import SafeBackupAndRestore

__all__ = [
    "RESUMABLE_CHANGES",
    "Backup",
    "resume_key",
    "refuse_finished_run",
    "backup_callbacks",
    "drop_empty_history",
    "read_history_csv",
]

logger = logging.getLogger(__name__)

#: settings that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = ("epochs", "output_dir", "run_name", "check_teacher", "strategy", "tensorboard")


class Backup(NamedTuple):
    """The callbacks that back a run up (progress first), the progress callback (for Ctrl-C's line), whether it resumes, its history file."""

    callbacks: list
    progress: interrupts.EpochProgress
    resuming: bool
    history_csv: str


def resume_key(settings: dict) -> dict:
    """The settings a backup must have been made with to be resumed: all but `RESUMABLE_CHANGES`."""
    return {key: value for key, value in settings.items() if key not in RESUMABLE_CHANGES}


def refuse_finished_run(output_dir: str) -> None:
    """UserError when `output_dir` holds a finished run (summary.json and no backup to resume): running again would silently retrain it."""
    if os.path.exists(os.path.join(output_dir, "summary.json")) and not os.path.exists(
        os.path.join(output_dir, "backup")
    ):
        raise UserError(
            f"{output_dir!r} holds a finished run (summary.json): pass --restart (restart=True) to train it again over it, "
            "or choose a new --output-dir."
        )


def backup_callbacks(output_dir: str, settings: dict, restart: bool = False) -> Backup:
    """The per-epoch backup of a run in `output_dir`, resumed when one is there (discarded first with `restart`).

    The callbacks: epoch progress (the epoch a Ctrl-C stops in), the backup of
    weights and optimizer state tied to `resume_key(settings)`, the history
    appended to `history.csv`, and a stop naming the term on a non-finite loss.
    """
    history_csv = os.path.join(output_dir, "history.csv")
    backup_dir = os.path.join(output_dir, "backup")
    if restart and os.path.exists(backup_dir):
        logger.info("Discarding the backup of the interrupted run in %s (--restart)", backup_dir)
        shutil.rmtree(backup_dir)
    resuming = os.path.exists(os.path.join(backup_dir, "training_metadata.json"))
    if resuming:
        logger.info("Resuming the interrupted run from %s", backup_dir)
    elif os.path.exists(history_csv):
        os.remove(history_csv)  # a finished earlier run in this folder: start its history afresh
    progress = interrupts.EpochProgress()
    run_callbacks = [
        progress,
        SafeBackupAndRestore(backup_dir, run_config=resume_key(settings)),
        keras.callbacks.CSVLogger(history_csv, append=True),
        callbacks.StopOnNonFiniteLoss(),
    ]
    return Backup(run_callbacks, progress, resuming, history_csv)


def drop_empty_history(history_csv: str) -> None:
    """Removes the `history.csv` CSVLogger created for a run stopped in its first epoch, so that no empty file (or folder) is left."""
    if os.path.exists(history_csv) and os.path.getsize(history_csv) == 0:
        os.remove(history_csv)


def read_history_csv(path: str) -> dict:
    """History from CSVLogger's file, one row per epoch (the last row wins if an epoch was logged twice); columns never logged left out."""
    import csv

    if not os.path.exists(path):
        return {}
    with open(path, newline="") as handle:
        rows = {int(row["epoch"]): row for row in csv.DictReader(handle)}
    history: dict = {}
    for epoch in sorted(rows):
        # "NA": a metric the epoch did not log (CSVLogger's val_ columns of a run without validation)
        for key, value in rows[epoch].items():
            history.setdefault(key, []).append(
                int(value) if key == "epoch" else float("nan") if value == "NA" else float(value)
            )
    return {key: values for key, values in history.items() if not all(value != value for value in values)}
