"""Write whole or not at all: a staging folder beside the target, then one rename.

Every file or folder kdistill writes (exported models, the teacher cache)
is built under a hidden staging folder in the destination's own folder and
moved into place by `os.replace` when complete; the staging folder is removed
whatever happens.

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
import os
import shutil
import tempfile
from typing import Iterator

__all__ = ["staging_folder", "replace"]


@contextlib.contextmanager
def staging_folder(parent: str, prefix: str = ".staging-") -> Iterator[str]:
    """A new hidden folder inside `parent` (created if needed), removed on exit."""
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=prefix, dir=parent)
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
