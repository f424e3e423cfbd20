"""The faults of issue 40 (Reliability 3: a full disk, a damaged backup, Ctrl-C on JAX, quiet wrong inputs), replayed as the others are.

Registered into `fault_cases.CASES` on import; the item is the issue's number ("40.1" ... "40.23"). Cases 7 and 23 are
`FeatureDistiller.fit` in Python, not a command: tests/test_reliability3.py covers them. A full disk is a small tmpfs in
the issue; here, where a mount needs root, a `sitecustomize` on the kdistill process's path makes `shutil.disk_usage`
report little free space (the writes themselves still succeed, so the case shows that the check comes first).
"""

from __future__ import annotations

import json
import os

from fault_cases import Case, _keras, _resumed_distill, _write, case, distill


def _without_taps(argv: list) -> list:
    start = argv.index("--taps")
    return argv[:start] + argv[start + 2 :]


@case("same_teacher_layer_twice", "40.1", "--taps teacher_conv2:teacher_stage1,teacher_conv2:teacher_stage2")
def _same_teacher_layer_twice(inputs, here):
    return Case(
        _without_taps(distill(inputs)) + ["--taps", "teacher_conv2:stage1_out,teacher_conv2:stage2_out"],
        expect=("names the teacher layer 'teacher_conv2' twice", "Keep one pair per teacher layer"),
    )


@case("ctrl_c_distill_jax", "40.2", "SIGINT during distill on JAX (epoch 2 of 3), then the same command")
def _ctrl_c_distill_jax(inputs, here):
    return Case(
        ["--backend", "jax", *distill(inputs, "run", epochs=3, limit=640)],
        expect_rc=130,
        expect=("interrupted at epoch 2 of 3", "run the same command to resume"),
        allowed=("run", "run/*"),
        mode="interrupt",
        wait_for="run/backup/training_metadata.json",
        check=_resumed_distill,
    )


@case("yaml_alias_bomb", "40.3", "a 300-byte YAML alias bomb under augment: (7 levels of 8 aliases)")
def _yaml_alias_bomb(inputs, here):
    levels = ["augment:", "  - &a [x, x, x, x, x, x, x, x]"]
    levels += [f"  - &{name} [{', '.join([f'*{previous}'] * 8)}]" for previous, name in zip("abcdef", "bcdefg")]
    return Case(
        distill(inputs) + ["--config", _write(here, "run.yaml", "\n".join(levels) + "\n")],
        expect=("augment takes names from flip, crop", "characters in all)"),
        check=_short_line,
    )


def _short_line(result, here):
    return [] if len(result["last_line"]) < 1000 else [f"the line is {len(result['last_line'])} characters long"]


@case("truncated_backup", "40.4", "a run whose backup/state.npz a kill -9 cut short, run again")
def _truncated_backup(inputs, here):
    os.makedirs(os.path.join(here, "run", "backup"))
    with open(os.path.join(here, "run", "backup", "state.npz"), "wb") as handle:
        handle.write(b"PK\x03\x04" + bytes(300))  # a zip archive's first bytes, then nothing
    _write(here, "run/backup/training_metadata.json", json.dumps({"epoch": 0, "batch": 0}))
    return Case(distill(inputs, "run", epochs=2), expect=("is damaged (state.npz", "--restart to discard the backup"))


def _small_disk(here: str, free: int) -> dict:
    """The environment of a kdistill process that sees `free` bytes free on every disk (see the module's docstring)."""
    os.makedirs(os.path.join(here, "small_disk"))
    _write(
        here,
        "small_disk/sitecustomize.py",
        "import shutil\n_usage = shutil.disk_usage\n"
        f"shutil.disk_usage = lambda path: shutil._ntuple_diskusage(_usage(path).total, _usage(path).used, {free})\n",
    )
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [os.path.join(here, "small_disk"), os.environ.get("PYTHONPATH")]))
    }


@case("full_disk_distill", "40.5", "distill onto a disk with 100 kB free")
def _full_disk_distill(inputs, here):
    return Case(
        distill(inputs, "new/run"),
        env=_small_disk(here, 100_000),
        expect=("Not enough disk space for the per-epoch backup",),
        note="free space reported by a sitecustomize",
        check=_no_epoch_trained,
    )


def _no_epoch_trained(result, here):
    return ["an epoch trained before the refusal"] if "Epoch 1/" in result["stdout_tail"] else []


@case(
    "full_disk_export", "40.6", "kdistill export of a model of 6 kB of weights onto a disk with 1 kB free (also 40.22)"
)
def _full_disk_export(inputs, here):
    return Case(
        [
            "export",
            inputs.teacher,
            "--data-dir",
            inputs.data,
            "--output-dir",
            "exports/export",
            "--formats",
            "saved_model",
        ],
        env=_small_disk(here, 1_000),
        expect=("Not enough disk space for the SavedModel",),
        note="free space reported by a sitecustomize",
    )


@case("config_duplicate_key", "40.8", "epochs: twice in a config file")
def _config_duplicate_key(inputs, here):
    return Case(
        distill(inputs) + ["--config", _write(here, "run.yaml", "epochs: 1\nstudent: resnet8x4\nepochs: 3\n")],
        expect=("sets 'epochs' twice (lines 1 and 3)",),
    )


