"""The demo's schedule, declared once: each setting's type, default and check (`kdistill demo --set KEY=VALUE` changes one).

This module imports no Keras, so that `--set` is checked before a backend loads.

Example:
    >>> DEMO_QUICK.student, DEMO_FULL.train_limit
    ('mobilenet_v2', None)
    >>> DEMO_QUICK.replaced({"student_epochs": 2}).student_epochs
    2
    >>> DEMO_QUICK.replaced({"student_epochs": "abc"})
    Traceback (most recent call last):
    kdistill.errors.UserError: student_epochs must be a positive whole number, received the str 'abc'.
"""

from __future__ import annotations

import dataclasses
import typing

from kdistill.errors import UserError, check_number, shown
from kdistill.run.options import COUNT, NON_NEGATIVE, number_rules, option

__all__ = ["DemoSettings", "DEMO_QUICK", "DEMO_FULL", "SegmentationDemoSettings", "SEGMENTATION_DEMO", "check_settings"]


@dataclasses.dataclass
class DemoSettings:
    """The default demo's schedule, sized for 20 minutes on a 2-core CPU.

    Attributes:
        transfer: the distilled student also reads the training images beyond
            `train_limit` without their labels, for the same number of steps as the student alone.
        teacher: a name `kdistill.teachers.get` knows; `teacher_input_size` above 32 upsamples inside the teacher.
        test_limit: use only this many test images (tests); recorded in the summary only when set.
    """

    train_limit: int | None = option(10_000, number=dict(COUNT, allow_none=True))
    transfer: bool = option(True)
    teacher: str = option("resnet20")
    teacher_epochs: int = option(8, number=COUNT)
    teacher_input_size: int = option(32, number=COUNT)
    student_epochs: int = option(15, number=COUNT)
    student: str = option("mobilenet_v2")
    student_width: float = option(0.35, number={"positive": True})
    alpha: float = option(0.9, number=dict(NON_NEGATIVE, maximum=1.0))
    temperature: float = option(4.0, number={"positive": True})
    feature_loss: str = option("normalized_mse")
    tap_weight: float = option(10.0, number=NON_NEGATIVE)
    batch_size: int = option(64, number=COUNT)
    export: bool = option(True)
    latency_plot: bool = option(True)
    latency_images: int = option(500, number=COUNT)
    qat_epochs: int = option(1, number=dict(COUNT, allow_zero=True))
    qat_learning_rate: float = option(1e-4, number={"positive": True})
    test_limit: int | None = option(None, number=dict(COUNT, allow_none=True))

    def replaced(self, overrides: dict) -> "DemoSettings":
        """These settings with `overrides` (checked by `check_settings`) in place."""
        return dataclasses.replace(self, **check_settings(overrides))

    def to_dict(self) -> dict:
        """The settings as the summary records them (`test_limit` only when set)."""
        values = dataclasses.asdict(self)
        if values["test_limit"] is None:
            del values["test_limit"]
        return values


#: the default demo
DEMO_QUICK = DemoSettings()
#: `kdistill demo --full`: all 54,000 training images labelled, longer schedules.
DEMO_FULL = dataclasses.replace(DEMO_QUICK, train_limit=None, transfer=False, teacher_epochs=10, student_epochs=15)


@dataclasses.dataclass
class SegmentationDemoSettings:
    """`kdistill demo --task segmentation`'s schedule: 32x32 scenes, a conv_segmenter teacher, a MobileNetV2-0.35 segmenter student.

    Attributes:
        transfer_scenes: unlabelled scenes (masks all ignored) the distilled student also reads, for as many
            steps as `student_epochs` over the labelled scenes (`kdistill.run.segmentation.train_student`).
        learning_rate: the peak rate of every model's Adam (one epoch of warm-up, then cosine decay).
    """

    image_size: int = option(32, number=COUNT)
    train_scenes: int = option(2000, number=COUNT)
    test_scenes: int = option(500, number=COUNT)
    transfer_scenes: int = option(6000, number=dict(COUNT, allow_zero=True))
    teacher_epochs: int = option(20, number=COUNT)
    student_epochs: int = option(16, number=COUNT)
    batch_size: int = option(32, number=COUNT)
    learning_rate: float = option(2e-3, number={"positive": True})

    def replaced(self, overrides: dict) -> "SegmentationDemoSettings":
        """These settings with `overrides` (checked by `check_settings`) in place."""
        return dataclasses.replace(self, **check_settings(overrides, SegmentationDemoSettings))

    def to_dict(self) -> dict:
        """The settings as the summary records them."""
        return dataclasses.asdict(self)


#: the segmentation demo
SEGMENTATION_DEMO = SegmentationDemoSettings()


def check_settings(overrides: dict, settings: type = DemoSettings) -> dict:
    """Checks a demo's schedule overrides by the declarations of `settings` (names, types, numbers' signs) before any work; returns them.

    Example:
        >>> check_settings({"student_epochs": 2})
        {'student_epochs': 2}
        >>> check_settings({"student_epochs": "abc"})
        Traceback (most recent call last):
        kdistill.errors.UserError: student_epochs must be a positive whole number, received the str 'abc'.
    """
    hints, rules = typing.get_type_hints(settings), number_rules(settings)
    unknown = sorted(set(overrides) - set(hints))
    if unknown:
        raise UserError(f"Unknown demo setting(s) {shown(unknown)}; known: {', '.join(sorted(hints))}.")
    for key, value in overrides.items():
        if key in rules:
            check_number(key, value, **rules[key])
        elif not isinstance(value, hints[key]):
            raise UserError(
                f"{key} must be a {hints[key].__name__}, received the {type(value).__name__} {shown(value)}."
            )
    if "teacher" in overrides:
        _check_teacher(overrides["teacher"])
    return overrides


def _check_teacher(name: str) -> None:
    from kdistill.errors import did_you_mean
    from kdistill.models import teachers

    if name not in teachers.available():
        raise UserError(
            f"Unknown demo teacher {name!r}.{did_you_mean(name, teachers.available(), count=2)} Known: {', '.join(teachers.available())}."
        )
