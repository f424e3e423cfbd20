"""The command line's checks of its flags, before any work: numbers and output paths of every command.

`fill_from_config` gives the commands other than `distill` their data flags left
out from `--config` (the file `distill` reads) before they are checked.

`distill`'s flags become `DistillConfig` keys and are checked there, like a
config file's. Other commands' numbers are checked here: a flag named like a
config field (`--epochs`, `--image-size`) by the field's rule
(`kdistill.run.options.option(number=...)`), the others by `_NUMBER_FLAGS`.

Example:
    >>> import argparse
    >>> check(argparse.Namespace(command="evaluate", batch_size=0))
    Traceback (most recent call last):
    kdistill.errors.UserError: --batch-size must be a positive whole number, received 0.
"""

from __future__ import annotations

import argparse
import typing

from kdistill.errors import check_number
from kdistill.run import options
from kdistill.run.config import DistillConfig, check_outside_data, read_config_file

__all__ = ["check", "check_numbers", "check_outputs", "fill_from_config"]


def check(args: argparse.Namespace) -> None:
    """Refuses a bad number or an unwritable output among `args` (a `kdistill` command's parsed flags)."""
    check_numbers(args)
    check_outputs(args)


#: (command, argument, "folder" | "file"): outputs checked before any work
_OUTPUTS = (("demo", "output_dir", "folder"), ("train-teacher", "output", "file"), ("evaluate", "json_path", "file"),
            ("cache-teacher", "output", "folder"), ("export", "output_dir", "folder"), ("distill", "output_dir", "folder"),
            ("distill", "tensorboard", "folder"))


def check_outputs(args) -> None:
    """Refuses an output path that cannot be written (under a file, no permission) or lies in the image folder read, before any work."""
    from kdistill import files

    for command, name, kind in _OUTPUTS:
        path = getattr(args, name, None) if args.command == command else None
        if path:
            files.check_output_path(path, kind)
            if kind == "folder":  # a file beside the class folders is not read as a class
                check_outside_data(path, getattr(args, "data", None), "--" + name.replace("_", "-"))


_COUNT, _NON_NEGATIVE = {"integer": True, "positive": True}, {"positive": True, "allow_zero": True}
#: how the numbers of the flags that are no config field are checked (kdistill.errors.check_number); an unset (None) flag is not checked
_NUMBER_FLAGS = {
    "warmup_epochs": _NON_NEGATIVE, "resize_to": _COUNT, "views": dict(_COUNT, allow_zero=True), "top_k": dict(_COUNT, allow_none=True), "cka_images": _COUNT,
    "version": dict(_COUNT, allow_zero=True), "report_limit": _COUNT, "calibration_images": _COUNT,
}


def check_numbers(args) -> None:
    """Type, sign and finiteness of every numeric flag (argparse accepts `--learning-rate -1` and `nan`), before any work.

    A flag named like a config field (`--epochs`, `--image-size`) is checked by the field's rule.
    """
    if args.command == "distill":
        return  # its flags become DistillConfig keys, checked there like the config file's
    rules = {name: {key: value for key, value in rule.items() if key != "meaning"} for name, rule in options.number_rules(DistillConfig).items()}
    for name, rule in {**rules, **_NUMBER_FLAGS}.items():
        if getattr(args, name, None) is not None:
            check_number("--" + name.replace("_", "-"), getattr(args, name), **rule)


def fill_from_config(args, names: typing.Sequence[str]) -> None:
    """Sets each of `names` on `args` (parsed flags) that was left out (None) from `args.config`'s file, else the field's default.

    How every command that reads data takes `--config`: the same file `kdistill
    distill` reads, its keys checked as there (a typo is refused), only the data
    keys (and `names`) read. A flag given wins over the file.

    Example:
        >>> import argparse
        >>> args = argparse.Namespace(config=None, image_size=None, batch_size=16)
        >>> fill_from_config(args, ["image_size", "batch_size"])
        >>> args.image_size, args.batch_size
        (32, 16)
    """
    file_values = read_config_file(args.config) if getattr(args, "config", None) else {}
    flags = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    config = DistillConfig.from_dict(dict(file_values, **flags), check_files=False)
    for name in names:
        setattr(args, name, getattr(config, name))
