"""Smoke runs of the benchmark scripts on tiny settings, so they keep working (they are not timed here)."""

import importlib
import json
import os
import re

import numpy as np
import pytest

from test_data import make_fashion_mnist

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture
def run(capsys, monkeypatch):
    """Runs a benchmark script's `main(argv)` in this process (TensorFlow is imported once, not once per script) and returns its stdout.

    (throughput.py and scaling.py still start a process per variant, as they do from the command line.)
    """
    monkeypatch.syspath_prepend(BENCHMARKS)  # as when run from there: views.py imports accuracy

    def run_script(script, *args):
        module = importlib.import_module(script.removesuffix(".py"))
        # not a module of the same name elsewhere
        assert os.path.dirname(os.path.abspath(module.__file__)) == BENCHMARKS, module
        capsys.readouterr()
        assert module.main(list(args)) == 0
        return capsys.readouterr().out

    return run_script


@pytest.mark.slow
def test_throughput_script_compares_variants_and_writes_tables(tmp_path, run):
    out = run(
        "throughput.py",
        "--batch",
        "4",
        "--width",
        "0.35",
        "--steps",
        "1",
        "--seconds",
        "0",
        "--windows",
        "2",
        "--warmup",
        "1",
        "--variants",
        "acmi",
        "--out",
        str(tmp_path),
        "--name",
        "tp",
    )
    report = json.loads((tmp_path / "tp.json").read_text())
    for key in "ami":
        assert len(report["results"][key]["rates"]) == 2 and report["results"][key]["images_per_second"] > 0, report[
            "results"
        ][key]
        assert report["results"][key]["peak_rss_mb"] > 100 and report["results"][key]["device"] == "CPU"
    assert "FeatureDistillation has no projection" in report["results"]["c"]["skipped"]
    # the ratio (m)/(a) (function matching from a cache of mixed views) is taken round by round; the targets table says
    # whether it is met
    rounds = report["meta"]["ratios"]["m/a"]["rounds"]
    assert rounds == [m / a for m, a in zip(report["results"]["m"]["rates"], report["results"]["a"]["rates"])]
    table = (tmp_path / "tp.md").read_text()
    assert (
        "| (m) kdistill, function matching from cache (mixup views, top-5) |" in table
        and "| (m/a) |" in table
        and "vs (b)" in out
    )
    # (i): a 64x64 teacher and pipeline feeding the 32x32 student through the distiller's resize
    assert "| (i) kdistill, (f), teacher + data at 2x size |" in table and set(report["results"]["i"]["taps"])


def test_folding_script_times_plain_and_folded_teacher(tmp_path, run):
    out = run("folding.py", "--settings", "16:2", "--windows", "2", "--seconds", "0", "--out", str(tmp_path))
    row = json.loads((tmp_path / "folding_tensorflow.json").read_text())["results"][0]
    assert (row["size"], row["batch"]) == (16, 2) and len(row["rates"]["plain"]) == len(row["rates"]["folded"]) == 2
    assert (
        row["ratios"] == [f / p for f, p in zip(row["rates"]["folded"], row["rates"]["plain"])]
        and "| 16x16 | 2 |" in out
    )


