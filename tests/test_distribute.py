"""tf.distribute: strategy choice, and multi-worker training with two local processes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kdistill import distribute

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


def test_multi_worker_mirrored_two_local_workers_train_to_the_same_weights(tmp_path):
    ports = ",".join(str(p) for p in _free_ports(2))
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    workers = [
        subprocess.Popen([sys.executable, os.path.join(HERE, "_multi_worker.py"), str(i), ports, str(tmp_path / f"w{i}.npz")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
        for i in range(2)
    ]
    reports = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=240)
            assert worker.returncode == 0, err[-3000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            worker.kill()
    assert all(r["multi_worker"] and r["replicas"] == 2 for r in reports)
    assert all(r["moved"] > 1e-4 for r in reports)
    for r in reports:
        assert len(r["history"]["loss"]) == 2 and np.isfinite(r["history"]["loss"]).all() and "accuracy" in r["history"]
    assert reports[0]["history"]["loss"] == pytest.approx(reports[1]["history"]["loss"], rel=1e-5)
    first, second = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(first.files) > 0
    for key in first.files:
        np.testing.assert_allclose(first[key], second[key], atol=1e-6)
