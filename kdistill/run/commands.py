"""The options of every `kdistill` command but `distill` (whose options are `DistillConfig`'s fields), each declared once.

Each command's own flags are a dataclass of `kdistill.run.options.option`
fields: the flag, its default, help, choices, number check (`number=`) and the
paths it writes (`output=`). The data flags they share are `DistillConfig`'s
fields (`shared`); a shared flag left out, and a field declared
`from_config=True`, takes `--config`'s key of the same name. `kdistill.cli`
builds each subcommand's flags from these declarations and
`kdistill.run.flag_checks` checks the values by them. This module imports no
Keras: `kdistill --help` reads it.

Example:
    >>> from kdistill.run.options import number_rules
    >>> options_of("train-teacher") is TrainTeacherOptions
    True
    >>> TrainTeacherOptions.shared[:2], number_rules(TrainTeacherOptions)["epochs"]
    (('data', 'task'), {'integer': True, 'positive': True})
"""

from __future__ import annotations

import dataclasses
import os
import typing

from kdistill.run.config import DATA_FLAGS
from kdistill.run.options import COUNT, NON_NEGATIVE, option

__all__ = [
    "COMMANDS",
    "options_of",
    "DemoOptions",
    "TrainTeacherOptions",
    "EvaluateOptions",
    "CacheTeacherOptions",
    "TapsSuggestOptions",
    "ExportOptions",
]


@dataclasses.dataclass
class DemoOptions:
    """`kdistill demo`'s flags (its schedule is `kdistill.run.demo_settings.DemoSettings`, changed with `--set`)."""

    shared: typing.ClassVar[tuple[str, ...]] = ()  # no data flags, no --config
    full: bool = option(False, help="the longer schedule (all training images, more epochs)")
    output_dir: str = option(
        os.path.join("saved_models", "demo"), help="run folder (default saved_models/demo)", output="folder"
    )
    data_dir: str | None = option(None, help="folder with the Fashion-MNIST IDX files")
    seed: int = option(
        0, help="draws the split, the teacher and the students (default 0)", number=dict(COUNT, allow_zero=True)
    )
    retrain_teacher: bool = option(False, help="train a new teacher even if one is saved")
    set: list = option(
        factory=list,
        action="append",
        metavar="KEY=VALUE",
        help="override a schedule entry, e.g. --set student_epochs=2",
    )
    quiet: bool = option(False, help="no progress bars")
    task: str | None = option(
        None, choices=["classification", "segmentation"], help="segmentation: the demo on offline synthetic scenes"
    )


@dataclasses.dataclass
class TrainTeacherOptions:
    """`kdistill train-teacher`'s own flags; the data flags (`shared`) come first."""

    shared: typing.ClassVar[tuple[str, ...]] = DATA_FLAGS
    name: str = option(
        "resnet50",
        help="resnet50 | resnet101 | resnet152 (ImageNet ResNets) | resnet20 | resnet32 | resnet56 (CIFAR ResNets)",
    )
    weights: str | None = option(None, help="None (random), imagenet, or a weights/model file")
    epochs: int = option(4, number=COUNT)
    learning_rate: float | None = option(
        None, help="peak rate (default 1e-3 for adam, 0.01 for sgd)", number={"positive": True}
    )
    optimizer: str = option("adam", choices=["sgd", "adam", "adamw"], help="adam (default); sgd: momentum 0.9")
    warmup_epochs: float = option(1.0, help="linear warm-up before the cosine decay", number=NON_NEGATIVE)
    resize_to: int | None = option(None, help="upsample inputs inside the teacher to this size (e.g. 64)", number=COUNT)
    output: str = option(os.path.join("saved_models", "teacher.keras"), help="where to save the teacher", output="file")


@dataclasses.dataclass
class EvaluateOptions:
    """`kdistill evaluate`'s own flags: the model, then the data flags (`shared`), then the rest."""

    shared: typing.ClassVar[tuple[str, ...]] = DATA_FLAGS
    shared_after: typing.ClassVar[str] = "model"
    model: str = option(flag="model", help="saved model (.keras)")
    json_path: str | None = option(None, flag="--json", help="also write the report to this JSON file", output="file")


