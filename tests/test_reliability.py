"""Reliability (issue #25): user errors end in one line (rc 2), Ctrl-C says how to resume (rc 130), numbers are checked
before any work, a run folder is locked while in use, and refused runs leave no folders behind."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from kdistill import cli
from kdistill.errors import UserError, check_number, interrupted_line
from kdistill.run import backup as run_backup
from kdistill.run import callbacks, interrupts, options
from kdistill.run.folder import LOCK_NAME
from kdistill.run.config import DistillConfig
from conftest import REAL_SAMPLE, distill_arguments, one_line, small_cnn


def test_a_yaml_list_or_broken_json_config_is_one_line_naming_the_file_and_verbose_adds_the_traceback(tmp_path, capsys):
    """A YAML list gave AttributeError: 'list' object has no attribute 'update'; a JSON syntax error did not name its file."""
    listed, broken = tmp_path / "run.yaml", tmp_path / "run.json"
    listed.write_text("- student: resnet8x4\n- epochs: 1\n")
    broken.write_text('{"student": "resnet8x4",, }')
    assert cli.main(["distill", "--config", str(listed)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(listed) in line and "holds a list" in line and "not `- student: resnet8x4`" in line
    assert cli.main(["distill", "--config", str(broken)]) == 2
    assert str(broken) in one_line(capsys.readouterr().err)
    assert cli.main(["--verbose", "distill", "--config", str(listed)]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.eager
def test_a_non_finite_loss_ends_in_one_line_with_rc_2(tmp_path, tiny_teacher_file, capsys):
    """NonFiniteLossError used to reach the user as a 20-line traceback."""
    config = tmp_path / "run.yaml"
    # finite weight, sum overflows
    config.write_text("taps: {teacher_stage2: stage2_out}\nfeature_loss: mse\ntap_weights: 1.0e+38\n")
    command = [arg for arg in distill_arguments(tiny_teacher_file, tmp_path / "run") if arg not in ("--taps", "none")]
    assert cli.main(command + ["--config", str(config)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "training loss became non-finite" in line and "Lower the learning rate" in line
    assert not os.path.exists(tmp_path / "run" / LOCK_NAME)  # released on error too


@pytest.mark.eager
def test_a_run_stopped_in_its_first_epoch_leaves_no_run_folder(tmp_path, tiny_teacher_file, monkeypatch, capsys):
    """A non-finite loss or Ctrl-C in epoch 1 left `run/history.csv` (0 bytes), so the run folder stayed (found by benchmarks/faults.py)."""
    config = tmp_path / "run.yaml"
    config.write_text("taps: {teacher_stage2: stage2_out}\nfeature_loss: mse\ntap_weights: 1.0e+38\n")
    command = [
        arg for arg in distill_arguments(tiny_teacher_file, tmp_path / "new" / "run") if arg not in ("--taps", "none")
    ]
    assert cli.main(command + ["--config", str(config)]) == 2
    assert "training loss became non-finite" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()

    def ctrl_c_in_the_first_epoch(self, epoch, logs=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.DataPass, "on_epoch_begin", ctrl_c_in_the_first_epoch)
    assert cli.main(distill_arguments(tiny_teacher_file, tmp_path / "new" / "run")) == 130
    assert "interrupted at epoch 1 of 1" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()


@pytest.mark.eager
def test_ctrl_c_during_distill_names_the_epoch_and_the_same_command_resumes(
    tmp_path, tiny_teacher_file, monkeypatch, capsys
):
    output = tmp_path / "run"
    begin = callbacks.DataPass.on_epoch_begin

    def ctrl_c_in_the_second_epoch(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        begin(self, epoch, logs)

    monkeypatch.setattr(callbacks.DataPass, "on_epoch_begin", ctrl_c_in_the_second_epoch)
    assert cli.main(distill_arguments(tiny_teacher_file, output, 2)) == 130
    assert (
        one_line(capsys.readouterr().err)
        == "kdistill distill: interrupted at epoch 2 of 2; run the same command to resume"
    )
    assert not os.path.exists(output / LOCK_NAME)
    monkeypatch.undo()
    assert cli.main(distill_arguments(tiny_teacher_file, output, 2)) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["resumed"] is True and summary["epochs_completed"] == 2


@pytest.mark.eager
def test_ctrl_c_during_train_teacher_names_the_epoch_and_the_same_call_resumes(tmp_path, monkeypatch):
    """train-teacher had no backup: Ctrl-C in epoch 9 of 10 lost every epoch ("nothing was saved: run the same command to start again")."""
    from kdistill import data
    from kdistill.errors import Interrupted
    from kdistill.run import training
    from conftest import real_images

    x, y = real_images(48)
    splits = data.from_arrays(
        x, y, image_size=32, batch_size=16, validation_fraction=1 / 3, class_names=[str(c) for c in range(10)]
    )
    monkeypatch.setattr(
        training.teachers, "get", lambda name, num_classes, **options: small_cnn("teacher", num_classes=num_classes)
    )
    begin = interrupts.EpochProgress.on_epoch_begin

    def ctrl_c_in_the_second_epoch(self, epoch, logs=None):
        begin(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    output = str(tmp_path / "teacher.keras")
    with monkeypatch.context() as patch, pytest.raises(Interrupted) as interrupted:
        patch.setattr(interrupts.EpochProgress, "on_epoch_begin", ctrl_c_in_the_second_epoch)
        training.train_teacher(splits, output, epochs=2, verbose=0)
    assert (
        interrupted_line("train-teacher", interrupted.value)
        == "interrupted at epoch 2 of 2; run the same command to resume"
    )
    backup = training.teacher_backup_dir(output)
    # one epoch done
    assert not os.path.exists(output) and json.load(open(os.path.join(backup, "training_metadata.json")))["epoch"] == 1
    with pytest.raises(
        run_backup.StaleBackupError,
        match="different: learning_rate.*" + re.escape(f"Delete {backup!r} to start afresh, or pass another --output"),
    ):
        training.train_teacher(splits, output, epochs=2, verbose=0, learning_rate=0.5)
    teacher, history = training.train_teacher(splits, output, epochs=2, verbose=0)
    assert len(history["loss"]) == 1  # only the second epoch ran
    assert os.path.exists(output) and not os.path.exists(backup) and history["best_epoch"] in (0, 1)


@pytest.mark.parametrize(
    "command, flag, value, message",
    [
        # trained by gradient ascent, rc 0
        (
            "distill",
            "--learning-rate",
            "-1",
            "learning_rate must be a positive number, received -1.0",
        ),
        ("distill", "--learning-rate", "nan", "learning_rate must be a positive number, received nan"),
        ("distill", "--temperature", "inf", "temperature must be a positive number, received inf"),
        ("distill", "--alpha", "1.5", "alpha must be a number in [0, 1]"),
        ("train-teacher", "--learning-rate", "-1", "--learning-rate must be a positive number, received -1.0"),
        ("train-teacher", "--epochs", "0", "--epochs must be a positive whole number, received 0"),
    ],
)
def test_bad_numbers_in_flags_are_refused_before_any_work(
    tmp_path, tiny_teacher_file, capsys, command, flag, value, message
):
    output = tmp_path / "run"
    arguments = (
        distill_arguments(tiny_teacher_file, output)
        if command == "distill"
        else ["train-teacher", "--data-dir", REAL_SAMPLE, "--output", str(output / "t.keras")]
    )
    assert cli.main(arguments + [flag, value]) == 2
    assert message in one_line(capsys.readouterr().err)
    assert not output.exists()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"learning_rate": -1}, "learning_rate must be a positive number, received -1"),
        ({"learning_rate": float("nan")}, "learning_rate must be a positive number, received nan"),
        ({"weight_decay": -0.1}, "weight_decay must be a non-negative number"),
        ({"batch_size": 0}, "batch_size must be a positive whole number"),
        ({"temperature": float("inf")}, "temperature must be a positive number"),
        ({"seed": -3}, "seed must be a non-negative whole number"),
        ({"tap_weights": {"a": -1.0}}, "tap_weights must be a non-negative number"),
        ({"teacher_weights": [1.0, float("inf")]}, "each of teacher_weights must be a non-negative number"),
        ({"feature_loss": 5}, "feature_loss must be a loss name"),  # was a TypeError deep in the distiller
    ],
)
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

    from kdistill.run import demo_settings

    assert (
        DistillConfig.from_dict(
            yaml.safe_load("learning_rate: 1e-3\nweight_decay: 5e-4"), check_files=False
        ).learning_rate
        == 1e-3
    )
    assert demo_settings.check_settings(
        {"qat_learning_rate": options.parse_overrides(["qat_learning_rate=1e-4"])["qat_learning_rate"]}
    )


def test_demo_settings_are_checked_before_the_teacher_trains(tmp_path, monkeypatch, capsys):
    """`kdistill demo --set student_epochs=abc` used to train a teacher for 7 minutes before failing."""
    from kdistill.run import training

    monkeypatch.setattr(training, "train_teacher", lambda *args, **kwargs: pytest.fail("training started"))
    for setting, message in (
        ("student_epochs=abc", "student_epochs must be a positive whole number, received the str 'abc'"),
        ("teacher_epochs=-2", "teacher_epochs must be a positive whole number, received -2"),
        ("alpha=2", "alpha must be a number in [0, 1], received 2"),
        ("export=maybe", "export must be a bool"),
    ):
        assert (
            cli.main(["demo", "--data-dir", REAL_SAMPLE, "--output-dir", str(tmp_path / "demo"), "--set", setting]) == 2
        )
        assert message in one_line(capsys.readouterr().err)
    assert not (tmp_path / "demo").exists()


def test_a_run_folder_in_use_is_refused_with_the_holders_pid_and_a_dead_holders_lock_is_taken_over(
    tmp_path, tiny_teacher_file, capsys
):
    output = tmp_path / "run"
    output.mkdir()
    lock = output / LOCK_NAME
    import socket

    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # a live process holds it
    assert cli.main(distill_arguments(tiny_teacher_file, output)) == 2
    line = one_line(capsys.readouterr().err)
    assert f"in use by another kdistill run (pid {os.getpid()}" in line
    assert json.loads(lock.read_text())["pid"] == os.getpid() and sorted(os.listdir(output)) == [LOCK_NAME]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))  # left by a killed run
    assert cli.main(distill_arguments(tiny_teacher_file, output)) == 0
    assert (
        f"Taking over the lock of {output}: its process (pid {dead.pid}) is no longer running"
        in capsys.readouterr().err
    )
    assert (output / "student.keras").exists() and not lock.exists()


def test_refused_runs_leave_no_empty_folders_and_a_run_folder_inside_the_image_folder_is_refused(
    tmp_path, tiny_teacher_file, capsys
):
    nested = tmp_path / "new" / "run"
    # refused after the data and teacher loaded
    assert cli.main(distill_arguments(tiny_teacher_file, nested, 1, "--student", "resnet9")) == 2
    assert "resnet9" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()
    images = tmp_path / "images"
    for name in ("boot", "shirt"):
        (images / name).mkdir(parents=True)
    assert (
        cli.main(
            ["distill", "--data", str(images), "--teacher", tiny_teacher_file, "--output-dir", str(images / "run")]
        )
        == 2
    )
    assert "is inside the image folder" in one_line(capsys.readouterr().err)
    assert sorted(os.listdir(images)) == ["boot", "shirt"]


def test_mixed_float16_on_a_cpu_warns_and_an_invalid_backend_lists_the_valid_ones(
    tmp_path, tiny_teacher_file, monkeypatch, capsys
):
    missing = str(tmp_path / "no-data")  # the run stops at the data, after the warning
    command = [arg if arg != REAL_SAMPLE else missing for arg in distill_arguments(tiny_teacher_file, tmp_path / "run")]
    assert cli.main(command + ["--precision", "mixed_float16"]) == 2
    assert "much slower than float32" in capsys.readouterr().err and not (tmp_path / "run").exists()
    monkeypatch.setenv("KERAS_BACKEND", "invalid")
    assert cli.main(["evaluate", tiny_teacher_file]) == 2
    assert "KERAS_BACKEND='invalid' is not a Keras backend. Set it to tensorflow, jax or torch" in one_line(
        capsys.readouterr().err
    )


def test_a_programming_bug_is_not_turned_into_a_user_error(monkeypatch):
    """cli.main caught TypeError, so a bug read as a one-line user mistake."""

    def bug(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(cli.flag_checks, "check", bug)
    with pytest.raises(TypeError):
        cli.main(["evaluate", "model.keras"])


def _mixed_image_folder(root):
    """Two classes of every kind of image Pillow writes, plus entries both readers must ignore."""
    from PIL import Image

    rng = np.random.default_rng(3)
    rgb = lambda height, width: rng.integers(0, 256, (height, width, 3), dtype=np.uint8)  # noqa: E731
    for name in ("boots", "shirts", ".hiddenclass", "shirts/more", "shirts/.thumbnails"):
        (root / name).mkdir(parents=True)
    Image.fromarray(rgb(30, 40)[..., 0]).save(root / "boots" / "grey.png")
    Image.fromarray(rng.integers(0, 256, (24, 24, 4), dtype=np.uint8)).save(root / "boots" / "rgba.png")
    palette = Image.fromarray(rgb(40, 28)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(root / "boots" / "palette.png", transparency=0)
    # Pillow mode I;16
    Image.fromarray(rng.integers(0, 65536, (36, 20), dtype=np.uint16)).save(root / "boots" / "sixteen_bit.png")
    Image.fromarray(rng.integers(0, 256, (24, 24, 2), dtype=np.uint8), "LA").save(root / "boots" / "grey_alpha.png")
    Image.fromarray(rgb(50, 64)).convert("CMYK").save(root / "shirts" / "cmyk.jpg", quality=90)
    Image.fromarray(rgb(33, 17)).save(root / "shirts" / "photo.jpeg", quality=85)
    Image.fromarray(rgb(24, 24)).save(root / "shirts" / "first_frame.gif")
    Image.fromarray(rgb(20, 26)).save(root / "shirts" / "more" / "nested.bmp")
    Image.fromarray(rgb(24, 24)).save(root / "shirts" / ".thumbnails" / "hidden_folder.png")
    Image.fromarray(rgb(24, 24)).save(root / ".hiddenclass" / "x.png")
    (root / "boots" / "._grey.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk, not an image")
    (root / "boots" / "notes.txt").write_text("not an image")
    (root / "shirts" / "Thumbs.db").write_bytes(b"\x00" * 64)
    return rng


def _plain_arrays(splits):
    x, y = zip(*[(np.asarray(images), np.asarray(labels)) for images, labels in splits.train_plain])
    return np.concatenate(x), np.concatenate(y)


def test_both_image_readers_read_every_kind_of_file_alike_and_ignore_hidden_entries(tmp_path):
    """Pillow binarised 16-bit PNGs to 0/255, `.hiddenclass/` became a class, and JPEGs and resizing differed between the readers."""
    from kdistill import data
    from kdistill.data.images import resize

    _mixed_image_folder(tmp_path)
    read = {
        pipeline: data.from_image_folder(str(tmp_path), image_size=24, validation_fraction=0.0, pipeline=pipeline)
        for pipeline in ("tf", "numpy")
    }
    for splits in read.values():
        assert splits.class_names == ["boots", "shirts"] and splits.counts["train"] == 9
    (tf_images, tf_labels), (pillow_images, pillow_labels) = (_plain_arrays(read[p]) for p in ("tf", "numpy"))
    np.testing.assert_array_equal(tf_labels, pillow_labels)
    assert sorted(tf_labels.tolist()) == [0] * 5 + [1] * 4
    assert np.abs(tf_images - pillow_images).max() <= 1.0  # rounding only
    from PIL import Image

    sixteen = np.asarray(Image.open(tmp_path / "boots" / "sixteen_bit.png")).astype("uint32")
    expected = resize(np.repeat((sixteen >> 8).astype("uint8")[..., None], 3, axis=-1), 24)
    found = [index for index, image in enumerate(pillow_images) if np.abs(image - expected).max() <= 1.0]
    assert len(found) == 1 and len(np.unique(pillow_images[found[0]])) > 2  # grey levels, not black and white


def test_a_teacher_cache_that_cannot_be_written_is_refused_before_any_work_naming_the_users_path(
    tmp_path, tiny_teacher_file, monkeypatch, capsys
):
    """A cache under a file or in a read-only folder failed after the data, teacher and distiller were built, naming `.cache-xxxx`."""
    (tmp_path / "notes.txt").write_text("a file")
    under_a_file = str(tmp_path / "notes.txt" / "cache")
    assert cli.main(distill_arguments(tiny_teacher_file, tmp_path / "run", 1, "--teacher-cache", under_a_file)) == 2
    line = one_line(capsys.readouterr().err)
    assert (
        f"Cannot build the teacher cache in {under_a_file!r}: {str(tmp_path / 'notes.txt')!r} is a file" in line
        and ".cache-" not in line
    )
    shared = tmp_path / "shared"
    shared.mkdir()
    access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode, **kw: False if os.path.abspath(path) == str(shared) else access(path, mode, **kw),
    )
    assert (
        cli.main(distill_arguments(tiny_teacher_file, tmp_path / "run", 1, "--teacher-cache", str(shared / "cache")))
        == 2
    )
    assert f"no permission to write in {str(shared)!r}. Point --teacher-cache at a folder you can write" in one_line(
        capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.eager
def test_a_stale_teacher_cache_says_what_changed_and_how_to_rebuild(tmp_path, tiny_teacher_file, capsys):
    cache = str(tmp_path / "cache")
    assert cli.main(distill_arguments(tiny_teacher_file, tmp_path / "run", 1, "--teacher-cache", cache)) == 0
    # run2: run/ is finished
    assert (
        cli.main(distill_arguments(tiny_teacher_file, tmp_path / "run2", 1, "--teacher-cache", cache, "--seed", "1"))
        == 2
    )
    line = one_line(capsys.readouterr().err)
    assert (
        "made from other images or labels: another --seed draws another training/validation split (0 when built, 1 now)"
        in line
    )
    assert f"To rebuild it, delete {cache!r} (kdistill distill --teacher-cache builds it again on first use)" in line


def test_feature_distiller_fit_checks_arrays_and_datasets_with_the_loaders_messages():
    """fit on arrays with label 10 of 10 classes, a NaN pixel or 28x28 grey images failed deep in Keras or trained on NaN."""
    import tensorflow as tf

    from kdistill import FeatureDistiller, data
    from kdistill.data import batches
    from kdistill.models import checks
    from conftest import real_images

    distiller = FeatureDistiller(small_cnn("teacher", seed=1), small_cnn("student", widths=(4, 8)), taps={})
    distiller.compile(optimizer="adam")
    x, y = real_images(16)
    bad_label, bad_pixel = y.copy(), x.copy()
    bad_label[3], bad_pixel[2, 0, 0, 0] = 10, np.nan
    names = [str(c) for c in range(10)]
    for images, labels in ((x, bad_label), (bad_pixel, y)):
        with pytest.raises(UserError) as loader:
            data.from_arrays(images, labels, class_names=names)
        with pytest.raises(UserError) as fit:
            distiller.fit(images, labels, epochs=1, verbose=0)
        assert str(fit.value) == str(loader.value)
        with pytest.raises(UserError, match=re.escape(str(loader.value))):
            distiller.fit(batches.ArrayBatches(images, labels, batch_size=16), epochs=1, verbose=0)
    grey = tf.data.Dataset.from_tensor_slices((x[:, 2:30, 2:30, :1], y)).batch(8)
    with pytest.raises(
        UserError, match=r"The training images have shape \(28, 28, 1\) per image, but the teacher takes \(32, 32, 3\)"
    ):
        distiller.fit(grey, epochs=1, verbose=0)
    with pytest.raises(UserError, match=r"1 validation label\(s\) lie outside \[0, 10\)"):
        distiller.fit(x, y, validation_data=(x, bad_label), epochs=1, verbose=0)
    # A dataset is checked by its first batch only, and a kdistill pipeline's pass counter is left as it was.
    # label 10 in batch 2
    checks.check_fit_data(distiller.teacher, tf.data.Dataset.from_tensor_slices((x, bad_label)).batch(2))
    pipeline = data.from_arrays(x, y, class_names=names, pipeline="tf", validation_fraction=0.0).train
    checks.check_fit_data(distiller.teacher, pipeline)
    assert int(pipeline.kdistill_pass.numpy()) == 0
    read = []

    class Recording(batches.ArrayBatches):
        def __getitem__(self, index):
            read.append(index)
            return super().__getitem__(index)

    checks.check_fit_data(distiller.teacher, Recording(x, bad_label, batch_size=2))
    assert read == [0]


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory):
    """Files that are not a classifier returning (batch, classes) logits: a feature map, two outputs, random bytes, a folder."""
    import keras

    folder = tmp_path_factory.mktemp("odd")
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.Conv2D(4, 3, strides=4, name="features")(inputs)
    keras.Model(inputs, features).save(folder / "feature_map.keras")
    logits = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(features))
    keras.Model(inputs, [logits, features]).save(folder / "two_outputs.keras")
    (folder / "random.keras").write_bytes(np.random.default_rng(0).bytes(256))
    (folder / "folder.keras").mkdir()
    from kdistill import students

    students.get("resnet20", num_classes=10).save(folder / "resnet20.keras")
    return folder


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "feature_map.keras",
            "returns a feature map of shape (batch, 8, 8, 4), not logits of shape (batch, classes): kdistill needs a classifier",
        ),
        (
            "two_outputs.keras",
            "has 2 outputs ((batch, 10), (batch, 8, 8, 4)); kdistill needs a classifier with one output",
        ),
        ("random.keras", "is not a Keras model file: a .keras file is a zip archive written by model.save()"),
        ("folder.keras", "is a folder, not a Keras model file"),
    ],
)
def test_a_teacher_that_is_not_a_logits_classifier_ends_in_one_clear_line(tmp_path, odd_models, capsys, name, message):
    path = str(odd_models / name)
    for extra in ([], ["--no-check-teacher"]):
        command = [arg for arg in distill_arguments(path, tmp_path / "run") if arg != "--no-check-teacher"] + extra
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert message in one_line(err) and "Teacher top-1" not in err and "File not found" not in err
    # the same check, before any data
    for command in (
        ["evaluate", path],
        ["export", path, "--output-dir", str(tmp_path / "export")],
    ):
        assert cli.main(command + ["--data-dir", str(tmp_path / "no-data")]) == 2
        # a map output is a segmenter's to evaluate and export: the line says so and names the data it needs
        words = (
            "not logits of shape (batch, classes): a segmenter's logit map, measured on images with masks"
            if name == "feature_map.keras"
            else message
        )
        assert words in one_line(capsys.readouterr().err)


def test_student_weights_of_another_architecture_are_refused_naming_both(
    tmp_path, tiny_teacher_file, odd_models, capsys
):
    """--student resnet8x4 --student-weights resnet20.keras trained a resnet20 and called it resnet8x4."""
    weights = str(odd_models / "resnet20.keras")
    assert cli.main(distill_arguments(tiny_teacher_file, tmp_path / "run", 1, "--student-weights", weights)) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{weights!r} holds another architecture than the student 'resnet8x4'" in line and "named 'resnet20'" in line


def test_a_truncated_keras_file_is_called_truncated_not_missing(tmp_path, tiny_teacher_file, capsys):
    """A .keras file cut short read "File not found: filepath=..." (Keras' words) for a file that exists (found by benchmarks/faults.py)."""
    whole = open(tiny_teacher_file, "rb").read()
    path = tmp_path / "cut.keras"
    path.write_bytes(whole[: len(whole) // 3])
    assert cli.main(["evaluate", str(path), "--data-dir", str(tmp_path / "no-data")]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{str(path)!r} is truncated" in line and "File not found" not in line
