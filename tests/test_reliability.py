"""Reliability (issue #25): user errors end in one line (rc 2), Ctrl-C says how to resume (rc 130), numbers are checked
before any work, a run folder is locked while in use, and refused runs leave no folders behind."""

import json
import os
import subprocess
import sys

import pytest

from kdistill import cli
from kdistill.errors import UserError, check_number
from kdistill.run import callbacks, jobs
from kdistill.run.config import DistillConfig
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


def test_a_yaml_list_or_broken_json_config_is_one_line_naming_the_file_and_verbose_adds_the_traceback(tmp_path, capsys):
    """A YAML list gave AttributeError: 'list' object has no attribute 'update'; a JSON syntax error did not name its file."""
    listed, broken = tmp_path / "run.yaml", tmp_path / "run.json"
    listed.write_text("- student: resnet8x4\n- epochs: 1\n")
    broken.write_text('{"student": "resnet8x4",, }')
    assert cli.main(["distill", "--config", str(listed)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(listed) in line and "holds a list" in line and "not `- student: resnet8x4`" in line
    assert cli.main(["distill", "--config", str(broken)]) == 2
    assert str(broken) in _one_line(capsys.readouterr().err)
    assert cli.main(["--verbose", "distill", "--config", str(listed)]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_non_finite_loss_ends_in_one_line_with_rc_2(tmp_path, teacher_file, capsys):
    """NonFiniteLossError used to reach the user as a 20-line traceback."""
    config = tmp_path / "run.yaml"
    config.write_text("taps: {teacher_stage2: stage2_out}\nfeature_loss: mse\ntap_weights: 1.0e+38\n")  # finite weight, sum overflows
    command = [arg for arg in _distill(teacher_file, tmp_path / "run") if arg not in ("--taps", "none")]
    assert cli.main(command + ["--config", str(config)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "training loss became non-finite" in line and "Lower the learning rate" in line
    assert not os.path.exists(tmp_path / "run" / jobs.LOCK_NAME)  # released on error too


def test_ctrl_c_during_distill_names_the_epoch_and_the_same_command_resumes(tmp_path, teacher_file, monkeypatch, capsys):
    output = tmp_path / "run"
    begin = callbacks.DataPass.on_epoch_begin

    def ctrl_c_in_the_second_epoch(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        begin(self, epoch, logs)

    monkeypatch.setattr(callbacks.DataPass, "on_epoch_begin", ctrl_c_in_the_second_epoch)
    assert cli.main(_distill(teacher_file, output, 2)) == 130
    assert _one_line(capsys.readouterr().err) == "kdistill distill: interrupted at epoch 2 of 2; run the same command to resume"
    assert not os.path.exists(output / jobs.LOCK_NAME)
    monkeypatch.undo()
    assert cli.main(_distill(teacher_file, output, 2)) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["resumed"] is True and summary["epochs_completed"] == 2


def test_ctrl_c_during_train_teacher_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    def ctrl_c(self, epoch, logs=None):
        self.epoch = epoch + 1
        raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.EpochProgress, "on_epoch_begin", ctrl_c)
    output = tmp_path / "teacher.keras"
    arguments = ["train-teacher", "--data-dir", REAL_SAMPLE, "--train-limit", "32", "--test-limit", "16", "--epochs", "3", "--output", str(output)]
    assert cli.main(arguments) == 130
    assert _one_line(capsys.readouterr().err).endswith("interrupted at epoch 1 of 3; nothing was saved: run the same command to start again")
    assert not output.exists()


@pytest.mark.parametrize("command, flag, value, message", [
    ("distill", "--learning-rate", "-1", "learning_rate must be a positive number, received -1.0"),  # trained by gradient ascent, rc 0
    ("distill", "--learning-rate", "nan", "learning_rate must be a positive number, received nan"),
    ("distill", "--temperature", "inf", "temperature must be a positive number, received inf"),
    ("distill", "--alpha", "1.5", "alpha must be a number in [0, 1]"),
    ("train-teacher", "--learning-rate", "-1", "--learning-rate must be a positive number, received -1.0"),
    ("train-teacher", "--epochs", "0", "--epochs must be a positive whole number, received 0"),
])
def test_bad_numbers_in_flags_are_refused_before_any_work(tmp_path, teacher_file, capsys, command, flag, value, message):
    output = tmp_path / "run"
    arguments = _distill(teacher_file, output) if command == "distill" else ["train-teacher", "--data-dir", REAL_SAMPLE, "--output", str(output / "t.keras")]
    assert cli.main(arguments + [flag, value]) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert not output.exists()


@pytest.mark.parametrize("values, message", [
    ({"learning_rate": -1}, "learning_rate must be a positive number, received -1"),
    ({"learning_rate": float("nan")}, "learning_rate must be a positive number, received nan"),
    ({"weight_decay": -0.1}, "weight_decay must be a non-negative number"),
    ({"batch_size": 0}, "batch_size must be a positive whole number"),
    ({"temperature": float("inf")}, "temperature must be a positive number"),
    ({"seed": -3}, "seed must be a non-negative whole number"),
    ({"tap_weights": {"a": -1.0}}, "tap_weights must be a non-negative number"),
    ({"teacher_weights": [1.0, float("inf")]}, "each of teacher_weights must be a non-negative number"),
    ({"feature_loss": 5}, "feature_loss must be a loss name"),  # was a TypeError deep in the distiller
])
def test_config_numbers_are_checked_in_dicts_and_in_python(values, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        DistillConfig.from_dict(values, check_files=False)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        DistillConfig(**values)  # the Python API: checked on construction as well


def test_check_number_refuses_bools_strings_and_non_finite_values():
    assert check_number("epochs", 3, integer=True, positive=True) == 3
    for value in (True, "2", float("nan"), float("-inf"), 2.5):
        with pytest.raises(UserError, match="epochs must be a positive whole number"):
            check_number("epochs", value, integer=True, positive=True)


def test_numbers_in_exponent_notation_read_as_numbers_from_yaml_and_set():
    """PyYAML reads `1e-3` as a string; `learning_rate: 1e-3` was refused as 'must be float, received str'."""
    import yaml

    from kdistill.run import demo

    assert DistillConfig.from_dict(yaml.safe_load("learning_rate: 1e-3\nweight_decay: 5e-4"), check_files=False).learning_rate == 1e-3
    assert demo.check_settings({"qat_learning_rate": cli._parse_overrides(["qat_learning_rate=1e-4"])["qat_learning_rate"]})


def test_demo_settings_are_checked_before_the_teacher_trains(tmp_path, monkeypatch, capsys):
    """`kdistill demo --set student_epochs=abc` used to train a teacher for 7 minutes before failing."""
    from kdistill.run import training

    monkeypatch.setattr(training, "train_teacher", lambda *args, **kwargs: pytest.fail("training started"))
    for setting, message in (("student_epochs=abc", "student_epochs must be a positive whole number, received the str 'abc'"),
                             ("teacher_epochs=-2", "teacher_epochs must be a positive whole number, received -2"),
                             ("alpha=2", "alpha must be a number in [0, 1], received 2"), ("export=maybe", "export must be a bool")):
        assert cli.main(["demo", "--data-dir", REAL_SAMPLE, "--output-dir", str(tmp_path / "demo"), "--set", setting]) == 2
        assert message in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "demo").exists()


def test_a_run_folder_in_use_is_refused_with_the_holders_pid_and_a_dead_holders_lock_is_taken_over(tmp_path, teacher_file, capsys):
    output = tmp_path / "run"
    output.mkdir()
    lock = output / jobs.LOCK_NAME
    import socket

    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # a live process holds it
    assert cli.main(_distill(teacher_file, output)) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"in use by another kdistill run (pid {os.getpid()}" in line
    assert json.loads(lock.read_text())["pid"] == os.getpid() and sorted(os.listdir(output)) == [jobs.LOCK_NAME]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))  # left by a killed run
    assert cli.main(_distill(teacher_file, output)) == 0
    assert f"Taking over the lock of {output}: its process (pid {dead.pid}) is no longer running" in capsys.readouterr().err
    assert (output / "student.keras").exists() and not lock.exists()


def test_refused_runs_leave_no_empty_folders_and_a_run_folder_inside_the_image_folder_is_refused(tmp_path, teacher_file, capsys):
    nested = tmp_path / "new" / "run"
    assert cli.main(_distill(teacher_file, nested, 1, "--student", "resnet9")) == 2  # refused after the data and teacher loaded
    assert "resnet9" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()
    images = tmp_path / "images"
    for name in ("boot", "shirt"):
        (images / name).mkdir(parents=True)
    assert cli.main(["distill", "--data", str(images), "--teacher", teacher_file, "--output-dir", str(images / "run")]) == 2
    assert "is inside the image folder" in _one_line(capsys.readouterr().err)
    assert sorted(os.listdir(images)) == ["boot", "shirt"]


def test_mixed_float16_on_a_cpu_warns_and_an_invalid_backend_lists_the_valid_ones(tmp_path, teacher_file, monkeypatch, capsys):
    missing = str(tmp_path / "no-data")  # the run stops at the data, after the warning
    command = [arg if arg != REAL_SAMPLE else missing for arg in _distill(teacher_file, tmp_path / "run")]
    assert cli.main(command + ["--precision", "mixed_float16"]) == 2
    assert "much slower than float32" in capsys.readouterr().err and not (tmp_path / "run").exists()
    monkeypatch.setenv("KERAS_BACKEND", "invalid")
    assert cli.main(["evaluate", teacher_file]) == 2
    assert "KERAS_BACKEND='invalid' is not a Keras backend. Set it to tensorflow, jax or torch" in _one_line(capsys.readouterr().err)


def test_a_programming_bug_is_not_turned_into_a_user_error(monkeypatch):
    """cli.main caught TypeError, so a bug read as a one-line user mistake."""
    def bug(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(cli, "_check_outputs", bug)
    with pytest.raises(TypeError):
        cli.main(["evaluate", "model.keras"])
