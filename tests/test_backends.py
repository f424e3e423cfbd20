"""kdistill without TensorFlow: import, distil and evaluate on JAX and PyTorch in a process where TensorFlow cannot be imported."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_distillation_runs_where_tensorflow_cannot_be_imported(tmp_path, backend):
    result = subprocess.run([sys.executable, os.path.join(HERE, "_no_tensorflow.py"), str(tmp_path)], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend and report["tensorflow_loaded"] == []
    assert report["teacher_unchanged"]
    assert {"loss", "ce_loss", "kd_loss", "feat_teacher_stage2", "accuracy"} <= set(report["history"])
    assert report["history"]["loss"][-1] < report["history"]["loss"][0]
    assert 0.0 <= report["top1"] <= 1.0
    # what needs TensorFlow says so, and names the install
    assert "TensorFlow is needed for exporting models" in report["export_error"] and "pip install" in report["export_error"]


def test_data_parallel_on_two_jax_devices_gives_the_weights_of_one():
    environment = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run([sys.executable, os.path.join(HERE, "_data_parallel.py")], capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2
    assert report["max_difference"] < 1e-5, report


def test_data_parallel_refuses_the_tensorflow_backend():
    import pytest

    from kdistill.run import jax_distribution

    with pytest.raises(ValueError, match="runs on the JAX backend"):
        jax_distribution.data_parallel()
