"""Reliability 3 (issue 40): a full disk, a damaged backup, Ctrl-C swallowed inside fit and quiet wrong inputs end in one line
(rc 2, 130 on Ctrl-C) naming the problem and the fix, with nothing lost and no folder left behind."""

import os
import signal

import pytest

from kdistill import cli
from kdistill.run import callbacks
from conftest import REAL_SAMPLE, small_cnn


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.keras")
    small_cnn("teacher", widths=(8, 16), seed=1).save(path)
    return path


def _distill(teacher_file, output, epochs=1, *extra):
    """A small distillation on the real Fashion-MNIST sample in tests/data (an untrained teacher, so no teacher check)."""
    return ["distill", "--data-dir", REAL_SAMPLE, "--teacher", teacher_file, "--student", "resnet8x4", "--taps", "none",
            "--epochs", str(epochs), "--batch-size", "32", "--train-limit", "64", "--test-limit", "32", "--no-check-teacher",
            "--output-dir", str(output), *extra]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("kdistill: ")]  # log lines aside
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.eager
def test_ctrl_c_swallowed_inside_fit_still_stops_the_run_with_rc_130(tmp_path, teacher_file, monkeypatch, capsys):
    """On JAX, after epoch 1, SIGINT lands in Keras' pythonify_logs, whose bare `except: pass` swallowed it: the run finished with rc 0."""
    begin = callbacks.DataPass.on_epoch_begin

    def swallowed_ctrl_c_in_the_second_epoch(self, epoch, logs=None):
        begin(self, epoch, logs)
        if epoch == 1:
            try:
                os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside the try, as it does inside pythonify_logs
                sum(range(1000))
            except BaseException:  # what Keras' `except: pass` does
                pass

    monkeypatch.setattr(callbacks.DataPass, "on_epoch_begin", swallowed_ctrl_c_in_the_second_epoch)
    assert cli.main(_distill(teacher_file, tmp_path / "run", 2)) == 130
    assert _one_line(capsys.readouterr().err) == "kdistill distill: interrupted at epoch 2 of 2; run the same command to resume"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back
