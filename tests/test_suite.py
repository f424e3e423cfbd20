"""How the suite itself runs: the `eager` marker (tests/conftest.py) and pytest-xdist's groups (pyproject.toml)."""

import os
import subprocess
import sys

import keras
import pytest

TENSORFLOW_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow setting")

GROUPED = """
import os

import pytest

pytestmark = pytest.mark.xdist_group("one")


@pytest.mark.parametrize("index", range(6))
def test_worker(index):
    with open(f"worker_{index}", "w") as handle:
        handle.write(os.environ["PYTEST_XDIST_WORKER"])
"""


@TENSORFLOW_ONLY
@pytest.mark.eager
def test_a_test_marked_eager_runs_functions_eagerly():
    import tensorflow as tf

    assert tf.config.functions_run_eagerly()


@TENSORFLOW_ONLY
def test_other_tests_trace_as_a_users_fit_does():
    import tensorflow as tf

    assert not tf.config.functions_run_eagerly()


def test_tests_of_one_xdist_group_run_on_one_worker(tmp_path):
    """test_export's and test_hub's expensive fixtures are made once only if `--dist loadgroup` keeps their tests together.

    pytest-xdist 3.8 marks a group by rewriting test ids in a way pytest 9.2 ignores (pytest-xdist issue 1386): the groups then
    spread silently over both workers. constraints.txt pins a pytest where they hold.
    """
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            "test_grouped.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    workers = {(tmp_path / f"worker_{index}").read_text() for index in range(6)}
    assert len(workers) == 1, workers
