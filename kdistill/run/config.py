"""Run configurations: one dataclass, validated with messages that name the fix.

A config file (YAML or JSON, read by the CLI) or a dict from a notebook becomes
a `DistillConfig`; unknown keys, wrong types and missing teacher files are
reported before anything trains.

Example:
    >>> config = DistillConfig.from_dict({"student": "resnet8x4", "epochs": 2, "alpha": 0.9})
    >>> config.student, config.epochs, config.taps
    ('resnet8x4', 2, 'preset')
    >>> DistillConfig.from_dict({"epoch": 2})
    Traceback (most recent call last):
    kdistill.errors.UserError: Unknown config key 'epoch'. Did you mean 'epochs'? ...
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

from kdistill.errors import UserError, did_you_mean, shown

from kdistill.run import config_checks

from kdistill.run.options import (
    COUNT,
    NON_NEGATIVE,
    names_flag,
    numbers_flag,
    one_or_list_flag,
    option,
    taps_flag,
)

__all__ = ["DistillConfig", "DATA_FLAGS"]

#: the `DistillConfig` fields that every command reading data takes as flags (and from `--config`), in this order
DATA_FLAGS = (
    "data",
    "task",
    "data_dir",
    "skip_unreadable",
    "image_size",
    "train_limit",
    "test_limit",
    "batch_size",
    "seed",
)


@dataclasses.dataclass
class DistillConfig:
    """Everything one `kdistill distill` run needs.

    Each field is declared once, with `kdistill.run.options.option`: its
    `kdistill distill` flag and help text, its number check, and whether it is a
    `FeatureDistiller` option (`distiller_options()`).

    Attributes:
        data: `fashion_mnist`, `tfds:<name>` or an image-folder path; for segmentation `scenes` or `masks:FOLDER` (`kdistill.run.segmentation`).
        task: "classification" or "segmentation"; None infers it from the data (masks: segmentation).
        data_dir: where the data lives (offline files, a prepared TFDS folder, a test folder).
        image_size: square input size of the data (and of the teacher).
        student_image_size: the student's own square input size when it differs
            (e.g. 128 under a 224 teacher): the distiller resizes each batch for
            the student, and the saved student takes this size. None: image_size.
        train_limit: use only this many training images (None: all).
        test_limit: use only this many test images (None: all).
        augment: names from `kdistill.data.AUGMENTATIONS`.
        teacher: path of a saved teacher (`kdistill train-teacher` writes one), or a
            list of paths: several teachers distilled as one ensemble, each named
            after its file (`teacher_b.keras` -> taps `teacher_b/<layer>`).
        teacher_weights: one weight per teacher of a list (default: equal).
        student: a registered student name.
        student_width: width multiplier for MobileNet students.
        student_weights: None (random), "imagenet" (MobileNets) or a path (see `kdistill.students.get`).
        taps: `"preset"`, `"none"`, or `{teacher_layer: student_layer}`.
        feature_loss / logits_loss: loss names (see `kdistill.losses.available()`),
            weighted lists such as `[[at, 1000], [sp, 3000]]`, `{name: dkd, beta: 2}`, or None.
        temperature, alpha, tap_weights, logits_weight, alignment, ignore_label: see `FeatureDistiller`.
        adapter: "projection" (default) or "review" (ReviewKD's attention-based
            fusion of the student's taps; pair it with `feature_loss: hcl`).
        review_channels: channels of the fused maps under `adapter: review`.
        fold_batch_norm: run the teacher with BatchNormalization folded into its
            convolutions (faster, same outputs to float rounding; see `FeatureDistiller`).
        transfer_data: unlabelled training images on which only the distillation
            terms apply: "rest" (the training images beyond `train_limit`) or a
            `.npy` file of images (see `kdistill.data.from_arrays`).
        epochs, batch_size, learning_rate, optimizer: training schedule.
        weight_decay: optimizer weight decay (e.g. 5e-4 for SGD on CIFAR).
        lr_decay_epochs: multiply the learning rate by 0.1 at each of these epochs.
        schedule: "constant" (with `lr_decay_epochs`, a step decay) or "cosine":
            linear warm-up for `warmup_epochs`, then cosine decay to zero.
        warmup_epochs: the cosine schedule's warm-up, in epochs.
        global_clipnorm: clip the gradients of every trained variable (the student,
            its projections, a loss's own weights) together to this global norm.
        seed: random seed for data order and initialisation.
        output_dir: run folder (default `saved_models/<run_name>`).
        run_name: name of the run.
        strategy: `kdistill.run.distribute.STRATEGIES`: default, one_device, mirrored, multi_worker, auto.
        precision: float32, mixed_float16 or mixed_bfloat16.
        teacher_cache: folder of a teacher cache: built on first use, then the
            teacher's outputs are read from it instead of computed.
        cache_views: with `augment` (crop, flip, mixup, cutmix) and `teacher_cache`: views
            stored per image; training replays one per image per epoch, the exact image the
            teacher saw (Fast Knowledge Distillation; consistent teaching).
        cache_top_k: store only the teacher's k largest logits per view (and one filler
            logit for the rest) in the teacher cache; None stores every logit.
        tensorboard: a folder for Keras' TensorBoard callback (every loss term is logged), or None.
        skip_unreadable: image folders: leave out files that cannot be decoded instead of stopping.
        check_teacher: measure the teacher on validation images before training
            and stop when it is no better than chance (`--no-check-teacher` to go on).
        quantize: "int8" distils into the student's quantization-aware twin
            (`kdistill.quantize.quantize_model`): start it from a trained float
            student with `student_weights`, fine-tune a few epochs at a low
            learning rate, and export it as int8 with its trained ranges.
    """

    # === Data ===
    data: str = option(
        "fashion_mnist",
        help="fashion_mnist (offline default), tfds:<name>, an image-folder path; masks: scenes, masks:FOLDER",
    )
    task: str | None = option(
        None,
        choices=["classification", "segmentation"],
        help="default: segmentation for data with masks, else classification",
    )
    data_dir: str | None = option(None, help="folder of the offline data / prepared TFDS data / test images")
    image_size: int = option(32, help="square input size (default 32)", number=COUNT)
    student_image_size: int | None = option(
        None,
        number=dict(COUNT, allow_none=True),
        help="the student's own input size (e.g. 128 under a 224 teacher; "
        "the distiller resizes each batch, the saved student takes this size)",
    )
    train_limit: int | None = option(
        None,
        help="use only this many training images",
        number=dict(COUNT, allow_none=True, meaning="images, or empty for all"),
    )
    test_limit: int | None = option(
        None,
        help="use only this many test images",
        number=dict(COUNT, allow_none=True, meaning="images, or empty for all"),
    )
    augment: list = option(
        factory=list, help="comma-separated: flip, crop, randaugment, mixup, cutmix", convert=names_flag
    )
    # === Models ===
    teacher: str | list | None = option(
        None,
        nargs="+",
        convert=one_or_list_flag,
        help="saved teacher (.keras); several files distil their ensemble (taps '<file stem>/<layer>')",
    )
    teacher_weights: list | None = option(
        None, help="weights of several teachers' soft targets, e.g. 2,1 (default: equal)", convert=numbers_flag
    )
    student: str = option("mobilenet_v2", help="registered student name")
    student_width: float | None = option(
        None, help="MobileNet width multiplier", number={"positive": True, "allow_none": True}
    )
    student_weights: str | None = option(
        None, help="start the student from imagenet (MobileNets; Keras' cache, offline-safe) or a weights/model file"
    )
    # === Distillation (fields with distiller=True are FeatureDistiller keyword arguments) ===
    taps: Any = option("preset", parse=taps_flag, help="preset | none | t_layer:s_layer,t_layer:s_layer")
    feature_loss: typing.Optional[Any] = option(
        "mse",
        distiller=True,
        none_word=True,
        help="a feature loss name (kdistill.losses.available('feature')), with its own options as "
        "name:option=value (cwd:temperature=1), or none",
    )
    logits_loss: typing.Optional[Any] = option(
        "kl",
        distiller=True,
        none_word=True,
        help="a logits loss name (kdistill.losses.available('logits')), or none (feature terms + CE only)",
    )
    temperature: float = option(4.0, distiller=True, number={"positive": True})
    alpha: float = option(0.5, distiller=True)
    tap_weights: Any = option(1.0, distiller=True, flag=False)
    logits_weight: float = option(
        1.0, distiller=True, help="weight of the logits term inside the distillation part", number=NON_NEGATIVE
    )
    alignment: str = option("auto", distiller=True, flag=False)
    adapter: str = option(
        "projection",
        distiller=True,
        choices=["projection", "review"],
        help="how student features reach the teacher's shape; review = ReviewKD's fusion (use with --feature-loss hcl)",
    )
    review_channels: int = option(64, distiller=True, flag=False, number=COUNT)
    fold_batch_norm: bool = option(True, distiller=True, flag=False)
    ignore_label: int | None = option(
        255,
        distiller=True,
        flag=False,
        number={"integer": True, "positive": True, "allow_zero": True, "allow_none": True},
    )
    transfer_data: str | None = option(
        None,
        help="unlabelled images for the distillation terms only: 'rest' (training images beyond "
        "--train-limit) or a .npy file of images",
    )
    # === Schedule ===
    epochs: int = option(5, number=COUNT)
    batch_size: int = option(64, help="batch size (default 64)", number=COUNT)
    learning_rate: float = option(1e-3, number={"positive": True})
    optimizer: str = option("adam", flag=False)
    weight_decay: float | None = option(
        None, flag=False, number={"positive": True, "allow_zero": True, "allow_none": True}
    )
    lr_decay_epochs: list = option(factory=list, flag=False)
    schedule: str = option(
        "constant",
        choices=["constant", "cosine"],
        help="learning rate: constant (or lr_decay_epochs steps), or "
        "cosine: linear warm-up for --warmup-epochs, then cosine decay to zero",
    )
    warmup_epochs: float = option(0.0, help="warm-up of the cosine schedule, in epochs", number=NON_NEGATIVE)
    global_clipnorm: float | None = option(
        None,
        help="clip the gradients of the student and its projections together to this norm",
        number={"positive": True, "allow_none": True},
    )
    seed: int = option(0, help="random seed (default 0)", number=dict(COUNT, allow_zero=True))
    # === Run ===
    output_dir: str | None = option(None, help="run folder (default saved_models/<run-name>)", output="folder")
    run_name: str = option("distill")
    strategy: str = option(
        "default",
        choices=["auto", "default", "one_device", "mirrored", "multi_worker", "data_parallel"],
        help="tf.distribute strategy (multi_worker reads TF_CONFIG); data_parallel: keras.distribution on JAX",
    )
    precision: str = option(
        "float32", choices=["float32", "mixed_float16", "mixed_bfloat16"], help="dtype policy (losses stay float32)"
    )
    teacher_cache: str | None = option(None, help="folder of the teacher's cached outputs (built on first use)")
    cache_views: int = option(
        0,
        help="with --augment (crop, flip, mixup, cutmix): views per image stored in the teacher cache and replayed",
        number=dict(COUNT, allow_zero=True, meaning="0 for none, or views per image"),
    )
    cache_top_k: int | None = option(
        None,
        help="store only the teacher's top-k logits per view in the teacher cache (compact soft labels)",
        number=dict(COUNT, allow_none=True, meaning="classes, or empty for every logit"),
    )
    check_teacher: bool = option(
        True,
        flag="--no-check-teacher",
        help="distil even from a teacher no better than chance on the validation images",
    )
    tensorboard: str | None = option(
        None, metavar="DIR", help="write TensorBoard logs (every loss term) to DIR", output="folder"
    )
    skip_unreadable: bool = option(
        False,
        help="image folders: leave out files that cannot be decoded (they are counted in the log) instead of stopping",
    )
    quantize: str | None = option(
        None,
        choices=["int8"],
        help="quantization-aware int8: distil into the student's fake-quantized twin "
        "(start from a trained float student with --student-weights)",
    )

    @classmethod
    def from_dict(cls, values: dict, check_files: bool = True) -> "DistillConfig":
        """Validates `values` and builds the config.

        Raises:
            kdistill.errors.UserError: for an unknown key (with the closest names), a value of
                the wrong type, or an out-of-range value.
            FileNotFoundError: when `teacher` names a file that does not exist.
        """
        if not isinstance(values, dict):
            raise UserError(f"A config must be a mapping of keys to values, received {type(values).__name__}.")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        clean = {}
        for key, value in values.items():
            key = str(key).replace("-", "_")
            if key not in fields:
                raise UserError(
                    f"Unknown config key {shown(key)}.{did_you_mean(key, fields, count=2)} Known keys: {', '.join(fields)}."
                )
            clean[key] = config_checks.check_type(key, value, hints[key])
        config = cls(**clean)
        if check_files:
            config_checks.check_files(config)
        return config

    def distiller_options(self) -> dict:
        """The `FeatureDistiller` keyword arguments this config sets: its fields declared with `distiller=True`.

        Derived from the field declarations, so that config keys and distiller
        options cannot drift apart (all but the teacher, student and taps).
        """
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.metadata.get("distiller")
        }

    def __post_init__(self) -> None:
        config_checks.check_values(self)  # also for DistillConfig(...) built in Python; files are checked by from_dict

    def resolved_output_dir(self) -> str:
        return self.output_dir or os.path.join("saved_models", self.run_name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
