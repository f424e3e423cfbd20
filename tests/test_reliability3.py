"""Reliability 3 (issue 40): a full disk, a damaged backup, Ctrl-C swallowed inside fit and quiet wrong inputs end in one line
(rc 2, 130 on Ctrl-C) naming the problem and the fix, with nothing lost and no folder left behind."""

import os
import signal

import pytest

from kdistill import cli
from kdistill.run import callbacks, interrupts
from conftest import REAL_SAMPLE, distill_arguments, one_line, small_cnn


def test_ctrl_c_swallowed_inside_fit_still_stops_training_naming_the_epoch():
    """On JAX, after epoch 1, SIGINT lands in Keras' pythonify_logs, whose bare `except: pass` swallowed it: the run finished with rc 0.
    (tests/_cli_jax.py replays that very path through `kdistill --backend jax distill`.)"""
    import keras

    from kdistill import FeatureDistiller, errors
    from conftest import real_images

    class SwallowedCtrlC(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                try:
                    # the handler runs here, inside the try, as it does inside pythonify_logs
                    os.kill(os.getpid(), signal.SIGINT)
                    sum(range(1000))
                except BaseException:  # what Keras' `except: pass` does
                    pass

    distiller = FeatureDistiller(small_cnn("teacher", seed=1), small_cnn("student", widths=(4, 8)), taps={})
    distiller.compile(optimizer="adam")
    x, y = real_images(16)
    progress = interrupts.EpochProgress()
    with pytest.raises(errors.Interrupted) as interrupted, interrupts.reporting_interrupts(progress, resumable=True):
        distiller.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[progress, SwallowedCtrlC()])
    assert (
        errors.interrupted_line("distill", interrupted.value)
        == "interrupted at epoch 2 of 3; run the same command to resume"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back


def test_a_damaged_backup_ends_in_one_line_saying_so_and_that_restart_starts_again(tmp_path, tiny_teacher_file, capsys):
    """A kill -9 mid-write cut backup/state.npz short: every rerun ended in a zipfile.BadZipFile traceback (rc 1)."""
    backup = tmp_path / "run" / "backup"
    backup.mkdir(parents=True)
    (backup / "state.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 60)  # the first bytes of a zip archive, then nothing
    (backup / "training_metadata.json").write_text('{"epoch": 0, "batch": 0}')
    assert cli.main(distill_arguments(tiny_teacher_file, tmp_path / "run", 2)) == 2
    line = one_line(capsys.readouterr().err)
    assert (
        "backup of the interrupted run in" in line
        and "is damaged (state.npz: " in line
        and "--restart to discard the backup" in line
    )
    assert (backup / "state.npz").exists()  # nothing removed without being asked


def test_a_full_disk_is_refused_before_the_first_epoch_and_leaves_no_folder(
    tmp_path, tiny_teacher_file, monkeypatch, capsys
):
    """With a 3 MB disk the run trained a whole epoch before saying so, and left an empty backup/ folder."""
    import shutil

    from kdistill import files

    epochs = []
    monkeypatch.setattr(callbacks.DataPass, "on_epoch_begin", lambda self, epoch, logs=None: epochs.append(epoch))
    monkeypatch.setattr(
        files.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(3_000_000, 2_900_000, 100_000)
    )
    assert cli.main(distill_arguments(tiny_teacher_file, tmp_path / "new" / "run")) == 2
    line = one_line(capsys.readouterr().err)
    assert (
        line.startswith("kdistill distill: error: Not enough disk space for the per-epoch backup")
        and "100 kB free" in line
    )
    assert epochs == [] and not (tmp_path / "new").exists()


def test_library_errors_that_are_the_users_situation_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    import zipfile

    import tensorflow as tf

    for error, words in (
        (zipfile.BadZipFile("File is not a zip file"), "a file is damaged: File is not a zip file"),
        (
            tf.errors.ResourceExhaustedError(None, None, "/tmp/x/.export-1/variables; No space left on device\nmore"),
            "TensorFlow: ResourceExhaustedError (out of disk space or memory",
        ),
    ):

        def fail(args, error=error):
            raise error

        monkeypatch.setattr(cli, "_run", fail)
        assert cli.main(["evaluate", "model.keras"]) == 2
        assert words in one_line(capsys.readouterr().err)
    monkeypatch.setattr(cli, "_run", lambda args: {}["a bug"])
    with pytest.raises(KeyError):
        cli.main(["evaluate", "model.keras"])


def test_export_to_a_full_disk_is_one_line_naming_the_target_and_leaves_no_empty_folders(
    tmp_path, tiny_teacher_file, monkeypatch, capsys
):
    """TensorFlow reports a full disk as ResourceExhaustedError (not an OSError): a traceback naming its staging path, empty serving/ left."""
    import keras
    import tensorflow as tf

    def full_disk(self, path, **options):
        raise tf.errors.ResourceExhaustedError(
            None, None, f"{path}/variables/variables.data-00000-of-00001.tempstate; No space left on device"
        )

    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", full_disk)  # the backend's own class
    output = tmp_path / "exports" / "export"
    assert (
        cli.main(
            [
                "export",
                tiny_teacher_file,
                "--data-dir",
                REAL_SAMPLE,
                "--output-dir",
                str(output),
                "--formats",
                "saved_model",
                "--train-limit",
                "64",
                "--test-limit",
                "32",
            ]
        )
        == 2
    )
    line = one_line(capsys.readouterr().err)
    assert (
        f"Not enough disk space to write the SavedModel '{output / 'serving' / '1'}' (No space left on device)" in line
    )
    assert ".export-" not in line  # TensorFlow's message named the staging path
    assert "an earlier export there is kept" in line and not (tmp_path / "exports").exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (
            ["--taps", "teacher_conv2:stage1_out,teacher_conv2:stage2_out"],
            "--taps names the teacher layer 'teacher_conv2' twice (teacher_conv2:stage1_out, teacher_conv2:stage2_out)",
        ),
        (
            ["--run-name", "../../escaped_run"],
            "run_name '../../escaped_run' must be a plain folder name under saved_models/ (no '..'",
        ),
    ],
    ids=["same_teacher_layer_twice", "run_name_escaping"],
)
def test_flags_that_would_silently_change_the_run_are_refused(tmp_path, tiny_teacher_file, capsys, flags, words):
    arguments = [
        argument
        for argument in distill_arguments(tiny_teacher_file, tmp_path / "run")
        if argument not in ("--taps", "none")
    ]
    if "--run-name" in flags:
        arguments = arguments[: arguments.index("--output-dir")]  # the run name sets the folder
    assert _status(arguments + flags) == 2
    assert words in one_line(capsys.readouterr().err)
    assert not os.listdir(tmp_path) and not os.path.exists("escaped_run")


