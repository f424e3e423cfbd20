"""Installing where users are: Python 3.12 (Colab), no TensorFlow forced on a machine that has its own."""

import json
import os
import re
import shutil
import subprocess
from importlib import metadata

import pytest
from _no_tensorflow import check_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "tests")


def _requirements(extra=None):
    marker = f'extra == "{extra}"'
    found = []
    for requirement in metadata.requires("kdistill") or []:
        specifier, _, condition = requirement.partition(";")
        if (extra is None and "extra ==" not in condition) or (extra is not None and marker in condition):
            found.append(re.match(r"[A-Za-z0-9_.\-]+", specifier.strip()).group(0).lower())  # the distribution's name
    return found


def test_no_tensorflow_build_is_forced_on_an_existing_install():
    """`pip install kdistill` next to Colab's GPU TensorFlow must not add tensorflow-cpu (nor any TensorFlow)."""
    core = _requirements()
    assert "keras" in core and not [name for name in core if name.startswith("tensorflow")], core
    tensorflow = _requirements("tensorflow")
    # an existing GPU build satisfies it
    assert "tensorflow" in tensorflow and "tensorflow-cpu" not in tensorflow, tensorflow
    assert "tensorflow-cpu" in _requirements("tensorflow-cpu")  # what the Makefile installs


def _python(version):
    candidates = [shutil.which(f"python{version}"), os.path.expanduser(f"~/.pyenv/versions/{version}.1/bin/python")]
    candidates += sorted(
        os.path.join(root, name, "bin", "python")
        for root in [os.path.expanduser("~/.pyenv/versions")]
        if os.path.isdir(root)
        for name in os.listdir(root)
        if name.startswith(f"{version}.")
    )
    for path in candidates:
        if (
            path
            and os.path.exists(path)
            and subprocess.run([path, "-c", "import venv"], capture_output=True).returncode == 0
        ):
            return path
    return None


@pytest.mark.slow
def test_python_3_12_installs_the_core_and_distils_on_jax_without_tensorflow(tmp_path):
    """Colab runs Python 3.12: the core plus JAX installs there (no TensorFlow) and a small distillation trains.

    It is also the JAX run of tests/_no_tensorflow.py (test_backends.py runs it on PyTorch): training, evaluation,
    quantization-aware fine-tuning and the export's error, in a process where TensorFlow cannot be imported.
    """
    python = _python("3.12")
    assert python, "this test needs a Python 3.12 interpreter (the project's machines have one under ~/.pyenv)"
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    # --no-compile: no .pyc for the thousands of modules never imported here (pip ignores compile errors anyway)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--no-compile",
        "-c",
        os.path.join(ROOT, "constraints.txt"),
    ]
    installed = subprocess.run(pip + [f"{ROOT}[jax]", "pytest"], capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    listing = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = {row["name"].lower() for row in json.loads(listing.stdout)}
    assert "kdistill" in names and "jax" in names and not [n for n in names if n.startswith("tensorflow")], sorted(
        names
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), os.path.join(HERE, "_no_tensorflow.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check_report(json.loads(result.stdout.strip().splitlines()[-1]), "jax")
