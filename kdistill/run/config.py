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
    ValueError: Unknown config key 'epoch'. Did you mean 'epochs'? ...
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from typing import Any

__all__ = ["DistillConfig"]


@dataclasses.dataclass
class DistillConfig:
    """Everything one `kdistill distill` run needs.

    Attributes:
        data: `fashion_mnist`, `tfds:<name>` or an image-folder path.
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
        temperature, alpha, tap_weights, logits_weight, alignment: see `FeatureDistiller`.
        adapter: "projection" (default) or "review" (ReviewKD's attention-based
            fusion of the student's taps; pair it with `feature_loss: hcl`).
        review: the same as `adapter: review` (configs written for 0.1).
        review_channels: channels of the fused maps under `adapter: review`.
        fold_batch_norm: run the teacher with BatchNormalization folded into its
            convolutions (faster, same outputs to float rounding; see `FeatureDistiller`).
        transfer_data: unlabelled training images on which only the distillation
            terms apply: "rest" (the training images beyond `train_limit`) or a
            `.npy` file of images (see `kdistill.data.from_arrays`).
        epochs, batch_size, learning_rate, optimizer: training schedule.
        weight_decay: optimizer weight decay (e.g. 5e-4 for SGD on CIFAR).
        lr_decay_epochs: multiply the learning rate by 0.1 at each of these epochs.
        seed: random seed for data order and initialisation.
        output_dir: run folder (default `saved_models/<run_name>`).
        run_name: name of the run.
        strategy: `kdistill.run.distribute.STRATEGIES`: default, one_device, mirrored, multi_worker, auto.
        precision: float32, mixed_float16 or mixed_bfloat16.
        teacher_cache: folder of a teacher cache: built on first use, then the
            teacher's outputs are read from it instead of computed.
        cache_views: with `augment` (crop, flip) and `teacher_cache`: views stored
            per image; training replays one per image per epoch (Fast Knowledge Distillation).
        tensorboard: a folder for Keras' TensorBoard callback (every loss term is logged), or None.
        skip_unreadable: image folders: leave out files that cannot be decoded instead of stopping.
        check_teacher: measure the teacher on validation images before training
            and stop when it is no better than chance (`--no-check-teacher` to go on).
        quantize: "int8" distils into the student's quantization-aware twin
            (`kdistill.quantize.quantize_model`): start it from a trained float
            student with `student_weights`, fine-tune a few epochs at a low
            learning rate, and export it as int8 with its trained ranges.
    """

    data: str = "fashion_mnist"
    data_dir: str | None = None
    image_size: int = 32
    student_image_size: int | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    augment: list = dataclasses.field(default_factory=list)
    teacher: str | list | None = None
    teacher_weights: list | None = None
    student: str = "mobilenet_v2"
    student_width: float | None = None
    student_weights: str | None = None
    taps: Any = "preset"
    feature_loss: typing.Optional[Any] = "mse"
    logits_loss: typing.Optional[Any] = "kl"
    temperature: float = 4.0
    alpha: float = 0.5
    tap_weights: Any = 1.0
    logits_weight: float = 1.0
    alignment: str = "auto"
    adapter: str = "projection"
    review: bool = False
    review_channels: int = 64
    fold_batch_norm: bool = True
    transfer_data: str | None = None
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float | None = None
    lr_decay_epochs: list = dataclasses.field(default_factory=list)
    seed: int = 0
    output_dir: str | None = None
    run_name: str = "distill"
    strategy: str = "default"
    precision: str = "float32"
    teacher_cache: str | None = None
    cache_views: int = 0
    check_teacher: bool = True
    tensorboard: str | None = None
    skip_unreadable: bool = False
    quantize: str | None = None

    @classmethod
    def from_dict(cls, values: dict, check_files: bool = True) -> "DistillConfig":
        """Validates `values` and builds the config.

        Raises:
            ValueError: for an unknown key (with the closest names), a value of
                the wrong type, or an out-of-range value.
            FileNotFoundError: when `teacher` names a file that does not exist.
        """
        if not isinstance(values, dict):
            raise ValueError(f"A config must be a mapping of keys to values, received {type(values).__name__}.")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        clean = {}
        for key, value in values.items():
            key = str(key).replace("-", "_")
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=2)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise ValueError(f"Unknown config key {key!r}.{hint} Known keys: {', '.join(fields)}.")
            clean[key] = _check_type(key, value, hints[key])
        config = cls(**clean)
        config._check_values(check_files)
        return config

    def distiller_options(self) -> dict:
        """The `FeatureDistiller` keyword arguments this config sets (all but the teacher, student and taps).

        The one place where config keys become distiller options, so that the
        two cannot drift apart.
        """
        return {"feature_loss": self.feature_loss, "logits_loss": self.logits_loss, "temperature": self.temperature, "alpha": self.alpha,
                "tap_weights": self.tap_weights, "logits_weight": self.logits_weight, "alignment": self.alignment,
                "adapter": "review" if self.review else self.adapter, "review_channels": self.review_channels,
                "fold_batch_norm": self.fold_batch_norm}

    def _check_values(self, check_files: bool) -> None:
        # alpha and temperature are checked by the distiller's own checks, so config and Python report the same errors.
        from kdistill.losses.labels import check_alpha
        from kdistill.losses import check_temperature

        check_alpha(self.alpha)
        check_temperature(self.temperature)
        from kdistill.adapters import ADAPTERS

        if self.adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {', '.join(ADAPTERS)}, received {self.adapter!r}.")
        if self.quantize not in (None, "int8"):
            raise ValueError(f"quantize must be 'int8' (quantization-aware int8 fine-tuning) or unset, received {self.quantize!r}.")
        if self.transfer_data is not None and self.transfer_data != "rest" and not self.transfer_data.endswith(".npy"):
            raise ValueError(f"transfer_data must be 'rest' or a .npy file of images, received {self.transfer_data!r}.")
        if check_files and self.transfer_data and self.transfer_data.endswith(".npy") and not os.path.exists(self.transfer_data):
            raise FileNotFoundError(f"Transfer images {self.transfer_data!r} do not exist.")
        for key in ("train_limit", "test_limit"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be a positive number of images (or empty for all), received {getattr(self, key)}.")
        if self.cache_views < 0:
            raise ValueError(f"cache_views must be 0 (no views) or a positive number of views per image, received {self.cache_views}.")
        if self.cache_views and not self.teacher_cache:
            raise ValueError("cache_views stores views in a teacher cache: set teacher_cache (--teacher-cache DIR) too.")
        for key in ("epochs", "batch_size", "image_size", "student_image_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, received {getattr(self, key)}.")
        from kdistill.run.distribute import STRATEGIES
        from kdistill.run.precision import POLICIES

        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, received {self.strategy!r}.")
        if self.precision not in POLICIES:
            raise ValueError(f"precision must be one of {', '.join(POLICIES)}, received {self.precision!r}.")
        if not (isinstance(self.taps, dict) or self.taps in ("preset", "none")):
            raise ValueError(f"taps must be 'preset', 'none' or a mapping teacher_layer: student_layer, received {self.taps!r}.")
        paths = [self.teacher] if isinstance(self.teacher, str) else list(self.teacher or [])
        for path in paths if check_files else []:
            if not isinstance(path, str) or not os.path.exists(path):
                raise FileNotFoundError(
                    f"Teacher file {path!r} does not exist. Train one with `kdistill train-teacher --output {path}` "
                    "or point `teacher` at a saved .keras model (or a list of them)."
                )

    def resolved_output_dir(self) -> str:
        return self.output_dir or os.path.join("saved_models", self.run_name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    allowed = typing.get_args(hint) or (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ValueError(f"Config key {key!r} may not be empty (null).")
    if Any in allowed:
        return value
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    for kind in allowed:
        origin = typing.get_origin(kind) or kind
        if kind is type(None):
            continue
        if isinstance(value, origin) and not (isinstance(value, bool) and origin in (int, float)):
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed if k is not type(None))
    raise ValueError(f"Config key {key!r} must be {names}, received {type(value).__name__} {value!r}.")
