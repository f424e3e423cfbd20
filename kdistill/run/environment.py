"""Where a figure was measured: the machine and the versions that made it, and file names that travel with the repository.

Every results file kdistill writes (the demo's `summary.json`, the benchmarks'
JSON) records `describe()`, so a number read later says which CPU, how many
cores and which TensorFlow, Keras, JAX and NumPy produced it; and names files
with `portable`, relative to the folder the command ran in, never as an
absolute path of the machine it ran on.

Example:
    >>> info = describe()
    >>> import kdistill
    >>> sorted(info)[:3], info["cpu_cores"] > 0, info["versions"]["kdistill"] == kdistill.__version__
    (['backend', 'cpu', 'cpu_cores'], True, True)
    >>> portable_command(["--out", "/nowhere/results", "--seeds", "3"], root="/nowhere")
    '--out results --seeds 3'
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
from typing import Sequence

__all__ = ["describe", "cpu_model", "portable", "portable_command"]

_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "jax", "numpy", "kdistill")


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo` on Linux, else `platform.processor()`), or the architecture when unknown."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """`{"cpu", "cpu_cores", "machine", "python", "backend", "versions": {package: version}}` of this process."""
    import kdistill

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    # the code that ran, which need not be the installed distribution (a checkout on PYTHONPATH, an older install)
    versions["kdistill"] = kdistill.__version__
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count() or 0,
        "machine": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "backend": backend,
        "versions": versions,
    }


def portable(path: str, root: str | None = None) -> str:
    """`path` relative to `root` (default: the working folder), so that it names the same file on another machine.

    A path outside `root` stays as it is only when it was given relative; an absolute
    one is cut to its relative form from `root` (`../elsewhere/file`).
    """
    root = os.path.abspath(root or os.getcwd())
    if not os.path.isabs(path):
        return path
    return os.path.relpath(path, root)


def portable_command(argv: Sequence[str], root: str | None = None) -> str:
    """A command line with every absolute path made `portable`, quoted for a shell."""
    return " ".join(shlex.quote(portable(part, root) if part.startswith(os.sep) else part) for part in argv)