def test_scaling_script_writes_table_and_plot(tmp_path, run):
    run(
        "scaling.py",
        "--axes",
        "taps",
        "--taps",
        "1",
        "--steps",
        "1",
        "--seconds",
        "0",
        "--windows",
        "1",
        "--out",
        str(tmp_path),
    )
    grid = json.loads((tmp_path / "scaling_tensorflow.json").read_text())["grid"]
    assert list(grid) == ["taps"] and grid["taps"][0]["ms_per_step"] > 0 and grid["taps"][0]["taps"] == 1
    assert (tmp_path / "scaling_tensorflow.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.eager
def test_accuracy_script_reports_mean_and_std(tmp_path, run):
    import kdistill

    make_fashion_mnist(tmp_path / "data", train=96, test=32)
    teacher = str(tmp_path / "teacher.keras")
    # any model with logits can teach logits-only methods
    kdistill.students.get("resnet8x4", num_classes=10).save(teacher)
    run(
        "accuracy.py",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--train-limit",
        "64",
        "--methods",
        "kd",
        "--student",
        "resnet8x4",
        "--data-dir",
        str(tmp_path / "data"),
        "--teacher",
        teacher,
        "--out",
        str(tmp_path),
    )
    results = json.loads((tmp_path / "accuracy_fashion_mnist.json").read_text())["results"]
    assert len(results["kd"]["top1"]) == 2 and set(results) == {"teacher", "kd"}
    assert "± " in (tmp_path / "accuracy_fashion_mnist.md").read_text()


@pytest.mark.eager
def test_quantization_script_measures_every_integer_mode(tmp_path, run):
    sample = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fashion-mnist-sample")
    run(
        "quantization.py",
        "--students",
        "resnet20",
        "--epochs",
        "1",
        "--train-limit",
        "200",
        "--test-limit",
        "50",
        "--data-dir",
        sample,
        "--out",
        str(tmp_path),
    )
    rows = json.loads((tmp_path / "quantization_fashion_mnist.json").read_text())["rows"]
    assert [row["student"] for row in rows] == ["resnet20"]
    assert set(rows[0]["agreement"]) == {"int8 min/max", "int8 percentile", "int16x8"}
    assert all(0.0 <= value <= 1.0 for value in rows[0]["agreement"].values())
    assert "| resnet20 | 274,042 |" in (tmp_path / "quantization_fashion_mnist.md").read_text()


@pytest.mark.slow
@pytest.mark.eager
def test_paired_protocol_reports_intervals_gap_and_a_plot(tmp_path, run):
    from conftest import resnet50_shaped_teacher

    make_fashion_mnist(tmp_path / "data", train=160, test=32)
    teacher = str(tmp_path / "teacher.keras")
    resnet50_shaped_teacher().save(teacher)
    command = (
        "accuracy.py",
        "--paired",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--train-limit",
        "64",
        "--transfer-limit",
        "32",
        "--methods",
        "alone,kd,fitnets_transfer",
        "--student",
        "resnet8x4",
        "--data-dir",
        str(tmp_path / "data"),
        "--teacher",
        teacher,
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path),
    )
    out = run(*command)
    record = json.loads((tmp_path / "evidence_fashion_mnist.json").read_text())
    assert record["labelled"] == 64 and record["transfer"] == 32
    assert all(len(record["results"][m]["top1"]) == 2 for m in ("alone", "kd", "fitnets_transfer"))
    versus_kd = record["comparisons_vs_kd"]["fitnets_transfer"]
    assert set(versus_kd) >= {
        "seeds",
        "difference_mean",
        "difference_low",
        "difference_high",
        "wins",
        "p_value",
        "gap_recovered",
    }
    assert "Against KD alone" in (tmp_path / "evidence_fashion_mnist.md").read_text()
    assert (tmp_path / "evidence_fashion_mnist_vs_kd.png").read_bytes()[:4] == b"\x89PNG"
    # Resumable: every (method, seed) was recorded as it finished, so the same command trains nothing again.
    again = run(*command)
    assert (
        "seed 0" not in again
        and json.loads((tmp_path / "evidence_fashion_mnist.json").read_text())["results"] == record["results"]
    )
    comparison = record["comparisons"]["fitnets_transfer"]
    assert comparison["difference_low"] <= comparison["difference_mean"] <= comparison["difference_high"]
    assert "gap_recovered" in comparison and record["taps"]  # fitnets needed the tapped maps in the cache
    table = (tmp_path / "evidence_fashion_mnist.md").read_text()
    assert "| fitnets_transfer | 64 labelled + 32 unlabelled |" in table and "95 % CI" in table and "95 % CI" in out
    assert (tmp_path / "evidence_fashion_mnist.png").read_bytes()[:4] == b"\x89PNG"
    # A later method joins the same study: two teachers reuse the runs above (the second teacher is recorded with its
    # own runs only).
    second = str(tmp_path / "second.keras")
    resnet50_shaped_teacher(seed=1).save(second)
    joined = command[:11] + ("alone,kd,two_teachers_transfer",) + command[12:]
    out = run(*joined, "--second-teacher", second)
    assert "seed 0 alone" not in out and "seed 1 two_teachers_transfer" in out
    joint = json.loads((tmp_path / "evidence_fashion_mnist.json").read_text())
    assert joint["results"]["alone"] == record["results"]["alone"] and 0 <= joint["ensemble_top1"] <= 1
    assert "two_teachers_transfer" in joint["comparisons_vs_kd"]
    with pytest.raises(SystemExit, match="made with --second-teacher"):
        run(*joined, "--second-teacher", teacher)