def _status(arguments: list) -> int:
    """`kdistill.cli.main`'s exit status, also where argparse refuses a flag (it exits)."""
    try:
        return cli.main(arguments)
    except SystemExit as ended:
        return ended.code


@pytest.mark.parametrize(
    "text, words",
    [
        (
            "epochs: 1\nstudent: resnet8x4\nepochs: 3\n",
            "sets 'epochs' twice (lines 1 and 3); only the last one would count. Keep one.",
        ),
        (
            "augment:\n  - &a [x, x, x, x, x, x, x, x]\n"
            + "".join(f"  - &{n} [{', '.join([f'*{p}'] * 8)}]\n" for p, n in zip("abcdef", "bcdefg")),
            "augment takes names from flip, crop, randaugment, mixup, cutmix; received [['x', 'x'",
        ),
    ],
    ids=["duplicate_key", "alias_bomb"],
)
def test_config_files_with_a_key_twice_or_an_alias_bomb_end_in_one_short_line(
    tmp_path, tiny_teacher_file, capsys, text, words
):
    """Duplicate keys: the last one won without a word. A 300-byte alias bomb under augment: an 88 MB error line."""
    (tmp_path / "run.yaml").write_text(text)
    assert (
        cli.main(distill_arguments(tiny_teacher_file, tmp_path / "run") + ["--config", str(tmp_path / "run.yaml")]) == 2
    )
    line = one_line(capsys.readouterr().err)
    assert words in line and len(line) < 500


def test_fit_refuses_fractional_labels_and_one_hot_labels_for_a_class_index_loss():
    """fit(x, np.full(64, 3.7)) trained on class 3 (accuracy 0.0); one-hot labels got Keras' rank message with no hint."""
    import numpy as np

    from kdistill import FeatureDistiller
    from kdistill.errors import UserError
    from conftest import real_images

    distiller = FeatureDistiller(small_cnn("teacher", seed=1), small_cnn("student", widths=(4, 8)), taps={})
    distiller.compile(optimizer="adam")
    x, y = real_images(16)
    with pytest.raises(
        UserError,
        match=r"16 training label\(s\) are not whole numbers \(e\.g\. 3\.7, 3\.7, 3\.7\).*loss='categorical_crossentropy'",
    ):
        distiller.fit(x, np.full(16, 3.7), epochs=1, verbose=0)
    one_hot = np.eye(10, dtype="float32")[y]
    with pytest.raises(
        UserError,
        match=r"one-hot rows \(shape \(16, 10\)\), but the loss is sparse_categorical_crossentropy.*"
        r"Compile with loss='categorical_crossentropy'",
    ):
        distiller.fit(x, one_hot, epochs=1, verbose=0)
    from kdistill.models import checks

    assert (
        distiller.compile(optimizer="adam", loss="categorical_crossentropy").training_objective.label_loss.sparse
        is False
    )
    checks.check_fit_data(distiller.teacher, x, one_hot, sparse_labels=False)  # the loss that takes them: accepted
    # whole numbers stored as floats are class indices
    checks.check_fit_data(distiller.teacher, x, y.astype("float32"), sparse_labels=True)


