"""tf.distribute: strategy choice, and multi-worker training with two local processes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kdistill.run import distribute

HERE = os.path.dirname(__file__)


def test_strategies_by_name_and_clear_errors(monkeypatch):
    assert distribute.get_strategy("default") is tf.distribute.get_strategy()
    assert isinstance(distribute.get_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    made = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert distribute.get_strategy(made) is made  # e.g. a TPUStrategy a user made
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.get_strategy("multi_worker")
    with pytest.raises(ValueError, match="Unknown strategy 'mirored'"):
        distribute.get_strategy("mirored")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(commands, environments, timeout=300):
    """Starts one process per command (all at once, as a cluster needs) and returns their stdouts; any failure fails the test."""
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
        for command, environment in zip(commands, environments)
    ]
    outputs = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=timeout)
            assert worker.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for worker in workers:
            worker.kill()
    return outputs


def test_multi_worker_mirrored_two_local_workers_train_to_the_same_weights(tmp_path):
    ports = ",".join(str(p) for p in _free_ports(2))
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    commands = [
        [sys.executable, os.path.join(HERE, "_multi_worker.py"), str(i), ports, str(tmp_path / f"w{i}.npz")]
        for i in range(2)
    ]
    reports = [
        json.loads(out.strip().splitlines()[-1]) for out in _run_workers(commands, [environment] * 2, timeout=240)
    ]
    assert all(r["multi_worker"] and r["replicas"] == 2 for r in reports)
    assert all(r["moved"] > 1e-4 for r in reports)
    for r in reports:
        assert len(r["history"]["loss"]) == 2 and np.isfinite(r["history"]["loss"]).all() and "accuracy" in r["history"]
    assert reports[0]["history"]["loss"] == pytest.approx(reports[1]["history"]["loss"], rel=1e-5)
    first, second = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(first.files) > 0
    for key in first.files:
        np.testing.assert_allclose(first[key], second[key], atol=1e-6)


def test_cli_distill_under_multi_worker_strategy_with_two_local_workers(tmp_path):
    """`kdistill distill --strategy multi_worker` on two processes (TF_CONFIG on 127.0.0.1): both train in step, only the chief writes."""
    from conftest import resnet50_shaped_teacher
    from test_data import make_fashion_mnist

    make_fashion_mnist(tmp_path / "data", train=96, test=32, seed=2)
    teacher = str(tmp_path / "teacher.keras")
    resnet50_shaped_teacher().save(teacher)
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    kdistill = os.path.join(os.path.dirname(sys.executable), "kdistill")
    command = [
        kdistill,
        "distill",
        "--strategy",
        "multi_worker",
        "--data-dir",
        str(tmp_path / "data"),
        "--teacher",
        teacher,
        "--student",
        "resnet8x4",
        "--taps",
        "preset",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--train-limit",
        "64",
        "--output-dir",
        str(tmp_path / "run"),
    ]
    temporary = [tmp_path / f"tmp{index}" for index in range(2)]
    for folder in temporary:
        folder.mkdir()
    environments = [
        dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="3",
            CUDA_VISIBLE_DEVICES="",
            TMPDIR=str(temporary[index]),
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        for index in range(2)
    ]
    outputs = _run_workers([command] * 2, environments)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["strategy"] == "multi_worker" and summary["epochs_completed"] == 2
    assert summary["replicas"] == 2
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()
    assert (tmp_path / "run" / "student.keras").exists()
    # Worker 1 wrote its copies into a temporary folder and removed it; worker 0 (the chief) wrote the run folder.
    assert "written by the chief worker" in outputs[1] and "written by the chief worker" not in outputs[0]
    assert not [name for name in os.listdir(temporary[1]) if name.startswith("kdistill-worker-")]