@case("input_layer_tap", "40.9", "--taps input_layer:stage1_out (the teacher's input layer)")
def _input_layer_tap(inputs, here):
    return Case(
        _without_taps(distill(inputs)) + ["--taps", "input_layer:stage1_out"], expect=("is the teacher's input layer",)
    )


@case("logits_tap", "40.10", "--taps teacher_stage2:logits")
def _logits_tap(inputs, here):
    return Case(
        _without_taps(distill(inputs)) + ["--taps", "teacher_stage2:logits"],
        expect=("already distils", "--logits-loss"),
    )


def _model(here: str, name: str, shape: tuple, lambda_layer: bool = False) -> str:
    keras = _keras()
    images = keras.Input(shape)
    features = keras.layers.Lambda(lambda x: x * 2)(images) if lambda_layer else images
    keras.Model(images, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(features))).save(
        os.path.join(here, name)
    )
    return name


@case("evaluate_other_size", "40.11", "kdistill evaluate of a 64x64 model on 32x32 data")
def _evaluate_other_size(inputs, here):
    return Case(
        ["evaluate", _model(here, "rgb64.keras", (64, 64, 3)), "--data-dir", inputs.data, "--test-limit", "32"],
        expect=("--image-size 64",),
    )


@case("mobilenet_8x8", "40.12", "--student mobilenet_v2 --student-image-size 8")
def _mobilenet_8x8(inputs, here):
    argv = distill(inputs)
    argv[argv.index("resnet8x4")] = "mobilenet_v2"
    return Case(argv + ["--student-image-size", "8"], expect=("needs images of at least 32x32",))


@case("evaluate_json_new_folder", "40.13", "kdistill evaluate --json nodir/r.json (success: the folder is made)")
def _evaluate_json_new_folder(inputs, here):
    return Case(
        ["evaluate", inputs.teacher, "--data-dir", inputs.data, "--test-limit", "32", "--json", "nodir/r.json"],
        expect_rc=0,
        allowed=("nodir", "nodir/r.json"),
    )


@case("feature_loss_without_taps", "40.14", "--feature-loss irg --taps none")
def _feature_loss_without_taps(inputs, here):
    return Case(
        distill(inputs, "run", "--feature-loss", "irg"), expect=("feature_loss 'irg' compares", "taps is 'none'")
    )


@case("same_teacher_file_twice", "40.15", "--teacher teacher.keras teacher.keras")
def _same_teacher_file_twice(inputs, here):
    return Case(
        distill(inputs) + ["--teacher", inputs.teacher, inputs.teacher], expect=("twice: give each teacher file once",)
    )


@case("teacher_weights_negative", "40.16", "--teacher-weights -1,1 (argparse reads -1,1 as a flag)")
def _teacher_weights_negative(inputs, here):
    return Case(
        distill(inputs) + ["--teacher", inputs.teacher, inputs.two_classes, "--teacher-weights", "-1,1"],
        expect=("--teacher-weights=-1,1",),
    )


@case("ensemble_unknown_tap", "40.17", "an unknown tap on an ensemble of two teachers")
def _ensemble_unknown_tap(inputs, here):
    other = _model(here, "other.keras", (32, 32, 3))
    return Case(
        _without_taps(distill(inputs)) + ["--teacher", inputs.teacher, other, "--taps", "stage9:stage1_out"],
        expect=("is made of 2 models (teacher, other)", "'<member>/<layer>'"),
    )


@case("teacher_list_of_one", "40.18", "teacher: [teacher.keras] in a config file (success: that teacher)")
def _teacher_list_of_one(inputs, here):
    argv = distill(inputs)
    start = argv.index("--teacher")
    return Case(
        argv[:start] + argv[start + 2 :] + ["--config", _write(here, "run.yaml", f"teacher: [{inputs.teacher}]\n")],
        expect_rc=0,
        allowed=("run", "run/*"),
    )


@case("lambda_model", "40.19", "kdistill evaluate of a model holding a Lambda layer (safe mode)")
def _lambda_model(inputs, here):
    return Case(
        ["evaluate", _model(here, "lambda.keras", (32, 32, 3), lambda_layer=True), "--data-dir", inputs.data],
        expect=("it holds Python code (a Lambda layer",),
        check=_not_called_truncated,
    )


def _not_called_truncated(result, here):
    return ["the line calls the file truncated"] if "truncated" in result["last_line"] else []


@case("pickled_transfer_data", "40.20", "--transfer-data of a pickled .npy")
def _pickled_transfer_data(inputs, here):
    import numpy as np

    np.save(os.path.join(here, "pickled.npy"), np.array([{"images": 1}], dtype=object), allow_pickle=True)
    return Case(
        distill(inputs, "run", "--transfer-data", "pickled.npy"),
        expect=("Transfer images 'pickled.npy' are not a plain NumPy array",),
    )


@case("run_name_escaping", "40.21", "--run-name ../../escaped_run")
def _run_name_escaping(inputs, here):
    argv = distill(inputs)
    return Case(
        argv[: argv.index("--output-dir")] + ["--run-name", "../../escaped_run"],
        expect=("must be a plain folder name",),
    )
