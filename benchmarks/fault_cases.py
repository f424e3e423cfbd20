"""The user faults `faults.py` replays: one builder per case, registered in `CASES`, and the small inputs they share.

A builder gets the shared `Inputs` and its own empty folder (the command's working
directory, watched for what the run leaves behind); it writes what its case needs
there and returns a `Case`: the `kdistill` arguments and what a good ending is.
Paths inside the case folder are relative; shared inputs are `../inputs/...`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "tests", "data", "fashion-mnist-sample")  # 2,000 + 1,000 real Fashion-MNIST images


@dataclasses.dataclass
class Case:
    """One replayed fault and what ending counts as good."""

    argv: list  # the kdistill arguments
    expect_rc: int = 2
    expect: tuple = ()  # texts the error line must hold (rc != 0), or stderr (rc 0)
    allowed: tuple = ()  # fnmatch patterns of paths (relative to the case folder) the run may create or change
    setup: list | None = None  # kdistill arguments of a run that must succeed first (its files are not counted)
    env: dict = dataclasses.field(default_factory=dict)
    mode: str = "plain"  # plain | interrupt (SIGINT once `wait_for` exists, then the same command) | concurrent
    wait_for: str = ""  # interrupt, concurrent: the relative path whose appearance starts the SIGINT or the second run
    settle: float = 1.0  # interrupt: seconds between `wait_for` appearing and the SIGINT (into the next epoch)
    check: Callable | None = None  # (result, case folder) -> problems
    max_seconds: float | None = None
    note: str = ""  # how the case is reproduced, where that needs saying


# name -> (issue item, one-line description, builder); in the order, then the cases the tests add
CASES: dict = {}


def case(name: str, item: str, what: str):
    def register(builder):
        CASES[name] = (item, what, builder)
        return builder

    return register


class Inputs:
    """The shared inputs in `<work>/inputs`, each made on first use (cases that need no model import no Keras here)."""

    def __init__(self, folder: str):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    @functools.cached_property
    def data(self) -> str:
        os.symlink(SAMPLE, self._path("data"))
        return "../inputs/data"

    @functools.cached_property
    def teacher(self) -> str:
        """An untrained small CNN over 32x32x3 with 10 logits (layers teacher_stage1, teacher_stage2)."""
        small_cnn("teacher", seed=1).save(self._path("teacher.keras"))
        return "../inputs/teacher.keras"

    @functools.cached_property
    def odd(self) -> dict:
        """Files that are not a one-output logits classifier, and a student of another architecture."""
        import numpy as np

        keras = _keras()

        from kdistill import students

        inputs = keras.Input((32, 32, 3))
        features = keras.layers.Conv2D(4, 3, strides=4, name="features")(inputs)
        keras.Model(inputs, features).save(self._path("feature_map.keras"))
        logits = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(features))
        keras.Model(inputs, [logits, features]).save(self._path("two_outputs.keras"))
        with open(self._path("random.keras"), "wb") as handle:
            handle.write(np.random.default_rng(0).bytes(256))
        os.mkdir(self._path("folder.keras"))
        students.get("resnet20", num_classes=10).save(self._path("resnet20.keras"))
        _ = self.teacher  # saved first: truncated.keras is its first third
        with open(self._path("teacher.keras"), "rb") as handle:
            whole = handle.read()
        with open(self._path("truncated.keras"), "wb") as handle:
            handle.write(whole[: len(whole) // 3])
        names = ("feature_map", "two_outputs", "random", "folder", "resnet20", "truncated")
        return {name: f"../inputs/{name}.keras" for name in names}

    @functools.cached_property
    def two_classes(self) -> str:
        small_cnn("two", num_classes=2, seed=2).save(self._path("two_classes.keras"))
        return "../inputs/two_classes.keras"


def _keras():
    """Keras, imported without TensorFlow's C++ start-up lines on this process's stderr (the table is about the kdistill processes')."""
    from kdistill import backend

    with backend.native_stderr_silenced():
        import keras
    return keras


def small_cnn(name: str, num_classes: int = 10, seed: int = 0):
    """A tiny functional CNN with layers `<name>_stage1`, `<name>_stage2` (as tests/conftest.py's `small_cnn`)."""
    keras = _keras()
    initializer = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    for index, width in enumerate((8, 16), start=1):
        x = keras.layers.Conv2D(
            width, 3, strides=2, padding="same", kernel_initializer=initializer, name=f"{name}_conv{index}"
        )(x)
        x = keras.layers.ReLU(name=f"{name}_stage{index}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(
        inputs, keras.layers.Dense(num_classes, kernel_initializer=initializer, name=f"{name}_logits")(x), name=name
    )


def distill(
    inputs: Inputs,
    output: str = "run",
    *extra,
    teacher: str | None = None,
    epochs: int = 1,
    limit: int = 64,
    check_teacher: bool = False,
) -> list:
    """A small distillation on the real sample (an untrained teacher, so without the teacher check), as tests/test_reliability.py."""
    return [
        "distill",
        "--data-dir",
        inputs.data,
        "--teacher",
        teacher or inputs.teacher,
        "--student",
        "resnet8x4",
        "--taps",
        "none",
        "--epochs",
        str(epochs),
        "--batch-size",
        "32",
        "--train-limit",
        str(limit),
        "--test-limit",
        "32",
        *([] if check_teacher else ["--no-check-teacher"]),
        "--output-dir",
        output,
        *extra,
    ]


def _write(here: str, name: str, text: str) -> str:
    with open(os.path.join(here, name), "w") as handle:
        handle.write(text)
    return name


def _image_folder(here: str) -> str:
    """images/boots, images/shirts (3 PNGs each) and images/.hiddenclass (1 PNG, which must not become a class)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    for name, count in (("boots", 3), ("shirts", 3), (".hiddenclass", 1)):
        os.makedirs(os.path.join(here, "images", name))
        for index in range(count):
            Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(
                os.path.join(here, "images", name, f"{index}.png")
            )
    return "images"


def _without(argv: list, *flags: str) -> list:
    """`argv` less each of `flags` and the value after it."""
    dropped = {index + offset for index, arg in enumerate(argv) if arg in flags for offset in (0, 1)}
    return [arg for index, arg in enumerate(argv) if index not in dropped]


# === The cases ===
@case("yaml_list", "1", "YAML config that is a list")
def _yaml_list(inputs, here):
    config = _write(here, "run.yaml", "- student: resnet8x4\n- epochs: 1\n")
    return Case(["distill", "--config", config], expect=("run.yaml", "holds a list"))


@case("json_syntax", "2", "JSON config with a syntax error")
def _json_syntax(inputs, here):
    config = _write(here, "run.json", '{"student": "resnet8x4",, }')
    return Case(["distill", "--config", config], expect=("run.json",))


@case("nan_loss_overflow", "3", "loss turns inf: finite terms whose weighted sum overflows (tap_weights 1e38)")
def _nan_loss_overflow(inputs, here):
    config = _write(here, "run.yaml", "taps: {teacher_stage2: stage2_out}\nfeature_loss: mse\ntap_weights: 1.0e+38\n")
    return Case(
        _without(distill(inputs), "--taps") + ["--config", config],
        expect=("training loss became non-finite", "Lower the learning rate"),
    )


@case("nan_loss_learning_rate", "3", "loss turns NaN/inf under --learning-rate 1e30")
def _nan_loss_learning_rate(inputs, here):
    return Case(distill(inputs, "run", "--learning-rate", "1e30", epochs=2, limit=256), expect=("non-finite",))


def _resumed_distill(result, here):
    summary_path = os.path.join(here, "run", "summary.json")
    if not os.path.exists(summary_path):
        return ["the resumed run wrote no summary.json"]
    summary = json.load(open(summary_path))
    problems = [] if summary.get("resumed") is True else ["the second run did not resume"]
    problems += (
        []
        if summary.get("epochs_completed") == 3
        else [f"epochs_completed {summary.get('epochs_completed')}, expected 3"]
    )
    return problems + [
        f"{name} left after the resumed run"
        for name in ("backup", ".kdistill.lock")
        if os.path.exists(os.path.join(here, "run", name))
    ]


@case("ctrl_c_distill", "4", "SIGINT during distill (epoch 2 of 3), then the same command")
def _ctrl_c_distill(inputs, here):
    return Case(
        distill(inputs, "run", epochs=3, limit=640),
        expect_rc=130,
        expect=("interrupted at epoch 2 of 3", "run the same command to resume"),
        allowed=("run", "run/*"),
        mode="interrupt",
        wait_for="run/backup/training_metadata.json",
        check=_resumed_distill,
    )


def _resumed_teacher(result, here):
    problems = [] if os.path.exists(os.path.join(here, "teacher.keras")) else ["the second run saved no teacher.keras"]
    return problems + (
        ["teacher.keras.backup left after the resumed run"]
        if os.path.exists(os.path.join(here, "teacher.keras.backup"))
        else []
    )


@case("ctrl_c_train_teacher", "5", "SIGINT during train-teacher (epoch 2 of 3), then the same command")
def _ctrl_c_train_teacher(inputs, here):
    # 20 steps an epoch: fewer leave ResNet50's BatchNorm statistics unsettled, and train-teacher refuses a chance-level
    # teacher
    argv = [
        "train-teacher",
        "--data-dir",
        inputs.data,
        "--train-limit",
        "640",
        "--test-limit",
        "32",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--output",
        "teacher.keras",
    ]
    return Case(
        argv,
        expect_rc=130,
        expect=("interrupted at epoch 2 of 3", "run the same command to resume"),
        allowed=("teacher.keras*",),
        mode="interrupt",
        wait_for="teacher.keras.backup/training_metadata.json",
        check=_resumed_teacher,
    )


@case("learning_rate_negative", "6", "distill --learning-rate -1")
def _learning_rate_negative(inputs, here):
    return Case(
        distill(inputs, "run", "--learning-rate", "-1"),
        expect=("learning_rate must be a positive number, received -1.0",),
    )


def _no_training(result, here):
    return ["training started"] if "Training" in result["stderr_tail"] or "Epoch 1" in result["stdout_tail"] else []


@case("demo_set_text", "7", "demo --set student_epochs=abc (must fail before any training)")
def _demo_set_text(inputs, here):
    return Case(
        ["demo", "--data-dir", inputs.data, "--output-dir", "demo", "--set", "student_epochs=abc"],
        expect=("student_epochs must be a positive whole number",),
        check=_no_training,
        max_seconds=60,
    )


@case("teacher_feature_map", "8", "teacher whose output is a feature map")
def _teacher_feature_map(inputs, here):
    return Case(
        distill(inputs, teacher=inputs.odd["feature_map"], check_teacher=True), expect=("returns a feature map",)
    )


@case("teacher_feature_map_no_check", "8", "the same with --no-check-teacher")
def _teacher_feature_map_no_check(inputs, here):
    return Case(distill(inputs, teacher=inputs.odd["feature_map"]), expect=("returns a feature map",))


@case("teacher_two_outputs", "9", "teacher with two outputs")
def _teacher_two_outputs(inputs, here):
    return Case(distill(inputs, teacher=inputs.odd["two_outputs"]), expect=("has 2 outputs", "one output"))


@case("export_feature_map", "10", "kdistill export of a feature-map model (nothing written)")
def _export_feature_map(inputs, here):
    return Case(
        ["export", inputs.odd["feature_map"], "--data-dir", inputs.data, "--output-dir", "export"],
        expect=("returns a feature map",),
    )


@case("teacher_random_bytes", "11", "random bytes passed as teacher .keras")
def _teacher_random_bytes(inputs, here):
    return Case(distill(inputs, teacher=inputs.odd["random"]), expect=("is not a Keras model file",))


@case("teacher_folder", "12", "a folder named x.keras as teacher")
def _teacher_folder(inputs, here):
    return Case(distill(inputs, teacher=inputs.odd["folder"]), expect=("is a folder, not a Keras model file",))


@case("student_weights_other_arch", "13", "--student resnet8x4 --student-weights of a resnet20")
def _student_weights_other_arch(inputs, here):
    return Case(
        distill(inputs, "run", "--student-weights", inputs.odd["resnet20"]),
        expect=("holds another architecture than the student 'resnet8x4'", "resnet20"),
    )


@case("same_output_dir_at_once", "14", "two distill runs into one --output-dir at once")
def _same_output_dir_at_once(inputs, here):
    return Case(
        distill(inputs, "run", epochs=2, limit=640),
        expect=("in use by another kdistill run (pid {first_pid}",),
        allowed=("run", "run/*"),
        mode="concurrent",
        wait_for="run/.kdistill.lock",
    )


def _two_classes_only(result, here):
    listed = result["stdout_tail"]
    problems = [] if "boots" in listed and "shirts" in listed else ["boots and shirts not both listed"]
    return problems + (["'.hiddenclass' became a class"] if "hiddenclass" in listed else [])


@case("image_folder_hidden_class", "15", "image folder with .hiddenclass/ (success: 2 classes)")
def _image_folder_hidden_class(inputs, here):
    images = _image_folder(here)
    return Case(
        ["evaluate", inputs.two_classes, "--data", images, "--data-dir", images], expect_rc=0, check=_two_classes_only
    )


@case("run_folder_inside_images", "16", "run folder inside the image-folder dataset")
def _run_folder_inside_images(inputs, here):
    images = _image_folder(here)
    return Case(
        ["distill", "--data", images, "--teacher", inputs.teacher, "--output-dir", os.path.join(images, "run")],
        expect=("is inside the image folder",),
    )


@case("refused_check_nested_folder", "17", "a run refused by a check (unknown student layer) into new/run")
def _refused_check_nested_folder(inputs, here):
    return Case(
        _without(distill(inputs, "new/run"), "--taps") + ["--taps", "teacher_stage2:stage9_out"], expect=("stage9_out",)
    )


@case("teacher_at_chance", "17", "an untrained teacher, refused by the teacher check, into new/run")
def _teacher_at_chance(inputs, here):
    return Case(distill(inputs, "new/run", limit=1200, check_teacher=True), expect=("--no-check-teacher",))


@case("mixed_float16_cpu", "18", "--precision mixed_float16 on a CPU (warns and runs)")
def _mixed_float16_cpu(inputs, here):
    return Case(
        distill(inputs, "run", "--precision", "mixed_float16"),
        expect_rc=0,
        expect=("mixed_bfloat16",),
        allowed=("run", "run/*"),
    )


@case("keras_backend_invalid", "19", "KERAS_BACKEND=invalid")
def _keras_backend_invalid(inputs, here):
    return Case(
        ["evaluate", inputs.teacher], env={"KERAS_BACKEND": "invalid"}, expect=("Set it to tensorflow, jax or torch",)
    )


@case("teacher_cache_under_file", "20", "--teacher-cache under a regular file (notes.txt/cache)")
def _teacher_cache_under_file(inputs, here):
    _write(here, "notes.txt", "a file")
    return Case(
        distill(inputs, "run", "--teacher-cache", "notes.txt/cache"),
        expect=("is a file", "Point --teacher-cache at a folder"),
    )


@case("teacher_cache_unwritable", "20", "--teacher-cache in a place root cannot write (/proc/sys/kdistill-cache)")
def _teacher_cache_unwritable(inputs, here):
    return Case(
        distill(inputs, "run", "--teacher-cache", "/proc/sys/kdistill-cache"),
        expect=("no permission to write",),
        note="as root chmod blocks nothing; /proc/sys refuses writes to root too (os.access W_OK is False there)",
    )


@case("stale_teacher_cache", "21", "teacher cache built with --seed 0, used with --seed 1")
def _stale_teacher_cache(inputs, here):
    return Case(
        distill(inputs, "run2", "--teacher-cache", "cache", "--seed", "1"),
        setup=distill(inputs, "run1", "--teacher-cache", "cache"),
        expect=("another --seed", "delete"),
    )


def _config(inputs, here, text: str) -> list:
    return distill(inputs) + ["--config", _write(here, "run.yaml", text)]


@case("config_seed_text", "22", "seed: abc in a config file")
def _config_seed_text(inputs, here):
    return Case(_config(inputs, here, "seed: abc\n"), expect=("'seed' must be int, received str 'abc'",))


@case("config_seed_negative", "22", "seed: -3 in a config file")
def _config_seed_negative(inputs, here):
    return Case(_config(inputs, here, "seed: -3\n"), expect=("seed must be a non-negative whole number",))


@case("config_learning_rate_inf", "22", "learning_rate: .inf in a config file")
def _config_learning_rate_inf(inputs, here):
    return Case(_config(inputs, here, "learning_rate: .inf\n"), expect=("learning_rate must be a positive number",))


@case("unknown_student", "23", "--student resnet9")
def _unknown_student(inputs, here):
    return Case(distill(inputs, "run", "--student", "resnet9"), expect=("resnet9", "resnet8x4"))


@case("unknown_feature_loss", "23", "--feature-loss nosuch")
def _unknown_feature_loss(inputs, here):
    return Case(
        _without(distill(inputs, "run"), "--taps")
        + ["--taps", "teacher_stage2:stage2_out", "--feature-loss", "nosuch"],
        expect=("nosuch", "mse"),
    )


@case("unknown_logits_loss", "23", "--logits-loss nosuch")
def _unknown_logits_loss(inputs, here):
    return Case(distill(inputs, "run", "--logits-loss", "nosuch"), expect=("nosuch", "dkd"))
