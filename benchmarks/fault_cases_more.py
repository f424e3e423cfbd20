"""Faults beyond the issue's list that tests/test_reliability.py, tests/test_survive.py and tests/test_cli.py cover, replayed the same way.

Registered into `fault_cases.CASES` on import (item "+": not one of the issue's numbered cases).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from fault_cases import Case, _write, _without, case, distill


@case("learning_rate_nan", "+", "distill --learning-rate nan")
def _learning_rate_nan(inputs, here):
    return Case(
        distill(inputs, "run", "--learning-rate", "nan"),
        expect=("learning_rate must be a positive number, received nan",),
    )


@case("temperature_inf", "+", "distill --temperature inf")
def _temperature_inf(inputs, here):
    return Case(
        distill(inputs, "run", "--temperature", "inf"), expect=("temperature must be a positive number, received inf",)
    )


@case("alpha_out_of_range", "+", "distill --alpha 1.5")
def _alpha_out_of_range(inputs, here):
    return Case(distill(inputs, "run", "--alpha", "1.5"), expect=("alpha must be a number in [0, 1]",))


def _train_teacher(inputs, *extra) -> list:
    return [
        "train-teacher",
        "--data-dir",
        inputs.data,
        "--train-limit",
        "64",
        "--test-limit",
        "32",
        "--output",
        "t/teacher.keras",
        *extra,
    ]


@case("train_teacher_learning_rate_negative", "+", "train-teacher --learning-rate -1")
def _train_teacher_learning_rate_negative(inputs, here):
    return Case(
        _train_teacher(inputs, "--learning-rate", "-1"),
        expect=("--learning-rate must be a positive number, received -1.0",),
    )


@case("train_teacher_epochs_zero", "+", "train-teacher --epochs 0")
def _train_teacher_epochs_zero(inputs, here):
    return Case(
        _train_teacher(inputs, "--epochs", "0"), expect=("--epochs must be a positive whole number, received 0",)
    )


@case("config_batch_size_zero", "+", "batch_size: 0 in a config file")
def _config_batch_size_zero(inputs, here):
    return Case(
        _without(distill(inputs), "--batch-size") + ["--config", _write(here, "run.yaml", "batch_size: 0\n")],
        expect=("batch_size must be a positive whole number",),
    )


@case("config_feature_loss_number", "+", "feature_loss: 5 in a config file")
def _config_feature_loss_number(inputs, here):
    return Case(
        distill(inputs) + ["--config", _write(here, "run.yaml", "feature_loss: 5\n")],
        expect=("feature_loss must be a loss name",),
    )


@case("demo_set_alpha", "+", "demo --set alpha=2")
def _demo_set_alpha(inputs, here):
    return Case(
        ["demo", "--data-dir", inputs.data, "--output-dir", "demo", "--set", "alpha=2"],
        expect=("alpha must be a number in [0, 1]",),
        max_seconds=60,
    )


@case("evaluate_feature_map", "+", "kdistill evaluate of a feature-map model")
def _evaluate_feature_map(inputs, here):
    return Case(["evaluate", inputs.odd["feature_map"], "--data-dir", inputs.data], expect=("returns a feature map",))


@case("missing_teacher", "+", "--teacher of a file that does not exist")
def _missing_teacher(inputs, here):
    return Case(distill(inputs, "run", teacher="missing.keras"), expect=("does not exist",))


@case("truncated_teacher", "+", "kdistill evaluate of a .keras file cut to a third")
def _truncated_teacher(inputs, here):
    return Case(["evaluate", inputs.odd["truncated"], "--data-dir", inputs.data], expect=("is truncated",))


@case("output_under_file", "+", "distill --output-dir afile/run (afile a regular file)")
def _output_under_file(inputs, here):
    _write(here, "afile", "not a folder")
    return Case(distill(inputs, "afile/run"), expect=("Cannot write the output",))


@case("export_unknown_format", "+", "kdistill export --formats tflite_int4")
def _export_unknown_format(inputs, here):
    return Case(
        ["export", inputs.teacher, "--data-dir", inputs.data, "--output-dir", "export", "--formats", "tflite_int4"],
        expect=("Unknown export format",),
    )


def _lock_taken_over(result, here):
    problems = [] if os.path.exists(os.path.join(here, "run", "student.keras")) else ["no student.keras written"]
    return problems + (["the lock stayed"] if os.path.exists(os.path.join(here, "run", ".kdistill.lock")) else [])


@case("dead_holders_lock", "+", "a lock left by a killed run (success: taken over, logged)")
def _dead_holders_lock(inputs, here):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.mkdir(os.path.join(here, "run"))
    _write(here, "run/.kdistill.lock", json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    return Case(
        distill(inputs, "run"),
        expect_rc=0,
        expect=(f"Taking over the lock of run: its process (pid {dead.pid})",),
        allowed=("run", "run/*"),
        check=_lock_taken_over,
    )


@case("resume_other_config", "+", "an interrupted run's backup made under another config (temperature 8)")
def _resume_other_config(inputs, here):
    from kdistill.run.config import DistillConfig

    os.makedirs(os.path.join(here, "run", "backup"))
    _write(here, "run/backup/training_metadata.json", json.dumps({"epoch": 1, "batch": 0}))
    _write(
        here,
        "run/backup/run_config.json",
        json.dumps(DistillConfig.from_dict({"temperature": 8.0}, check_files=False).to_dict()),
    )
    return Case(distill(inputs, "run"), expect=("used another configuration", "temperature", "--restart"))
