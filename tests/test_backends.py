"""kdistill without TensorFlow: import, distil and evaluate on JAX in a process where TensorFlow cannot be imported."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_distillation_runs_on_jax_where_tensorflow_cannot_be_imported(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(HERE, "_no_tensorflow.py"), str(tmp_path)], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax" and report["tensorflow_loaded"] == []
    assert report["teacher_unchanged"]
    assert {"loss", "ce_loss", "kd_loss", "feat_teacher_stage2", "accuracy"} <= set(report["history"])
    assert report["history"]["loss"][-1] < report["history"]["loss"][0]
    assert 0.0 <= report["top1"] <= 1.0
    # what needs TensorFlow says so, and names the install
    assert "TensorFlow is needed for exporting models" in report["export_error"] and "pip install" in report["export_error"]
