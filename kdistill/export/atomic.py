"""Write whole or not at all: a staging folder beside the target, then one rename.

Every file or folder kdistill writes (exported models, the teacher cache)
is built under a hidden staging folder in the destination's own folder and
moved into place by `os.replace` when complete; the staging folder is removed
whatever happens. A staging folder's name carries its writer's process id: one
left behind by a killed process is removed by the next writer in that folder
(and logged). `check_output_path` refuses an output path that cannot be
written (a file where a folder is needed, no permission) before any work.

Example:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with staging_folder(folder) as staging:
    ...     _ = open(os.path.join(staging, "model.bin"), "w").write("weights")
    ...     replace(os.path.join(staging, "model.bin"), os.path.join(folder, "model.bin"))
    >>> sorted(os.listdir(folder))
    ['model.bin']
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Iterator

__all__ = ["staging_folder", "replace", "remove_stale_staging", "process_alive", "check_output_path", "check_free_space", "InsufficientSpaceError"]

logger = logging.getLogger(__name__)


class InsufficientSpaceError(OSError):
    """The disk holding an output has less free space than the write needs."""


def _existing_parent(path: str) -> str:
    path = os.path.abspath(path or ".")
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_free_space(path: str, needed_bytes: int, what: str, hint: str = "") -> None:
    """Raises `InsufficientSpaceError` naming the path, the space needed and the space free, before a large write.

    A disk that fills up during a write used to end in pages of h5py errors and a
    segfault; checking first costs one `statvfs`. A 5 % margin is kept.

    Example:
        >>> check_free_space(".", 1, "a tiny file")
        >>> check_free_space(".", 10**18, "an exabyte")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        kdistill.export.atomic.InsufficientSpaceError: Not enough disk space for an exabyte in ...: it needs 1000000000.0 GB, ... free.
    """
    folder = _existing_parent(path)
    free = shutil.disk_usage(folder).free
    if free < needed_bytes * 1.05:
        raise InsufficientSpaceError(f"Not enough disk space for {what} in {folder}: it needs {_size(needed_bytes)}, "
                                     f"{_size(free)} free.{(' ' + hint) if hint else ''}")


def _size(count: float) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def process_alive(pid: int) -> bool:
    """True while process `pid` runs on this host (also someone else's, which may not be signalled)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_staging(parent: str, prefix: str) -> list[str]:
    """Removes `parent/<prefix><pid>-*` folders whose process is gone (left by a killed writer); returns their paths."""
    removed = []
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        if not name.startswith(prefix):
            continue
        owner = name[len(prefix):].split("-", 1)[0]
        if owner.isdigit() and process_alive(int(owner)):
            continue  # a writer at work (this process or another)
        path = os.path.join(parent, name)
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
        removed.append(path)
    if removed:
        logger.info("Removed %d unfinished staging folder(s) left by a killed run: %s", len(removed), ", ".join(removed))
    return removed


def check_output_path(path: str, kind: str = "folder") -> None:
    """Raises ValueError, before any work, when `path` (a `"folder"` or a `"file"`) cannot be created and written.

    Example:
        >>> check_output_path(os.path.join(os.__file__, "run"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Cannot write the output folder '.../os.py/run': '.../os.py' is a file, not a folder. ...
    """
    if kind == "folder" and os.path.isfile(path):
        raise ValueError(f"Cannot write the output folder {path!r}: it is a file. Choose another path.")
    if kind == "file" and os.path.isdir(path):
        raise ValueError(f"Cannot write the output file {path!r}: it is a folder. Give a file name inside it.")
    ancestor = os.path.dirname(os.path.abspath(path)) if kind == "file" else os.path.abspath(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ValueError(f"Cannot write the output {kind} {path!r}: {ancestor!r} is a file, not a folder. Choose another path.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"Cannot write the output {kind} {path!r}: no permission to write in {ancestor!r}. Choose another path.")


@contextlib.contextmanager
def staging_folder(parent: str, prefix: str = ".staging-") -> Iterator[str]:
    """A new hidden folder `parent/<prefix><pid>-*` (parent created if needed), removed on exit; first clears stale ones."""
    os.makedirs(parent, exist_ok=True)
    remove_stale_staging(parent, prefix)
    staging = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace(source: str, target: str) -> None:
    """Moves `source` (file or folder) to `target`, replacing what is there."""
    if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
    elif os.path.exists(target):
        os.remove(target)
    os.replace(source, target)
