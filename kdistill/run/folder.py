"""Run folders in use are locked: a second run into the same folder is refused while the first is alive.

Example:
    >>> from kdistill.run import folder
    >>> folder.LOCK_NAME
    '.kdistill.lock'
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from typing import Iterator

from kdistill import files
from kdistill.errors import UserError

__all__ = ["LOCK_NAME", "RunFolderLockedError", "run_folder"]

logger = logging.getLogger(__name__)


#: the lock file of a run folder in use: {"pid", "host"} of the process using it
LOCK_NAME = ".kdistill.lock"


class RunFolderLockedError(UserError):
    """Another live kdistill run is using the run folder."""


def _read_lock(path: str) -> dict:
    try:
        with open(path) as handle:
            holder = json.load(handle)
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else {}
    except (OSError, ValueError):
        return {}  # unreadable: no process can be named as its holder


def _take_lock(folder: str) -> str:
    """Creates `folder/LOCK_NAME` holding this process's pid (whole: written aside, then hard-linked into place, which fails if
    it exists); takes over a lock whose process is gone; raises `RunFolderLockedError` naming a live holder."""
    lock = os.path.join(folder, LOCK_NAME)
    partial = f"{lock}.{os.getpid()}.partial"
    with open(partial, "w") as handle:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, handle)
    try:
        for _ in range(3):
            try:
                os.link(partial, lock)
                return lock
            except FileExistsError:
                holder = _read_lock(lock)
                if holder and (holder.get("host") != socket.gethostname() or files.process_alive(holder["pid"])):
                    raise RunFolderLockedError(
                        f"The run folder {folder!r} is in use by another kdistill run (pid {holder['pid']} on {holder.get('host', '?')}). "
                        f"Wait for it to finish or pass another --output-dir; if that process is not a kdistill run, delete {lock!r}."
                    ) from None
                logger.warning(
                    "Taking over the lock of %s: its process (pid %s) is no longer running (a crash or a kill).",
                    folder,
                    holder.get("pid", "unknown"),
                )
                with contextlib.suppress(FileNotFoundError):
                    os.remove(lock)
        raise RunFolderLockedError(
            f"Could not lock the run folder {folder!r}: another run keeps taking it. Pass another --output-dir."
        )
    finally:
        os.remove(partial)


@contextlib.contextmanager
def run_folder(folder: str) -> Iterator[str]:
    """Creates and locks a run folder for the block; on exit unlocks it and removes the folders it created if they stayed empty.

    The lock (`LOCK_NAME`, holding the pid) refuses a second run into the same
    folder while the first is alive; a lock left by a killed run is taken over
    (and logged). A run that stops before writing anything (a refused check, a
    missing file) leaves no empty folder behind.

    Example:
        >>> import tempfile
        >>> folder = os.path.join(tempfile.mkdtemp(), "run")
        >>> with run_folder(folder):
        ...     sorted(os.listdir(folder))
        ['.kdistill.lock']
        >>> os.path.exists(folder)  # nothing was written: no empty folder stays
        False
    """
    with files.new_folders(folder):
        lock = None
        try:
            lock = _take_lock(folder)
            yield folder
        finally:
            if lock is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(lock)
