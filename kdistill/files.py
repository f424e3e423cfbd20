"""Every file kdistill writes, written whole or not at all: a leaf module (it imports nothing from kdistill).

A file is written under a temporary name in its own folder and renamed into
place when complete (`atomic_write`, `write_json`); a folder is built in a
hidden staging folder beside its destination and moved into place
(`staging_folder`, `replace`). Temporary names carry their writer's process
id: one left behind by a killed process is removed by the next writer in that
folder (and logged). `check_output_path` and `check_free_space` refuse, before
any work, an output that cannot be written or does not fit on the disk.

Example:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> write_json(os.path.join(folder, "summary.json"), {"top1": 0.75})
    >>> with staging_folder(folder) as staging:
    ...     _ = open(os.path.join(staging, "model.bin"), "w").write("weights")
    ...     replace(os.path.join(staging, "model.bin"), os.path.join(folder, "model.bin"))
    >>> sorted(os.listdir(folder))
    ['model.bin', 'summary.json']
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Iterator

__all__ = [
    "atomic_write",
    "write_json",
    "write_text",
    "partial_prefix",
    "staging_folder",
    "replace",
    "remove_stale_staging",
    "process_alive",
    "check_output_path",
    "check_free_space",
    "InsufficientSpaceError",
    "new_folders",
]

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

    A disk that fills up during a write ends in pages of h5py errors and a
    segfault; checking first costs one `statvfs`. A 5 % margin is kept.

    Example:
        >>> check_free_space(".", 1, "a tiny file")
        >>> check_free_space(".", 10**18, "an exabyte")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        kdistill.files.InsufficientSpaceError: Not enough disk space for an exabyte in ...: it needs 1000000000.0 GB, ... free.
    """
    folder = _existing_parent(path)
    free = shutil.disk_usage(folder).free
    if free < needed_bytes * 1.05:
        raise InsufficientSpaceError(
            f"Not enough disk space for {what} in {folder}: it needs {_size(needed_bytes)}, "
            f"{_size(free)} free.{(' ' + hint) if hint else ''}"
        )


def _size(count: float) -> str:
    """`'1.2 GB'`, `'3.4 MB'`, `'12 kB'` (a few kB read as 0.0 MB)."""
    return (
        f"{count / 1e9:.1f} GB"
        if count >= 1e9
        else f"{count / 1e6:.1f} MB"
        if count >= 1e6
        else f"{count / 1e3:.0f} kB"
    )


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
    """Removes `parent/<prefix><pid>-*` files and folders whose process is gone (left by a killed writer); returns their paths."""
    removed = []
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        if not name.startswith(prefix):
            continue
        owner = name[len(prefix) :].split("-", 1)[0]
        if owner.isdigit() and process_alive(int(owner)):
            continue  # a writer at work (this process or another)
        path = os.path.join(parent, name)
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
        removed.append(path)
    if removed:
        logger.info(
            "Removed %d unfinished staging folder(s) left by a killed run: %s", len(removed), ", ".join(removed)
        )
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
        raise ValueError(
            f"Cannot write the output {kind} {path!r}: {ancestor!r} is a file, not a folder. Choose another path."
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(
            f"Cannot write the output {kind} {path!r}: no permission to write in {ancestor!r}. Choose another path."
        )


def partial_prefix(path: str) -> str:
    """How the unfinished copies of `path` start (then the writer's process id): `.student.keras.partial-<pid>-...`.

    Example:
        >>> partial_prefix("runs/a/student.keras")
        '.student.keras.partial-'
    """
    return f".{os.path.basename(path)}.partial-"


@contextlib.contextmanager
def atomic_write(path: str, suffix: str = "") -> Iterator[str]:
    """A temporary path beside `path` to write; renamed to `path` when the block ends without an error, removed otherwise.

    The folder is created if needed, and unfinished copies of `path` left by a
    killed writer are removed first. A kill or a full disk mid-write leaves the
    previous file (if any) intact and no partial one.

    Args:
        path: the file to write.
        suffix: the temporary name's ending, for writers that read it (Keras' `save` wants `.keras`).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "weights.bin")
        >>> with atomic_write(path) as partial:
        ...     _ = open(partial, "wb").write(b"weights")
        >>> open(path, "rb").read()
        b'weights'
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_staging(folder, partial_prefix(path))
    handle, partial = tempfile.mkstemp(prefix=f"{partial_prefix(path)}{os.getpid()}-", suffix=suffix, dir=folder)
    os.close(handle)
    try:
        yield partial
        if os.path.isfile(partial):
            # mkstemp's 0600 is for the unfinished copy; the file gets what open() would give it
            os.chmod(partial, _mode(0o666))
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _mode(full: int) -> int:
    """`full` (0o666 for a file, 0o777 for a folder) less the process's umask: the mode open() and mkdir() give."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


def write_text(path: str, text: str) -> None:
    """Writes `text` (UTF-8), whole or not at all."""
    with atomic_write(path) as partial, open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json(path: str, value: Any, indent: int | None = 2) -> None:
    """Writes `value` as JSON, whole or not at all; NumPy numbers (anything `float` accepts) are written as numbers."""
    with atomic_write(path) as partial, open(partial, "w") as handle:
        json.dump(value, handle, indent=indent, default=float)


@contextlib.contextmanager
def staging_folder(parent: str, prefix: str = ".staging-") -> Iterator[str]:
    """A new hidden folder `parent/<prefix><pid>-*` (parent created if needed), removed on exit; first clears stale ones."""
    os.makedirs(parent, exist_ok=True)
    remove_stale_staging(parent, prefix)
    staging = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)
    # a staged folder moved into place keeps its mode: mkdtemp's 0700 would hide it from others
    os.chmod(staging, _mode(0o777))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def new_folders(folder: str) -> Iterator[str]:
    """Creates `folder` (and the folders above it that are missing) for the block; on exit removes those it created that stayed empty.

    A write that fails (a full disk, a refused check) then leaves no empty folder behind.

    Example:
        >>> import tempfile
        >>> parent = tempfile.mkdtemp()
        >>> with new_folders(os.path.join(parent, "export", "serving")):
        ...     pass
        >>> os.listdir(parent)
        []
    """
    created, path = [], os.path.abspath(folder)
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    try:
        yield folder
    finally:
        for path in created:  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(path)  # only if empty


def replace(source: str, target: str) -> None:
    """Moves `source` (file or folder) to `target`, replacing what is there."""
    if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
    elif os.path.exists(target):
        os.remove(target)
    os.replace(source, target)
