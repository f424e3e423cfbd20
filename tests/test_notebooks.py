"""The example notebooks execute (small settings) and are committed with outputs from a real run."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import resnet50_shaped_teacher
from test_data import make_fashion_mnist

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "notebooks")
NAMES = ["distill_resnet50_into_mobilenetv2.ipynb", "choosing_a_distillation_method.ipynb"]


def _text(notebook):
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") + str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_shows_outputs_of_a_real_run(name):
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("outputs") for cell in code), "every code cell has stored outputs"
    assert not any(output.get("output_type") == "error" for cell in code for output in cell["outputs"])
    assert "quick: False" in _text(notebook)  # stored from the default settings, not the test's
    assert any("image/png" in output.get("data", {}) for cell in code for output in cell["outputs"])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_with_quick_settings(name, tmp_path, monkeypatch):
    make_fashion_mnist(tmp_path / "data", train=300, test=64, seed=6)
    monkeypatch.setenv("KDISTILL_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("KDISTILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KDISTILL_NOTEBOOK_OUTPUT", str(tmp_path / "out"))
    teacher = tmp_path / "teacher.keras"
    resnet50_shaped_teacher().save(teacher)  # ResNet50's stage names at a fraction of its cost
    monkeypatch.setenv("KDISTILL_NOTEBOOK_TEACHER", str(teacher))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    for cell in notebook.cells:
        cell["outputs"] = []
    # A few steps each: run eagerly, as tests marked `eager` do (tests/conftest.py), rather than trace every model
    notebook.cells.insert(
        0, nbformat.v4.new_code_cell("import tensorflow as tf\ntf.config.run_functions_eagerly(True)")
    )
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = _text(notebook)
    assert "quick: True" in text and "top-1" in text


def _cell(name: str, marker: str) -> str:
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    return next(cell.source for cell in notebook.cells if cell.cell_type == "code" and marker in cell.source)


#: runs the install part of the set-up cell as on a fresh Colab runtime: google.colab importable, kdistill not; pip is
#: recorded, not run
_ON_COLAB = """
import subprocess, sys, types
sys.modules["google"], sys.modules["google.colab"] = types.ModuleType("google"), types.ModuleType("google.colab")
subprocess.run = lambda command, **options: print("RAN", command)
exec(sys.stdin.read())
print("IN_COLAB", IN_COLAB)
"""


@pytest.mark.parametrize("name", NAMES)
def test_install_cell_on_colab_installs_the_wheel_that_make_wheel_builds(name, tmp_path):
    """It ran `pip install kdistill` (a name not on the package index), then asked for an unexplained KDISTILL_SOURCE."""
    import subprocess
    import sys

    setup = _cell(name, "IN_COLAB =")
    install_part = setup[: setup.index("check=True)") + len("check=True)")]
    environment = {key: value for key, value in os.environ.items() if key != "KDISTILL_SOURCE"}

    def run():  # -S -I: no site-packages, as on a machine where kdistill is not installed
        return subprocess.run(
            [sys.executable, "-S", "-I", "-c", _ON_COLAB],
            input=install_part,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=environment,
        )

    result = run()
    assert result.returncode != 0 and "Run `make wheel` in kdistill's repository, upload the wheel" in result.stderr
    (tmp_path / "kdistill-0.3.0-py3-none-any.whl").write_bytes(b"")  # uploaded beside the notebook
    result = run()
    assert result.returncode == 0, result.stderr
    assert "'install', '-q', 'kdistill-0.3.0-py3-none-any.whl']" in result.stdout and "IN_COLAB True" in result.stdout


def test_make_wheel_builds_the_wheel_the_notebooks_install(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(NOTEBOOKS))
    result = subprocess.run(
        ["make", "-s", "-C", root, "wheel", f"BIN={os.path.dirname(sys.executable)}", f"WHEEL_DIR={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import kdistill
    import zipfile

    wheel = tmp_path / f"kdistill-{kdistill.__version__}-py3-none-any.whl"
    assert {"kdistill/cli/__init__.py", "kdistill/cli/__main__.py"} <= set(zipfile.ZipFile(wheel).namelist())


@pytest.mark.parametrize("name", NAMES)
def test_data_cell_on_colab_asks_tfds_to_download_cifar10_and_kdistill_never_downloads_unasked(name, monkeypatch):
    """The cell called data.load("tfds:cifar10") on Colab, which refuses an unprepared dataset: on a fresh runtime it failed."""
    import sys
    import types

    import numpy as np
    import tensorflow as tf

    from kdistill import data

    class Builder:  # TFDS' DatasetBuilder as from_tfds uses it; "downloads" by preparing tiny random splits
        data_dir, prepared = "/root/tensorflow_datasets", False
        info = types.SimpleNamespace(
            splits={"train": None, "test": None},
            features={"label": types.SimpleNamespace(names=["airplane", "automobile"], num_classes=2)},
        )

        def is_prepared(self):
            return Builder.prepared

        def download_and_prepare(self):
            Builder.prepared = True

        def as_dataset(self, split, as_supervised):
            count = 40 if split == "train" else 8
            return tf.data.Dataset.from_tensor_slices((np.zeros((count, 8, 8, 3), "uint8"), np.arange(count) % 2))

    monkeypatch.setitem(
        sys.modules, "tensorflow_datasets", types.SimpleNamespace(builder=lambda name, data_dir=None: Builder())
    )
    with pytest.raises(FileNotFoundError, match="kdistill never downloads at run time"):
        data.load("tfds:cifar10")
    namespace = {"data": data, "IN_COLAB": True, "QUICK": True, "DATA_DIR": None}
    exec(_cell(name, "SOURCE ="), namespace)
    assert (
        Builder.prepared
        and namespace["splits"].class_names == ["airplane", "automobile"]
        and namespace["splits"].counts["test"] == 8
    )