@pytest.fixture(scope="module")
def odd_inputs(tmp_path_factory, tiny_teacher_file):
    """A second teacher, a teacher file of the same name elsewhere, a model with a Lambda, a 64x64 model, pickled 'images'."""
    import shutil

    import keras
    import numpy as np

    folder = tmp_path_factory.mktemp("odd3")
    small_cnn("other", widths=(8, 16), seed=3).save(folder / "other.keras")
    (folder / "elsewhere").mkdir()
    shutil.copy(tiny_teacher_file, folder / "elsewhere" / "teacher.keras")
    images = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda x: x * 2)(images))
    keras.Model(images, keras.layers.Dense(10)(pooled)).save(folder / "lambda.keras")
    images = keras.Input((64, 64, 3))
    keras.Model(images, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(images))).save(
        folder / "rgb64.keras"
    )
    np.save(folder / "pickled.npy", np.array([{"images": 1}], dtype=object), allow_pickle=True)
    return folder


_UNCLEAR = {  # issue 40's item: (flags after a small distill's, or a whole command; the words the one line must hold)
    "9_input_layer_tap": (
        ["--taps", "{input}:stage1_out"],
        "'{input}' is the teacher's input layer: its output is the image itself",
    ),
    "10_logits_tap": (
        ["--taps", "teacher_stage2:logits"],
        "'logits' names the student's output, which the logits loss (--logits-loss",
    ),
    "11_evaluate_size": (
        ["evaluate", "{odd}/rgb64.keras", "--data-dir", REAL_SAMPLE, "--test-limit", "32"],
        "takes (64, 64, 3): resize them to it (the kdistill command: --image-size 64;",
    ),
    "12_small_mobilenet": (
        ["--student", "mobilenet_v2", "--student-image-size", "8"],
        "mobilenet_v2 needs images of at least 32x32",
    ),
    "14_feature_loss_no_taps": (
        ["--feature-loss", "irg"],
        "feature_loss 'irg' compares teacher and student features at the taps, but taps is 'none'",
    ),
    "15_same_teacher_twice": (
        ["--teacher", "{teacher}", "{teacher}"],
        "names '{teacher}' twice: give each teacher file once",
    ),
    "15_same_file_name": (["--teacher", "{teacher}", "{odd}/elsewhere/teacher.keras"], "have the same name 'teacher'"),
    "16_negative_weights": (
        ["--teacher", "{teacher}", "{odd}/other.keras", "--teacher-weights", "-1,1"],
        "(a value that starts with '-' is written after '=': --teacher-weights=-1,1)",
    ),
    "17_ensemble_tap": (
        ["--teacher", "{teacher}", "{odd}/other.keras", "--taps", "stage9:stage1_out"],
        "Unknown teacher layer 'stage9'. Stage outputs of 'ensemble': teacher/teacher_stage1 (16x16x8)",
    ),
    "19_lambda": (
        ["evaluate", "{odd}/lambda.keras", "--data-dir", REAL_SAMPLE],
        "it holds Python code (a Lambda layer or a lambda), which kdistill",
    ),
    "20_pickled_transfer": (
        ["--transfer-data", "{odd}/pickled.npy"],
        "Transfer images '{odd}/pickled.npy' are not a plain NumPy array",
    ),
}


@pytest.mark.parametrize("case", list(_UNCLEAR))
def test_misleading_or_foreign_messages_are_one_line_naming_the_problem_and_the_fix(
    tmp_path, tiny_teacher_file, odd_inputs, capsys, case
):
    import keras

    # the input layer's name depends on how many Keras inputs this process made before the teacher: read it from the
    # file
    names = dict(
        odd=odd_inputs,
        teacher=tiny_teacher_file,
        input=keras.saving.load_model(tiny_teacher_file).layers[0].name if case.startswith("9_") else "",
    )
    flags, words = (
        text if isinstance(text, str) else [part.format(**names) for part in text] for text in _UNCLEAR[case]
    )
    words = words.format(**names)
    if flags[0] == "evaluate":
        arguments = flags
    else:
        arguments = distill_arguments(tiny_teacher_file, tmp_path / "run")
        for flag in {"--taps", "--teacher", "--student"} & set(flags):  # replaced, with its values
            start = arguments.index(flag)
            arguments = arguments[:start] + arguments[start + 2 :]
        arguments += flags
    assert _status(arguments) == 2
    assert words in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_a_one_teacher_list_is_that_teacher_and_evaluate_json_makes_its_folder(tmp_path, tiny_teacher_file, capsys):
    """`teacher: [one.keras]` said "An ensemble needs two or more Keras models, received ['Functional']"; `--json nodir/r.json` failed
    after the whole report was computed."""
    from kdistill.run import jobs
    from kdistill.run.config import DistillConfig

    assert jobs.load_teacher(DistillConfig.from_dict({"teacher": [tiny_teacher_file]})).name == "teacher"
    assert (
        cli.main(
            [
                "evaluate",
                tiny_teacher_file,
                "--data-dir",
                REAL_SAMPLE,
                "--test-limit",
                "32",
                "--json",
                str(tmp_path / "nodir" / "r.json"),
            ]
        )
        == 0
    )
    assert "top1" in (tmp_path / "nodir" / "r.json").read_text()