@dataclasses.dataclass
class CacheTeacherOptions:
    """`kdistill cache-teacher`'s own flags."""

    shared: typing.ClassVar[tuple[str, ...]] = DATA_FLAGS
    shared_after: typing.ClassVar[str] = "teacher"
    teacher: str = option(required=True, help="saved teacher (.keras)")
    layers: str | None = option(
        None, help="comma-separated teacher layers (default: the preset's, e.g. conv3_block4_out,conv4_block6_out)"
    )
    dtype: str = option("float32", choices=["float32", "float16"], help="storage dtype (float16 halves the disk)")
    views: int = option(
        0, help="store this many augmented views per image (with --augment)", number=dict(COUNT, allow_zero=True)
    )
    augment: str = option("", help="views' augmentation, comma-separated: crop, flip, mixup, cutmix")
    top_k: int | None = option(
        None, help="store only the teacher's k largest logits per view (compact soft labels)", number=COUNT
    )
    output: str = option(
        os.path.join("saved_models", "teacher_cache"),
        help="cache folder (default saved_models/teacher_cache)",
        output="folder",
    )


@dataclasses.dataclass
class TapsSuggestOptions:
    """`kdistill taps suggest`'s own flags; `--student-width` is `DistillConfig`'s, and the teacher and student also come from `--config`."""

    shared: typing.ClassVar[tuple[str, ...]] = ("student_width", *DATA_FLAGS)
    shared_after: typing.ClassVar[str] = "student"
    teacher: str | list | None = option(
        None,
        nargs="+",
        from_config=True,
        help="a saved teacher (.keras; several: their ensemble) or 'resnet50' (random weights; "
        "default: the config's teacher, else resnet50)",
    )
    student: str | None = option(
        None,
        from_config=True,
        help="a registered student name or a saved model (default: the config's, else mobilenet_v2)",
    )
    cka: bool = option(False, help="score pairs by linear CKA on --cka-images test images")
    cka_images: int = option(128, number=COUNT)
    heatmap: str | None = option(None, help="save the CKA matrix as this PNG (implies --cka)")


@dataclasses.dataclass
class ExportOptions:
    """`kdistill export`'s own flags."""

    shared: typing.ClassVar[tuple[str, ...]] = DATA_FLAGS
    shared_after: typing.ClassVar[str] = "model"
    model: str = option(flag="model", help="saved student (.keras); a saved distiller exports its student only")
    output_dir: str = option(
        os.path.join("saved_models", "export"), help="where to write (default saved_models/export)", output="folder"
    )
    formats: str | None = option(
        None,
        help="comma-separated: saved_model, onnx, float32, float16, dynamic, int8, int16x8 (default saved_model,float32,int8; "
        "saved_model,int8 for a quantization-aware student)",
    )
    version: int = option(1, help="TF Serving version folder (default 1)", number=dict(COUNT, allow_zero=True))
    int8_io: bool = option(False, help="int8 model input/output too (default float input/output)")
    report_limit: int = option(1000, help="test images used by the parity report (default 1000)", number=COUNT)
    calibration: str = option(
        "minmax",
        choices=["minmax", "percentile", "trained"],
        help="int8 activation ranges: the converter's min/max (default), each range cut to its percentiles, or "
        "a quantization-aware student's trained ranges (used by itself for such a student)",
    )
    percentile: float = option(99.99, help="upper percentile kept by --calibration percentile (default 99.99)")
    calibration_images: int = option(
        500,
        help="images that calibrate int8/int16x8 (default 500): the validation split, or the training "
        "images where it holds fewer",
        number=COUNT,
    )


#: command (as typed, `taps suggest` for the subcommand) -> its declared options; `distill`'s are `DistillConfig`
COMMANDS = {
    "demo": DemoOptions,
    "train-teacher": TrainTeacherOptions,
    "evaluate": EvaluateOptions,
    "cache-teacher": CacheTeacherOptions,
    "taps suggest": TapsSuggestOptions,
    "export": ExportOptions,
}


def options_of(command: str, subcommand: str | None = None) -> type | None:
    """The options class of `command` (`subcommand` for `taps`), None for `distill`."""
    return COMMANDS.get(f"{command} {subcommand}" if subcommand else command)
