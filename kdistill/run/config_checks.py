"""`DistillConfig`'s checks: each value's type, range and name, the files it names, and outputs kept out of the data.

`DistillConfig` runs them when it is built (`check_values`; `from_dict` also checks each key's type and the files), so
a config file, the flags and a config built in Python are refused with the same messages before anything trains.

Example:
    >>> check_type("epochs", "3", int)
    Traceback (most recent call last):
    kdistill.errors.UserError: Config key 'epochs' must be int, received str '3'.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

from kdistill.errors import UserError, check_number, number_from_yaml, shown
from kdistill.run.options import number_rules

__all__ = ["check_values", "check_files", "check_type", "check_outside_data"]


def check_values(config) -> None:
    """Refuses a `DistillConfig` whose values do not fit: numbers, names, combinations, outputs inside the data."""
    _check_numbers(config)
    from kdistill import adapters

    if config.adapter not in adapters.available():
        raise UserError(f"adapter must be one of {', '.join(adapters.available())}, received {config.adapter!r}.")
    if config.quantize not in (None, "int8"):
        raise UserError(
            f"quantize must be 'int8' (quantization-aware int8 fine-tuning) or unset, received {config.quantize!r}."
        )
    if (
        config.transfer_data is not None
        and config.transfer_data != "rest"
        and not config.transfer_data.endswith(".npy")
    ):
        raise UserError(f"transfer_data must be 'rest' or a .npy file of images, received {config.transfer_data!r}.")
    if config.cache_top_k and not config.teacher_cache:
        raise UserError(
            "cache_top_k stores compact logits in a teacher cache: set teacher_cache (--teacher-cache DIR) too."
        )
    if config.warmup_epochs and config.schedule != "cosine":
        raise UserError(
            "warmup_epochs warms up the cosine schedule: set schedule: cosine (--schedule cosine) too, or leave warmup_epochs out."
        )
    if config.cache_views and not config.teacher_cache:
        raise UserError("cache_views stores views in a teacher cache: set teacher_cache (--teacher-cache DIR) too.")
    from kdistill.run.distribute import STRATEGIES
    from kdistill.run.precision import POLICIES

    if config.strategy not in STRATEGIES:
        raise UserError(f"strategy must be one of {', '.join(STRATEGIES)}, received {config.strategy!r}.")
    if config.precision not in POLICIES:
        raise UserError(f"precision must be one of {', '.join(POLICIES)}, received {config.precision!r}.")
    default_feature_loss = next(field.default for field in dataclasses.fields(config) if field.name == "feature_loss")
    if config.taps == "none" and config.feature_loss not in (None, default_feature_loss):
        raise UserError(
            f"feature_loss {shown(config.feature_loss)} compares teacher and student features at the taps, but taps is 'none'. "
            "Give taps (--taps preset, or teacher_layer:student_layer pairs), or leave feature_loss out."
        )
    if not (isinstance(config.taps, dict) or config.taps in ("preset", "none")):
        raise UserError(
            f"taps must be 'preset', 'none' or a mapping teacher_layer: student_layer, received {shown(config.taps)}."
        )
    for key in ("feature_loss", "logits_loss"):  # a number here used to fail deep in the distiller with a TypeError
        if getattr(config, key) is not None and not isinstance(getattr(config, key), (str, list, tuple, dict)):
            raise UserError(
                f"{key} must be a loss name, a list of [name, weight] pairs, a mapping with 'name', or empty, "
                f"received the {type(getattr(config, key)).__name__} {shown(getattr(config, key))}."
            )
    _check_names(config)
    for key in ("output_dir", "tensorboard", "teacher_cache"):
        check_outside_data(
            config.resolved_output_dir() if key == "output_dir" else getattr(config, key), config.data, key
        )


def _check_names(config) -> None:
    """The augmentations (names, before a 300-byte YAML alias bomb reaches the data) and the run name (a name, not a path)."""
    from kdistill.data.batches import AUGMENTATIONS

    unknown = [name for name in config.augment if not isinstance(name, str) or name not in AUGMENTATIONS]
    if unknown:
        raise UserError(f"augment takes names from {', '.join(AUGMENTATIONS)}; received {shown(unknown)}.")
    name = str(config.run_name)
    if not name or os.path.isabs(name) or ".." in name.replace("\\", "/").split("/") or name != os.path.normpath(name):
        raise UserError(
            f"run_name {shown(config.run_name)} must be a plain folder name under saved_models/ (no '..', no absolute path, "
            "no trailing '/'); to write elsewhere set output_dir (--output-dir) instead."
        )


def _check_numbers(config) -> None:
    """Type, sign and finiteness of every number (`kdistill.errors.check_number`), before anything loads or trains."""
    # alpha and temperature also pass the distiller's own checks, so config and Python report the same errors.
    from kdistill.losses.labels import check_alpha
    from kdistill.losses import check_temperature

    check_alpha(config.alpha)
    check_temperature(config.temperature)
    for key, rule in number_rules(type(config)).items():
        check_number(key, getattr(config, key), **rule)
    for key in ("teacher_weights", "lr_decay_epochs"):
        for value in getattr(config, key) or []:
            check_number(
                f"each of {key}",
                value,
                integer=key == "lr_decay_epochs",
                positive=True,
                allow_zero=key == "teacher_weights",
            )
    weights = (
        config.tap_weights.values()
        if isinstance(config.tap_weights, dict)
        else (config.tap_weights if isinstance(config.tap_weights, (list, tuple)) else [config.tap_weights])
    )
    for value in weights:
        check_number("tap_weights", value, positive=True, allow_zero=True)


def check_files(config) -> None:
    """Refuses a `DistillConfig` naming a teacher or transfer-image file that does not exist."""
    if config.transfer_data and config.transfer_data.endswith(".npy") and not os.path.exists(config.transfer_data):
        raise FileNotFoundError(f"Transfer images {config.transfer_data!r} do not exist.")
    paths = [config.teacher] if isinstance(config.teacher, str) else list(config.teacher or [])
    for path in paths:
        if isinstance(path, str) and path.startswith("keras_hub:"):
            continue  # a KerasHub preset, found (or refused offline) when the teacher is built
        if not isinstance(path, str) or not os.path.exists(path):
            raise FileNotFoundError(
                f"Teacher file {path!r} does not exist. Train one with `kdistill train-teacher --output {path}` "
                "or point `teacher` at a saved .keras model (or a list of them)."
            )


def check_type(key: str, value: Any, hint: Any) -> Any:
    allowed = typing.get_args(hint) or (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise UserError(f"Config key {key!r} may not be empty (null).")
    if Any in allowed:
        return value
    if float in allowed:
        value = number_from_yaml(value)  # `learning_rate: 1e-3` is a string to YAML 1.1
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    for kind in allowed:
        origin = typing.get_origin(kind) or kind
        if kind is type(None):
            continue
        if isinstance(value, origin) and not (isinstance(value, bool) and origin in (int, float)):
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed if k is not type(None))
    raise UserError(f"Config key {key!r} must be {names}, received {type(value).__name__} {shown(value)}.")


def check_outside_data(path: str | None, data: str, what: str) -> None:
    """Refuses an output `path` inside the image folder `data`: the next run would read it as one more class.

    Example:
        >>> check_outside_data("saved_models/run", "fashion_mnist", "output_dir")
        >>> check_outside_data("flowers/run1", "flowers", "output_dir")
        Traceback (most recent call last):
        kdistill.errors.UserError: output_dir 'flowers/run1' is inside the image folder 'flowers' ...
    """
    if not path or not data or data == "fashion_mnist" or data.startswith("tfds:"):
        return
    folder, target = os.path.realpath(data), os.path.realpath(path)
    if os.path.commonpath([folder, target]) == folder:
        raise UserError(
            f"{what} {path!r} is inside the image folder {data!r} that this run reads: its subfolders are the classes, "
            "so the next run would read the run's files as one more class. Choose a folder outside it."
        )
