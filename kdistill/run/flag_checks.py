"""The command line's checks of its flags, before any work: numbers and output paths of every command.

`fill_from_config` gives the commands other than `distill` their data flags left
out from `--config` (the file `distill` reads) before they are checked.

`distill`'s flags become `DistillConfig` keys and are checked there, like a
config file's. The other commands' flags are checked by their declarations
(`kdistill.run.commands`): each number by its `option(number=...)` rule, a
shared data flag by its `DistillConfig` field's, and each path declared
`output=` for being writable.

Example:
    >>> import argparse
    >>> check(argparse.Namespace(command="evaluate", model="m.keras", batch_size=0))
    Traceback (most recent call last):
    kdistill.errors.UserError: --batch-size must be a positive whole number, received 0.
"""

from __future__ import annotations

import argparse
import typing

from kdistill.errors import check_number
from kdistill.run import commands, options
from kdistill.run.config import DistillConfig
from kdistill.run.config_checks import check_outside_data
from kdistill.run.config_files import read_config_file

__all__ = ["check", "check_numbers", "check_outputs", "fill_from_config"]


def check(args: argparse.Namespace) -> None:
    """Refuses a bad number or an unwritable output among `args` (a `kdistill` command's parsed flags)."""
    check_numbers(args)
    check_outputs(args)


def _declared(args) -> type | None:
    return commands.options_of(args.command, getattr(args, "taps_command", None))


def check_outputs(args) -> None:
    """Refuses an output path that cannot be written (under a file, no permission) or lies in the image folder read, before any work."""
    from kdistill import files

    declared = _declared(args) or DistillConfig
    for name, kind in options.output_paths(declared).items():
        path = getattr(args, name, None)
        if path:
            files.check_output_path(path, kind)
            if kind == "folder":  # a file beside the class folders is not read as a class
                check_outside_data(path, getattr(args, "data", None), options.flag_of(declared, name))


def check_numbers(args) -> None:
    """Type, sign and finiteness of every numeric flag (argparse accepts `--learning-rate -1` and `nan`), before any work.

    Each is checked by its declaration: the command's `option(number=...)`, or the `DistillConfig` field of a shared data flag.
    """
    declared = _declared(args)
    if declared is None:
        return  # distill: its flags become DistillConfig keys, checked there like the config file's
    shared = {name: rule for name, rule in options.number_rules(DistillConfig).items() if name in declared.shared}
    for name, rule in {**shared, **options.number_rules(declared)}.items():
        if getattr(args, name, None) is not None:
            # `meaning` speaks of config files ("empty for all")
            rule = {key: value for key, value in rule.items() if key != "meaning"}
            check_number(options.flag_of(declared, name), getattr(args, name), **rule)


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
