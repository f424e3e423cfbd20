"""kdistill without TensorFlow: import, distil and evaluate on JAX and PyTorch in a process where TensorFlow cannot be imported."""

import json
import os
import subprocess
import sys

import pytest
from _no_tensorflow import check_report

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_distillation_runs_where_tensorflow_cannot_be_imported_on_pytorch(tmp_path):
    """The same script runs on JAX in test_install.py's Python 3.12 venv, where TensorFlow is not even installed."""
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "_no_tensorflow.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, KERAS_BACKEND="torch"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check_report(json.loads(result.stdout.strip().splitlines()[-1]), "torch")


@pytest.mark.slow
def test_data_parallel_on_two_jax_devices_gives_the_weights_of_one():
    environment = dict(
        os.environ,
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2",
    )
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "_data_parallel.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2
    assert report["max_difference"] < 1e-5, report


def test_data_parallel_refuses_the_tensorflow_backend():
    import pytest

    from kdistill.run import jax_distribution

    with pytest.raises(ValueError, match="runs on the JAX backend"):
        jax_distribution.data_parallel()


@pytest.mark.slow
def test_every_cli_command_runs_with_backend_jax_and_export_says_it_needs_tensorflow(
    tmp_path, fake_fashion_mnist, small_teacher_file
):
    (tmp_path / "work").mkdir()
    environment = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}  # --backend must set it
    # (a teacher saved on TensorFlow loads unchanged on JAX; train-teacher trains it further there, and its output is
    # not used again)
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(HERE, "_cli_jax.py"),
            fake_fashion_mnist,
            str(tmp_path / "work"),
            small_teacher_file,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(environment, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax" and report["tensorflow_loaded"] == []
    # ResNet50's input layer, computed by JAX
    assert report["caffe_difference"] < 1e-3 and report["trained_teacher"] == "resnet50"
    for command in ("train-teacher", "demo", "distill", "evaluate", "cache-teacher"):
        assert report[command]["status"] == 0, (command, report[command]["err"])
    assert report["demo_summary"]["teacher_reused"] is False and "teacher (resnet20)" in report["demo"]["out"]
    assert "distilled student" in report["demo"]["out"]
    assert "Skipping the export" in report["demo"]["err"]
    assert "resnet8x4" in report["distill"]["out"] and "per-class top-1" in report["evaluate"]["out"]
    assert "cached 64 images" in report["cache-teacher"]["out"]
    # Ctrl-C inside Keras' logs conversion in epoch 2 (where it lands on JAX) was swallowed and the run finished with rc
    # 0 (issue 40)
    assert report["distill-interrupted"]["status"] == 130, report["distill-interrupted"]["err"]
    assert (
        "kdistill distill: interrupted at epoch 2 of 2; run the same command to resume"
        in report["distill-interrupted"]["err"]
    )
    assert report["distill_summary"]["resumed"] is True and report["distill_summary"]["epochs_completed"] == 2
    assert (tmp_path / "work" / "run" / "student.keras").exists() and (
        tmp_path / "work" / "cache" / "meta.json"
    ).exists()
    assert report["export"]["status"] == 2 and "needs the TensorFlow backend" in report["export"]["err"]


def test_backend_flag_refuses_to_switch_a_loaded_keras(capsys):
    import keras

    from kdistill import cli

    other = "jax" if keras.backend.backend() != "jax" else "torch"
    assert cli.main(["--backend", other, "evaluate", "missing.keras"]) == 2
    assert "already loaded" in capsys.readouterr().err
