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
    notebook.cells.insert(0, nbformat.v4.new_code_cell("import tensorflow as tf\ntf.config.run_functions_eagerly(True)"))
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = _text(notebook)
    assert "quick: True" in text and "top-1" in text


@pytest.mark.parametrize("name", NAMES)
def test_install_cell_asks_for_a_source_instead_of_an_unregistered_package_name(name):
    """The cell ran `pip install kdistill`, a name not on the package index (anyone could take it)."""
    import subprocess
    import sys

    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    setup = next(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert '"install", "-q", "kdistill"]' not in setup and "KDISTILL_SOURCE" in setup
    install_part = setup[: setup.index("check=True)") + len("check=True)")]
    # -S -I: no site-packages, as on a machine where kdistill is not installed
    result = subprocess.run([sys.executable, "-S", "-I", "-c", install_part], capture_output=True, text=True, timeout=60,
                            env={key: value for key, value in os.environ.items() if key != "KDISTILL_SOURCE"})
    assert result.returncode != 0 and "kdistill is not installed here. Set KDISTILL_SOURCE" in result.stderr