@pytest.mark.eager
def test_views_script_compares_the_live_teacher_with_a_cache_of_views(tmp_path, run):
    import kdistill

    make_fashion_mnist(tmp_path / "data", train=96, test=32)
    teacher = str(tmp_path / "teacher.keras")
    kdistill.students.get("resnet8x4", num_classes=10).save(teacher)
    run(
        "views.py",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--train-limit",
        "64",
        "--views",
        "2",
        "--methods",
        "views,live",
        "--student",
        "resnet8x4",
        "--data-dir",
        str(tmp_path / "data"),
        "--teacher",
        teacher,
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path),
    )
    record = json.loads((tmp_path / "views_fashion_mnist.json").read_text())
    assert set(record["results"]) == {"views", "live"} and record["train"] == 64
    assert all(0 <= row["top1"][0] <= 1 and row["seconds"][0] > 0 for row in record["results"].values())
    assert (
        "| views |" in (tmp_path / "views_fashion_mnist.md").read_text()
        and "(resnet8x4, 64 labelled images" in (tmp_path / "views_fashion_mnist.md").read_text()
    )


def test_committed_results_name_files_relative_to_the_repository():
    """Commands and files in the committed results travel: no absolute path of the machine they ran on."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    absolute = re.compile(r"(?<![\w.])/(work|tmp|root|home|Users)/")
    found = []
    for folder in ("benchmarks/results", "docs"):
        for name in sorted(os.listdir(os.path.join(root, folder))):
            if not name.endswith((".json", ".md")):
                continue
            with open(os.path.join(root, folder, name)) as handle:
                text = handle.read()
            if name.endswith(".json"):
                values = [
                    json.dumps(value)
                    for key, value in _items(json.loads(text))
                    if key in ("command", "teacher", "figures", "files")
                ]
            else:
                values = [line for line in text.splitlines() if line.startswith("Command:")]
            found += [f"{folder}/{name}: {value[:80]}" for value in values if absolute.search(value)]
    assert not found, found


def _items(tree):
    """Every (key, value) pair of a JSON tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield key, value
            yield from _items(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _items(value)


@pytest.mark.eager
def test_patient_study_runs_every_recipe_resumes_and_reports_the_gap_recovered(tmp_path, run):
    import kdistill

    make_fashion_mnist(tmp_path / "data", train=96, test=32)
    teacher = str(tmp_path / "teacher.keras")
    kdistill.students.get("resnet8x4", num_classes=10).save(teacher)
    study = [
        "patient.py",
        "--seeds",
        "1",
        "--schedules",
        "1",
        "--alone-schedules",
        "1",
        "--epochs",
        "1",
        "--recipes",
        "alone,demo,fm,fm_live",
        "--train-limit",
        "64",
        "--test-limit",
        "16",
        "--views",
        "2",
        "--student",
        "resnet8x4",
        "--data-dir",
        str(tmp_path / "data"),
        "--teacher",
        teacher,
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path),
    ]
    out = run(*study)
    runs = (tmp_path / "work" / "runs.jsonl").read_text().splitlines()
    assert len(runs) == 4 and "fm_live x1 seed 0" in out  # every recipe, each saved as it finished
    assert "built the views cache" not in run(*study)  # a rerun reuses the caches and trains nothing more
    assert (tmp_path / "work" / "runs.jsonl").read_text().splitlines() == runs
    record = json.loads((tmp_path / "patient_fashion_mnist.json").read_text())
    assert [(row["recipe"], row["schedule"], row["seeds"]) for row in record["rows"]] == [
        (name, 1, [0]) for name in patient_recipes()
    ]
    assert (
        record["meta"]["environment"]["cpu_cores"] > 0
        and "| fm | x1 | 1 |" in (tmp_path / "patient_fashion_mnist.md").read_text()
    )
    assert (tmp_path / "patient_fashion_mnist.png").read_bytes()[:4] == b"\x89PNG"


def patient_recipes():
    import patient

    return list(patient.RECIPES)


