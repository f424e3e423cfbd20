import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kdistill import cli

from test_data import make_fashion_mnist


# fake_fashion_mnist (160 training, 48 test images) and small_teacher_file (ResNet50's stage names, a small CNN) are
# session fixtures in conftest.py. A real ResNet50 is trained once, where it is the subject (train-teacher, then its
# size in evaluate); the distil tests and the demo take the small stand-in, whose preset taps are the same
# (conv3_block4_out, conv4_block6_out).


def test_console_script_help_lists_every_subcommand():
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "kdistill"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    for command in ("demo", "train-teacher", "distill", "evaluate", "export", "cache-teacher"):
        assert command in result.stdout


@pytest.mark.slow
@pytest.mark.eager
def test_train_teacher_saves_a_loadable_resnet50_and_evaluate_reports_accuracy_size_and_speed(
    tmp_path, fake_fashion_mnist, capsys
):
    """One test, train-teacher then evaluate on its file: the ResNet50 trains once wherever pytest-xdist sends the tests."""
    import kdistill

    teacher_file = str(tmp_path / "teacher.keras")
    status = cli.main(
        [
            "train-teacher",
            "--data-dir",
            fake_fashion_mnist,
            "--train-limit",
            "64",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--output",
            teacher_file,
        ]
    )
    assert status == 0
    teacher = kdistill.teachers.load(teacher_file)
    assert teacher.get_layer("conv4_block6_out") is not None and teacher.output.shape == (None, 10)

    capsys.readouterr()
    report_path = tmp_path / "report.json"
    assert cli.main(["evaluate", teacher_file, "--data-dir", fake_fashion_mnist, "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["examples"] == 48 and {"top1", "top5", "parameters", "size_mb", "images_per_second"} <= set(report)
    assert report["parameters"] > 20_000_000 and report["size_mb"] > 50
    assert len(report["per_class_accuracy"]) == 10
    out = capsys.readouterr().out
    assert "per-class top-1" in out and "Ankle boot" in out


@pytest.mark.eager
def test_distill_from_a_yaml_config_writes_the_run_folder_and_tensorboard_logs(
    tmp_path, fake_fashion_mnist, small_teacher_file, capsys
):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: fashion_mnist\ndata_dir: {fake_fashion_mnist}\nteacher: {small_teacher_file}\nstudent: resnet8x4\n"
        "taps: preset\nepochs: 1\nbatch_size: 32\ntrain_limit: 64\nalpha: 0.8\nseed: 3\n"
    )
    # (--tensorboard here: one run checks the run folder and the TensorBoard logs)
    status = cli.main(
        [
            "distill",
            "--config",
            str(config),
            "--output-dir",
            str(tmp_path / "run"),
            "--temperature",
            "2",
            "--tensorboard",
            str(tmp_path / "tb"),
        ]
    )
    assert status == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["temperature"] == 2.0 and summary["config"]["seed"] == 3
    assert summary["taps"] == {"conv3_block4_out": "stage2_out", "conv4_block6_out": "stage3_out"}
    assert 0 <= summary["test"]["top1"] <= 1 and summary["test"]["examples"] == 48
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert {"loss", "ce_loss", "kd_loss", "feat_conv3_block4_out", "val_accuracy"} <= set(history)
    assert (tmp_path / "run" / "student.keras").exists()
    # the test report reads the student worth exporting, and says so
    assert summary["evaluated"] == "best_student.keras"
    assert "resnet8x4 (best_student.keras)" in capsys.readouterr().out
    umask = os.umask(0o022)
    os.umask(umask)
    # as open() would: 0644 under umask 022
    for name in (
        "student.keras",
        "best_student.keras",
        "summary.json",
        "history.json",
    ):
        assert os.stat(tmp_path / "run" / name).st_mode & 0o777 == 0o666 & ~umask, name
    # The same command again over the finished run is refused (it used to retrain silently), naming --restart and
    # --output-dir.
    assert cli.main(["distill", "--config", str(config), "--output-dir", str(tmp_path / "run")]) == 2
    assert "holds a finished run (summary.json): pass --restart" in capsys.readouterr().err
    # TensorBoard logs with every loss term
    import glob

    events = glob.glob(str(tmp_path / "tb" / "train" / "events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(events[0])
    accumulator.Reload()
    tags = set(accumulator.Tags()["tensors"]) | set(accumulator.Tags()["scalars"])
    assert {"epoch_loss", "epoch_ce_loss", "epoch_kd_loss"} <= tags, tags


def test_distill_config_errors_exit_2_with_the_reason(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("studnet: resnet20\n")
    assert cli.main(["distill", "--config", str(config)]) == 2
    assert "Unknown config key 'studnet'. Did you mean 'student'" in capsys.readouterr().err
    assert cli.main(["distill", "--teacher", str(tmp_path / "missing.keras")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.eager
def test_demo_on_tiny_settings_prints_the_table_and_saves_figures(tmp_path, fake_fashion_mnist, capsys, monkeypatch):
    from kdistill.models import teachers

    # The demo's own teacher (a CIFAR ResNet-20) trained with the real recipe (training.train_teacher: schedule, best
    # epoch kept, saved), recorded, and reused on the second run; `built` counts how often a teacher network is built.
    built, real_get = [], teachers.get

    def counted(name, num_classes, **options):
        built.append(name)
        return real_get(name, num_classes, **options)

    monkeypatch.setattr(teachers, "get", counted)
    output = tmp_path / "demo"
    args = ["demo", "--data-dir", fake_fashion_mnist, "--output-dir", str(output), "--quiet"]
    # the latency figure is tested on small models below
    tiny = [
        "--set",
        "train_limit=64",
        "--set",
        "teacher_epochs=1",
        "--set",
        "student_epochs=1",
        "--set",
        "batch_size=32",
        "--set",
        "student=resnet8x4",
        "--set",
        "latency_plot=false",
    ]
    assert cli.main(args + tiny) == 0
    out = capsys.readouterr().out
    for row in (
        "teacher (resnet20)",
        "student alone",
        "distilled student",
        "distillation gain",
        "(one seed)",
        "multi-seed result",
    ):
        assert row in out
    summary = json.loads((output / "summary.json").read_text())
    assert [r["name"] for r in summary["results"]] == [
        "teacher (resnet20)",
        "student alone",
        "distilled student",
        "distilled, int8-aware",
    ]
    # teacher and student share layer names
    assert summary["taps"] == {
        "stage2_out": "stage2_out",
        "stage3_out": "stage3_out",
    }
    assert summary["results"][1]["parameters"] == summary["results"][2]["parameters"]
    for name in (
        "curves.png",
        "comparison.png",
        "teacher.keras",
        "student_alone.keras",
        "student_distilled.keras",
        "student_int8_qat.keras",
    ):
        assert (output / name).stat().st_size > 0
    assert (output / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["export"]["files"]["int8"] == os.path.join("export", "student_int8.tflite")
    # named beside summary.json, never as this machine's paths
    assert summary["figures"] == [
        "curves.png",
        "comparison.png",
    ]
    assert summary["environment"]["cpu_cores"] > 0 and summary["environment"]["versions"]["keras"] == keras.__version__
    # It ends by exporting the distilled student, with the parity report.
    assert "Exported distilled student" in out and "tflite_int8" in out
    assert (output / "export" / "serving" / "1" / "saved_model.pb").exists() and (
        output / "export" / "student_int8.tflite"
    ).exists()
    assert set(summary["export"]["formats"]) == {
        "keras",
        "saved_model",
        "tflite_int8",
        "tflite_int16x8",
        "keras_int8_aware",
        "tflite_int8_aware",
    }
    assert summary["export"]["formats"]["saved_model"]["agreement"] == 1.0
    assert (
        "tflite_int8_aware is its int8 file" in out
        and (output / "export" / "int8_aware" / "student_int8.tflite").exists()
    )
    # A second run with the same schedule reuses the teacher, and each student stage draws its own seed: the same
    # students.
    students = ("student_alone.keras", "student_distilled.keras")
    first = {name: keras.saving.load_model(output / name, compile=False).get_weights() for name in students}
    assert cli.main(args + tiny + ["--set", "export=false", "--set", "qat_epochs=0"]) == 0
    again = json.loads((output / "summary.json").read_text())
    assert again["teacher_reused"] is True
    assert [row["top1"] for row in again["results"][:3]] == [row["top1"] for row in summary["results"][:3]]
    for name in students:
        for before, after in zip(
            first[name], keras.saving.load_model(output / name, compile=False).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(before, after, err_msg=name)
    assert built == ["resnet20"]  # trained by the first run only
    # The teacher is a setting: an unknown one is refused in one line, before any work.
    assert cli.main(args + tiny + ["--set", "teacher=resnet5"]) == 2
    assert "Unknown demo teacher 'resnet5'. Did you mean" in capsys.readouterr().err
    assert cli.main(args + ["--set", "epochs=3"]) == 2
    assert "Unknown demo setting" in capsys.readouterr().err


@pytest.mark.eager
def test_export_writes_every_format_and_the_report(tmp_path, fake_fashion_mnist, capsys):
    import keras

    import kdistill

    student = kdistill.students.get("resnet8x4", num_classes=10)
    path = str(tmp_path / "student.keras")
    student.save(path)
    output = tmp_path / "export"
    status = cli.main(
        [
            "export",
            path,
            "--data-dir",
            fake_fashion_mnist,
            "--output-dir",
            str(output),
            "--formats",
            "saved_model,float32,float16",
        ]
    )
    assert status == 0
    report = json.loads((output / "report.json").read_text())
    assert set(report["formats"]) == {"keras", "saved_model", "tflite_float32", "tflite_float16"}
    assert (
        report["formats"]["tflite_float32"]["agreement"] == 1.0
        and report["formats"]["saved_model"]["max_abs_diff"] < 1e-4
    )
    assert "| tflite_float16 |" in capsys.readouterr().out
    # labels.txt beside the files: one class name per line, in the order of the model's outputs
    assert (output / "labels.txt").read_text().splitlines() == list(kdistill.data.FASHION_MNIST_CLASSES)
    assert keras.models.load_model(path).count_params() == report["formats"]["saved_model"]["parameters"]
    assert (
        cli.main(
            ["export", path, "--data-dir", fake_fashion_mnist, "--output-dir", str(output), "--formats", "tflite_int4"]
        )
        == 2
    )
    # used to exit 0
    assert (
        cli.main(["export", path, "--data-dir", fake_fashion_mnist, "--output-dir", str(output), "--formats", ""]) == 2
    )
    assert "Unknown export format" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "export",
                path,
                "--data-dir",
                fake_fashion_mnist,
                "--output-dir",
                str(output),
                "--formats",
                "int8",
                "--calibration",
                "percentile",
                "--percentile",
                "40",
            ]
        )
        == 2
    )
    assert "percentile must be a number in (50, 100]" in capsys.readouterr().err


@pytest.mark.eager
def test_distill_with_a_transfer_set_and_the_review_adapter_flags(tmp_path, fake_fashion_mnist, small_teacher_file):
    status = cli.main(
        [
            "distill",
            "--data-dir",
            fake_fashion_mnist,
            "--teacher",
            small_teacher_file,
            "--student",
            "resnet8x4",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--train-limit",
            "40",
            "--transfer-data",
            "rest",
            "--feature-loss",
            "hcl",
            "--adapter",
            "review",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert status == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["transfer_data"] == "rest" and summary["config"]["adapter"] == "review"
    # ReviewKD's fusion, not 1x1 projections
    assert all("Conv3x3" in row["projection"] for row in summary["projections"])
    assert (
        cli.main(
            [
                "distill",
                "--data-dir",
                fake_fashion_mnist,
                "--teacher",
                small_teacher_file,
                "--transfer-data",
                "more.txt",
                "--output-dir",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )


@pytest.mark.eager
def test_distill_refuses_a_chance_level_teacher_unless_told(tmp_path, capsys):
    """A teacher that collapsed to chance used to distil chance-level students silently."""
    folder = tmp_path / "data"
    make_fashion_mnist(folder, train=1200, test=40)  # 120 validation images: enough to tell chance from learning
    import keras

    inputs = keras.Input((32, 32, 3))  # constant logits: always class 0, chance level
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    teacher = keras.Model(inputs, keras.layers.Dense(10, kernel_initializer="zeros", bias_initializer="zeros")(pooled))
    path = str(tmp_path / "teacher.keras")
    teacher.save(path)
    args = [
        "distill",
        "--data-dir",
        str(folder),
        "--teacher",
        path,
        "--student",
        "resnet8x4",
        "--taps",
        "none",
        "--epochs",
        "1",
        "--train-limit",
        "32",
        "--batch-size",
        "32",
        "--output-dir",
        str(tmp_path / "run"),
    ]
    assert cli.main(args) == 2
    assert "no better than chance" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # a refused run leaves no empty folder
    assert cli.main(args + ["--no-check-teacher"]) == 0


@pytest.mark.eager
def test_demo_latency_rows_and_figure_cover_three_runtimes(tmp_path, monkeypatch):
    import kdistill
    from kdistill import plots
    from kdistill.export import writers as export_writers
    from kdistill.export.writers import saved_model
    from kdistill.run import demo_stages
    from conftest import small_cnn
    from test_data import make_fashion_mnist

    make_fashion_mnist(tmp_path / "data", train=64, test=24)
    splits = kdistill.data.load("fashion_mnist", data_dir=str(tmp_path / "data"), batch_size=16)
    models = {"teacher": small_cnn("teacher", widths=(8, 16)), "student": small_cnn("student", widths=(4, 8))}
    written = []
    for module in (kdistill.export, export_writers):  # every SavedModel written, by the stage or inside tflite()
        monkeypatch.setattr(
            module, "saved_model", lambda *args, **kwargs: written.append(args[1]) or saved_model(*args, **kwargs)
        )
    rows = demo_stages.accuracy_latency_rows(
        models, str(tmp_path / "latency"), splits.validation, splits.test, limit=24
    )
    assert len(written) == len(models)  # one SavedModel per model, for both of its TFLite files
    assert sorted(os.listdir(tmp_path / "latency")) == sorted(
        f"{m}_{mode}.tflite" for m in models for mode in ("float32", "int8")
    )
    assert [(row["model"], row["runtime"]) for row in rows] == [
        (m, r) for m in models for r in ("Keras", "TFLite float32", "TFLite int8")
    ]
    assert all(0 <= row["top1"] <= 1 and row["latency_ms"] > 0 for row in rows)
    keras_row, float_row = rows[0], rows[1]
    assert float_row["top1"] == keras_row["top1"]  # float TFLite computes what Keras computes
    assert (
        plots.accuracy_latency(rows, str(tmp_path / "al.png")).endswith("al.png")
        and (tmp_path / "al.png").read_bytes()[:4] == b"\x89PNG"
    )


def test_small_cli_mistakes_get_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["distill", "--taps", "conv4_block6_out"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "teacher_layer:student_layer" in err and "_parse_taps" not in err
    # A flag without its value: one line, not argparse's usage block of every flag first.
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["distill", "--test-limit"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    assert (
        lines[0]
        == "kdistill distill: error: argument --test-limit: expected one argument (`kdistill distill --help` lists the flags)"
    )
    with pytest.raises(SystemExit) as exit_info:  # a misspelt command: one line naming the known ones
        cli.main(["distil"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        exit_info.value.code == 2
        and len(lines) == 1
        and "invalid choice: 'distil'" in lines[0]
        and "'distill'" in lines[0]
    ), lines
    assert cli.main(["distill", "--train-limit", "0", "--teacher", str(tmp_path / "t.keras")]) == 2
    assert "train_limit must be a positive" in capsys.readouterr().err


def test_cli_prints_only_its_own_lines_once(tmp_path, fake_fashion_mnist):
    """TensorFlow's import-time C++ lines (absl, oneDNN) cluttered every command; log lines used to appear twice."""
    import keras

    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(inputs))).save(
        tmp_path / "small.keras"
    )
    environment = {
        key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")
    }
    # export too: TFLite's converter ("fully_quantize: 0, ...") and LiteRT ("INFO: Created TensorFlow Lite XNNPACK
    # delegate") print to fd 2
    for command in (
        ["evaluate", str(tmp_path / "small.keras")],
        [
            "export",
            str(tmp_path / "small.keras"),
            "--formats",
            "int8",
            "--output-dir",
            str(tmp_path / "export"),
            "--report-limit",
            "16",
        ],
    ):
        result = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "kdistill"), *command, "--data-dir", fake_fashion_mnist],
            capture_output=True,
            text=True,
            timeout=300,
            env=environment,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        # no absl / oneDNN / INFO:kdistill / TFLite lines
        assert lines and all(line.startswith("kdistill: ") for line in lines), lines
        assert len(lines) == len(set(lines))


@pytest.mark.slow
@pytest.mark.eager
def test_distill_quantize_int8_then_export_uses_the_trained_ranges(
    tmp_path, fake_fashion_mnist, small_teacher_file, capsys
):
    import keras
    import numpy as np

    import kdistill

    float_student = str(tmp_path / "float.keras")
    kdistill.students.get("resnet8x4", num_classes=10).save(float_student)
    status = cli.main(
        [
            "distill",
            "--data-dir",
            fake_fashion_mnist,
            "--teacher",
            small_teacher_file,
            "--student",
            "resnet8x4",
            "--student-weights",
            float_student,
            "--quantize",
            "int8",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--train-limit",
            "64",
            "--learning-rate",
            "1e-4",
            "--output-dir",
            str(tmp_path / "qat"),
        ]
    )
    assert status == 0
    summary = json.loads((tmp_path / "qat" / "summary.json").read_text())
    assert summary["config"]["quantize"] == "int8" and summary["taps"] == {
        "conv3_block4_out": "stage2_out",
        "conv4_block6_out": "stage3_out",
    }
    from kdistill import quantize

    for name in ("student.keras", "best_student.keras"):  # both saved with their biases on TFLite's int32 grid
        saved = keras.saving.load_model(tmp_path / "qat" / name)
        before = [keras.ops.convert_to_numpy(w).copy() for w in saved.weights]
        quantize.snap_biases(saved)
        assert all(np.allclose(a, keras.ops.convert_to_numpy(b), atol=1e-6) for a, b in zip(before, saved.weights)), (
            name
        )
    output = tmp_path / "export"
    assert (
        cli.main(
            [
                "export",
                str(tmp_path / "qat" / "student.keras"),
                "--data-dir",
                fake_fashion_mnist,
                "--output-dir",
                str(output),
            ]
        )
        == 0
    )
    report = json.loads((output / "report.json").read_text())
    # a quantization-aware student exports as int8 only
    assert set(report["formats"]) == {
        "keras",
        "saved_model",
        "tflite_int8",
    }
    assert report["formats"]["tflite_int8"]["agreement"] >= 0.9
    capsys.readouterr()
    assert (
        cli.main(
            [
                "export",
                float_student,
                "--data-dir",
                fake_fashion_mnist,
                "--output-dir",
                str(output),
                "--formats",
                "int8",
                "--calibration",
                "trained",
            ]
        )
        == 2
    )
    assert "float model, not a quantization-aware one" in capsys.readouterr().err


@pytest.mark.eager
def test_distill_a_student_at_its_own_input_size(tmp_path, fake_fashion_mnist):
    """One 48x48 pipeline feeds a 48x48 teacher and a 32x32 student (as 224 -> 128 with real models); the saved student takes 32x32."""
    import keras

    from conftest import small_cnn

    teacher = str(tmp_path / "teacher48.keras")
    small_cnn("teacher", widths=(8, 16), input_shape=(48, 48, 3), seed=1).save(teacher)
    status = cli.main(
        [
            "distill",
            "--data-dir",
            fake_fashion_mnist,
            "--image-size",
            "48",
            "--teacher",
            teacher,
            "--student",
            "resnet8x4",
            "--student-image-size",
            "32",
            "--taps",
            "teacher_stage2:stage2_out",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--train-limit",
            "64",
            "--no-check-teacher",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert status == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["student_image_size"] == 32 and summary["test"]["examples"] == 48
    assert keras.models.load_model(tmp_path / "run" / "student.keras").input_shape == (None, 32, 32, 3)
    row = summary["projections"][0]
    assert row["teacher_shape"] != row["student_shape"]  # maps of different sizes, aligned by the projection
    assert (
        cli.main(
            [
                "distill",
                "--data-dir",
                fake_fashion_mnist,
                "--teacher",
                teacher,
                "--student-image-size",
                "0",
                "--output-dir",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
