"""Segmentation from the command line (`kdistill.run.segmentation`): the task, mask data, train-teacher, distill, evaluate, export, demo."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from kdistill import cli
from kdistill.errors import UserError
from kdistill.run import segmentation, segmentation_data
from kdistill.run.demo_settings import SegmentationDemoSettings


def _write_mask_folder(folder, count=5, size=8, classes=3):
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        os.makedirs(folder / sub, exist_ok=True)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3)).astype("uint8")).save(folder / "images" / f"{index}.png")
        Image.fromarray(rng.integers(0, classes, (size, size)).astype("uint8"), mode="L").save(
            folder / "masks" / f"{index}.png"
        )


def _scenes(data_dir: str, train: int = 8, test: int = 4, source: bool = True) -> list[str]:
    """The data flags of a tiny run on 32x32 scenes made from the Fashion-MNIST files in `data_dir` (batch 8); without
    `source`, no `--data scenes` (the caller names the data per command)."""
    flags = ["--data-dir", data_dir, "--image-size", "32", "--train-limit", str(train), "--test-limit", str(test)]
    return (["--data", "scenes"] if source else []) + flags + ["--batch-size", "8"]


def test_the_task_is_inferred_from_mask_data_and_said_in_one_line(caplog):
    with caplog.at_level(logging.INFO, logger="kdistill"):
        assert segmentation.resolve_task(None, "scenes") == "segmentation"
    assert "task: segmentation (the data 'scenes' holds masks)" in caplog.text
    assert segmentation.resolve_task(None, "fashion_mnist") == "classification"
    assert segmentation.resolve_task("segmentation", "masks:some/folder") == "segmentation"
    with pytest.raises(UserError, match="--data scenes"):
        segmentation.resolve_task("segmentation", "fashion_mnist")
    with pytest.raises(UserError, match="--task segmentation"):
        segmentation.resolve_task("classification", "scenes")
    with pytest.raises(UserError, match="classification, segmentation"):
        segmentation.resolve_task("detection", "scenes")


def test_a_mask_folder_is_split_for_testing_and_named_by_labels_txt(tmp_path):
    _write_mask_folder(tmp_path)
    (tmp_path / "labels.txt").write_text("sky\nroad\ncar\n")
    splits = segmentation_data.load(f"masks:{tmp_path}", image_size=None, seed=0)
    assert (len(splits.train_images), len(splits.test_images)) == (4, 1) and splits.class_names == [
        "sky",
        "road",
        "car",
    ]
    assert splits.train_masks.shape == (4, 8, 8) and splits.train_images.shape == (4, 8, 8, 3)
    (tmp_path / "labels.txt").unlink()
    named = segmentation_data.load(f"masks:{tmp_path / 'images'},{tmp_path / 'masks'}", image_size=16, num_classes=4)
    # numbered without labels.txt
    assert named.train_images.shape[1:] == (16, 16, 3) and named.class_names == [
        "0",
        "1",
        "2",
        "3",
    ]
    _write_mask_folder(tmp_path / "test", count=2)
    # FOLDER/test is the test split, the training split keeps all 5
    assert len(segmentation_data.load(f"masks:{tmp_path}").test_images) == 2
    with pytest.raises(UserError, match="masks:IMAGES_DIR,MASKS_DIR"):
        segmentation_data.load("masks:a,b,c")


def test_a_classifier_on_mask_data_and_a_segmenter_on_classes_are_refused(tmp_path, small_teacher_file, capsys):
    assert cli.main(["evaluate", small_teacher_file, "--data", "scenes"]) == 2
    assert "is a classifier" in capsys.readouterr().err
    assert cli.main(["distill", "--task", "classification", "--data", "scenes", "--teacher", small_teacher_file]) == 2
    assert "holds masks" in capsys.readouterr().err


@pytest.mark.slow
def test_train_teacher_distill_evaluate_and_export_a_segmenter_from_the_command_line(
    tmp_path, fake_fashion_mnist, capsys
):
    data = _scenes(fake_fashion_mnist, train=16, test=8, source=False)  # --data given per command below
    teacher = str(tmp_path / "teacher.keras")
    assert (
        cli.main(
            [
                "train-teacher",
                "--task",
                "segmentation",
                "--name",
                "conv_segmenter",
                "--data",
                "scenes",
                "--epochs",
                "1",
                "--output",
                teacher,
                *data,
            ]
        )
        == 0
    )
    assert "test mean IoU" in capsys.readouterr().out
    config = tmp_path / "run.yaml"
    config.write_text(
        f"task: segmentation\ndata: scenes\nteacher: {teacher}\nstudent: mobilenet_v2_segmenter\nepochs: 1\n"
        f"logits_loss: {{name: cwd, temperature: 1.0}}\nfeature_loss: none\ntaps: none\noutput_dir: {tmp_path / 'run'}\n"
    )
    unlabelled = tmp_path / "unlabelled.npy"  # a transfer set only the teacher labels
    np.save(unlabelled, np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32"))
    assert cli.main(["distill", "--config", str(config), "--transfer-data", str(unlabelled), *data]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v2_segmenter (student.keras): mean IoU" in out and "per-class IoU:" in out and "Ankle boot" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["transfer_images"] == 8 and summary["epochs_completed"] == 1
    np.save(unlabelled, np.zeros((2, 16, 16, 3), "float32"))
    bad = ["distill", "--config", str(config), "--transfer-data", str(unlabelled), "--output-dir", str(tmp_path / "r2")]
    assert cli.main(bad + data) == 2 and "resize them to that size" in capsys.readouterr().err
    student = str(tmp_path / "run" / "student.keras")
    assert cli.main(["evaluate", student, "--data", "scenes", "--json", str(tmp_path / "e.json"), *data]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert (
        set(report) >= {"mean_iou", "per_class_iou", "pixel_accuracy"}
        and report["examples"] == 8
        and len(report["per_class_iou"]) == 11
    )
    capsys.readouterr()
    assert (
        cli.main(
            [
                "export",
                student,
                "--data",
                "scenes",
                "--formats",
                "float32",
                "--output-dir",
                str(tmp_path / "export"),
                *data,
            ]
        )
        == 0
    )
    assert "| tflite_float32 |" in capsys.readouterr().out and (tmp_path / "export" / "report.json").exists()
    # a segmenter on classification data
    assert cli.main(["export", student, "--output-dir", str(tmp_path / "other"), *data]) == 2
    assert "a segmenter's logit map" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.eager
def test_the_segmentation_demo_prints_teacher_student_alone_and_distilled_miou(tmp_path, fake_fashion_mnist, capsys):
    tiny = [
        "train_scenes=16",
        "test_scenes=8",
        "transfer_scenes=8",
        "teacher_epochs=1",
        "student_epochs=1",
        "batch_size=8",
    ]
    argv = [
        "demo",
        "--task",
        "segmentation",
        "--data-dir",
        fake_fashion_mnist,
        "--output-dir",
        str(tmp_path),
        "--quiet",
    ]
    assert cli.main(argv + [item for pair in tiny for item in ("--set", pair)]) == 0
    out = capsys.readouterr().out
    assert "teacher (conv_segmenter)" in out and "student alone" in out and "distilled student (pixel-wise KD)" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (
        all(0.0 <= summary[name] <= 1.0 for name in ("teacher", "student_alone", "distilled"))
        and summary["schedule"]["train_scenes"] == 16
    )
    assert summary["environment"]["cpu_cores"] > 0 and "keras" in summary["environment"]["versions"]
    # an unknown setting names the known ones
    assert cli.main(argv + ["--set", "epochs=1"]) == 2 and "teacher_epochs" in capsys.readouterr().err


def test_unlabelled_scenes_are_all_ignored_and_a_student_reading_them_takes_the_labelled_runs_steps(fake_fashion_mnist):
    """The transfer set only the teacher labels: its masks are all the ignore label, and `train_student` keeps the number of steps
    of `student_epochs` over the labelled scenes (fewer epochs over more images)."""
    splits = segmentation_data.load("scenes", fake_fashion_mnist, 32, 16, 8, seed=0)
    extended = segmentation_data.add_unlabelled_scenes(splits, 16, fake_fashion_mnist, seed=100)
    assert extended.train_images.shape == (32, 32, 32, 3) and (extended.train_masks[16:] == 255).all()
    assert (extended.train_masks[:16] == splits.train_masks).all() and not np.array_equal(
        extended.train_images[16:], splits.train_images
    )
    schedule = SegmentationDemoSettings(student_epochs=2, batch_size=8, learning_rate=1e-3)
    steps = [
        int(segmentation.train_student(None, data, None, schedule, seed=0).optimizer.iterations)
        for data in (splits, extended)
    ]
    assert steps == [4, 4]  # 2 epochs of 2 batches, and 1 epoch of 4


@pytest.mark.slow
@pytest.mark.eager  # one step per run: cheaper eagerly than traced
def test_a_kerashub_deeplab_v3_preset_folder_is_trained_as_a_teacher_and_distilled_from_on_the_command_line(
    tmp_path, fake_fashion_mnist, capsys
):
    from test_segmenters import save_deeplab_preset

    save_deeplab_preset(tmp_path / "deeplab", num_classes=11)
    preset = f"keras_hub:{tmp_path / 'deeplab'}"
    data = _scenes(fake_fashion_mnist)
    assert (
        cli.main(
            [
                "train-teacher",
                "--task",
                "segmentation",
                "--name",
                preset,
                "--epochs",
                "1",
                "--output",
                str(tmp_path / "t.keras"),
                *data,
            ]
        )
        == 0
    )
    assert "test mean IoU" in capsys.readouterr().out and (tmp_path / "t.keras").exists()
    argv = [
        "distill",
        "--teacher",
        preset,
        "--student",
        "conv_segmenter",
        "--epochs",
        "1",
        "--feature-loss",
        "mse",
        "--taps",
        "stack1_block0_out:conv_segmenter_stage3",
        "--output-dir",
        str(tmp_path / "run"),
        *data,
    ]
    assert cli.main(argv) == 0
    assert (
        "conv_segmenter (student.keras): mean IoU" in capsys.readouterr().out
        and (tmp_path / "run" / "student.keras").exists()
    )
    save_deeplab_preset(tmp_path / "five", num_classes=5)
    five = argv[:2] + [f"keras_hub:{tmp_path / 'five'}"] + argv[3:] + ["--output-dir", str(tmp_path / "five_run")]
    assert cli.main(five) == 2  # its head cannot predict the scenes' 11 classes
    assert "predicts 5 classes but the data 'scenes' has 11" in capsys.readouterr().err


def test_taps_suggest_lists_two_segmenters_stages_a_pasteable_taps_line_and_their_cka_on_scenes(
    tmp_path, fake_fashion_mnist, capsys
):
    from kdistill.models import saving, segmenters

    teacher = str(tmp_path / "segmenter.keras")
    saving.save_for_inference(
        segmenters.get("conv_segmenter", 11, (32, 32, 3), widths=(8, 16, 32), decoder_channels=8), teacher
    )
    argv = ["taps", "suggest", "--teacher", teacher, "--student", "mobilenet_v2_segmenter", "--student-width", "0.5"]
    # the task from the student
    assert cli.main(argv + ["--cka", "--cka-images", "8", "--data", "scenes", "--data-dir", fake_fashion_mnist]) == 0
    out = capsys.readouterr().out
    assert "conv_segmenter_stage3    4x4x32       block_13_expand_relu       2x2x288" in out  # width 0.5 (0.35: 192)
    line = next(row for row in out.splitlines() if row.startswith("--taps "))
    assert line == "--taps conv_segmenter_stage2:block_6_expand_relu,conv_segmenter_stage3:block_13_expand_relu"
    scores = [row.split()[4] for row in out.splitlines() if row.startswith("conv_segmenter_stage2")]
    assert 0.0 <= float(scores[0]) <= 1.0  # CKA on 8 scenes
    # mobilenet_v2, the classifiers' default
    assert cli.main(["taps", "suggest", "--task", "segmentation", "--teacher", teacher]) == 2
    assert "Did you mean 'mobilenet_v2_segmenter'" in capsys.readouterr().err


@pytest.mark.eager  # one step per epoch: cheaper run eagerly than traced
def test_ctrl_c_during_a_segmentation_distill_names_the_epoch_and_the_same_command_resumes(
    tmp_path, fake_fashion_mnist, monkeypatch, capsys
):
    from kdistill.models import saving, segmenters
    from kdistill.run import interrupts
    from kdistill.run.folder import LOCK_NAME

    teacher = str(tmp_path / "segmenter.keras")
    saving.save_for_inference(
        segmenters.get("conv_segmenter", 11, (32, 32, 3), widths=(8, 16, 32), decoder_channels=8), teacher
    )
    output = tmp_path / "run"
    argv = [
        "distill",
        *_scenes(fake_fashion_mnist),
        "--teacher",
        teacher,
        "--student",
        "conv_segmenter",
        "--taps",
        "none",
        "--feature-loss",
        "none",
        "--epochs",
        "2",
        "--output-dir",
        str(output),
    ]
    begin = interrupts.EpochProgress.on_epoch_begin

    def ctrl_c_in_the_second_epoch(self, epoch, logs=None):
        begin(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(interrupts.EpochProgress, "on_epoch_begin", ctrl_c_in_the_second_epoch)
    assert cli.main(argv) == 130
    assert "kdistill distill: interrupted at epoch 2 of 2; run the same command to resume" in capsys.readouterr().err
    assert json.loads((output / "backup" / "training_metadata.json").read_text())["epoch"] == 1  # one epoch done
    assert not (output / LOCK_NAME).exists() and not (output / "student.keras").exists()
    monkeypatch.undo()
    assert cli.main(argv) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["resumed"] is True and summary["epochs_completed"] == 2 and not (output / "backup").exists()
    assert json.loads((output / "history.json").read_text())["epoch"] == [0, 1]
    capsys.readouterr()
    assert cli.main(argv) == 2 and "holds a finished run" in capsys.readouterr().err  # --restart trains it again