def test_patient_plan_runs_the_short_schedules_first_and_only_the_seeds_asked_for(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import argparse

    import patient

    args = argparse.Namespace(
        schedules=[1, 9], seeds=3, only_seeds=None, recipes=["alone", "demo"], alone_schedules=[1]
    )
    assert patient._plan(args) == [
        ("alone", 1, s) if i % 2 == 0 else ("demo", 1, s) for s in range(3) for i in range(2)
    ] + [("demo", 9, s) for s in range(3)]
    args.only_seeds = [2]
    assert patient._plan(args) == [("alone", 1, 2), ("demo", 1, 2), ("demo", 9, 2)]


def test_patient_study_skips_a_run_that_another_process_finished_meanwhile(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import types

    import patient
    import study_log

    log, trained = str(tmp_path / "runs.jsonl"), []

    def train(recipe, schedule, seed, *rest):
        trained.append((recipe, schedule, seed))
        if seed == 0:  # meanwhile another process sharing the log finishes seed 1
            study_log.append(
                log, {"recipe": recipe, "schedule": schedule, "seed": 1, "top1": 0.5, "seconds": 1.0, "steps": 1}
            )
        return {"recipe": recipe, "schedule": schedule, "seed": seed, "top1": 0.6, "seconds": 1.0, "steps": 1}

    splits = types.SimpleNamespace(counts={"train": 4, "test": 2})
    monkeypatch.setattr(patient, "_setup", lambda args: (splits, None, None, 0.9, []))
    monkeypatch.setattr(patient, "_train", train)
    patient.main(
        ["--seeds", "3", "--schedules", "1", "--recipes", "fm", "--work-dir", str(tmp_path), "--out", str(tmp_path)]
    )
    assert trained == [("fm", 1, 0), ("fm", 1, 2)]
    assert sorted(run["seed"] for run in study_log.finished(log)) == [0, 1, 2]


def test_patient_report_takes_the_gap_against_the_best_schedule_of_the_student_alone(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import patient

    runs = [
        {"recipe": recipe, "schedule": schedule, "seed": seed, "top1": top1, "seconds": 10.0, "steps": 100}
        for recipe, schedule, seed, top1 in [
            ("alone", 1, 0, 0.70),
            ("alone", 1, 1, 0.60),
            ("alone", 3, 0, 0.80),
            ("alone", 3, 1, 0.70),
            ("fm", 9, 0, 0.85),
            ("fm", 9, 1, 0.75),
        ]
    ]
    meta = {"student": "s", "seeds": 2, "command": "c", "environment": {"cpu": "cpu", "cpu_cores": 2}}
    summary, lines = patient.report(runs, 0.90, meta)
    # the gap is taken against the student alone's best schedule, seed by seed
    assert summary["best_alone_schedule"] == 3
    fm = next(row for row in summary["rows"] if row["recipe"] == "fm")
    # (0.85 - 0.80) / (0.90 - 0.80), (0.75 - 0.70) / (0.90 - 0.70)
    np.testing.assert_allclose(fm["gap_shares"], [0.5, 0.25])
    # mean 37.5 % with its t-interval over 2 seeds
    assert "| fm | x9 | 2 | 80.00 ± 7.07 | 37 % [-121, 196] |" in "\n".join(lines)
    # and seed by seed
    assert "| fm | x9 | 85.00 [50 %] | 75.00 [25 %] |" in lines and "| alone | x1 | 70.00 | 60.00 |" in lines


@pytest.mark.slow
@pytest.mark.eager
def test_segmentation_study_runs_every_recipe_paired_resumes_and_reports_the_interval(tmp_path, run):
    make_fashion_mnist(tmp_path / "data", train=64, test=32)
    study = [
        "segmentation.py",
        "--seeds",
        "2",
        "--recipes",
        "alone,cwd_features",
        "--epochs",
        "1",
        "--teacher-epochs",
        "1",
        "--train-scenes",
        "16",
        "--test-scenes",
        "8",
        "--transfer-scenes",
        "8",
        "--batch-size",
        "8",
        "--data-dir",
        str(tmp_path / "data"),
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path),
    ]
    out = run(*study)
    runs = (tmp_path / "work" / "runs.jsonl").read_text().splitlines()
    assert len(runs) == 4 and "cwd_features seed 1" in out  # 2 recipes x 2 seeds, each saved as it finished
    # resumed: nothing more
    assert (
        "trained the teacher" not in run(*study) and (tmp_path / "work" / "runs.jsonl").read_text().splitlines() == runs
    )
    record = json.loads((tmp_path / "segmentation_scenes.json").read_text())
    assert [row["recipe"] for row in record["rows"]] == ["alone", "cwd_features"]
    paired = record["rows"][1]["paired"]
    assert paired["seeds"] == 2 and paired["difference_low"] <= paired["difference_mean"] <= paired["difference_high"]
    assert "| cwd_features | 2 |" in (tmp_path / "segmentation_scenes.md").read_text()
    assert (tmp_path / "segmentation_scenes.png").read_bytes()[:4] == b"\x89PNG"
