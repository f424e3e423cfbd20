"""Options declared once: a dataclass field carries its command-line flag, help text, number check and role.

`option(...)` declares a field of `DistillConfig`, of a command's options
(`kdistill.run.commands`) or of the demo's schedule together with everything
the other places need; `add_flags` turns fields into `argparse` flags and
`flag_values` turns the parsed flags back into config keys. So every
command's flags, the config's number checks, the checks of the other
commands' flags and the `FeatureDistiller` options all read one declaration.
This module imports neither Keras nor TensorFlow: `kdistill --help` builds its
flags from here before a backend is chosen.

Example:
    >>> import argparse, dataclasses
    >>> @dataclasses.dataclass
    ... class Run:
    ...     epochs: int = option(5, help="training epochs", number={"integer": True, "positive": True})
    ...     taps: str = option("preset", parse=taps_flag, help="preset | none | t_layer:s_layer")
    >>> parser = argparse.ArgumentParser()
    >>> add_flags(parser, Run)
    >>> flag_values(parser.parse_args(["--epochs", "3"]), Run)
    {'epochs': 3}
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable

from kdistill.errors import UserError, number_from_yaml

__all__ = [
    "option",
    "add_flags",
    "flag_of",
    "flag_names",
    "flag_values",
    "merge_flags",
    "number_rules",
    "config_keys",
    "output_paths",
    "taps_flag",
    "numbers_flag",
    "names_flag",
    "one_or_list_flag",
    "COUNT",
    "NON_NEGATIVE",
]

#: `number=` rules shared by many options (kdistill.errors.check_number's options): a count of things, a non-negative
#: number
COUNT = {"integer": True, "positive": True}
NON_NEGATIVE = {"positive": True, "allow_zero": True}


def option(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    help: str | None = None,
    flag: str | bool = True,
    parse: Callable[[str], Any] | None = None,
    convert: Callable[[Any, str], Any] | None = None,
    number: dict | None = None,
    distiller: bool = False,
    none_word: bool = False,
    output: str | None = None,
    from_config: bool = False,
    **argparse_options: Any,
) -> Any:
    """A dataclass field with the metadata every other declaration of the option is derived from.

    Args:
        default: the field's default (`factory` for a mutable one).
        help: the flag's help text.
        flag: `True` for `--<name-with-dashes>`, a flag name (`"--no-check-teacher"`, or `"model"` for a positional argument), or False for none.
        parse: argparse's `type` (it reports a bad value itself); default: int or float from the field's type hint.
        convert: `fn(value, flag)` applied after parsing (may raise `UserError`).
        number: `kdistill.errors.check_number`'s options for this number.
        distiller: the option is a `FeatureDistiller` keyword argument of the same name.
        none_word: the string `none` (any case) means None, on the command line and in config files.
        output: `"file"` or `"folder"`: a path the command writes, refused before any work when it cannot be written.
        from_config: a flag left out takes `--config`'s key of the same name (a `DistillConfig` key, checked there).
        **argparse_options: passed to `add_argument` (`choices`, `nargs`, `metavar`).
    """
    metadata = {
        "help": help,
        "flag": flag,
        "parse": parse,
        "convert": convert,
        "number": number,
        "distiller": distiller,
        "none_word": none_word,
        "output": output,
        "from_config": from_config,
        "argparse": argparse_options,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _flag_name(field: dataclasses.Field) -> str:
    flag = field.metadata.get("flag", True)
    return flag if isinstance(flag, str) else "--" + field.name.replace("_", "-")


def flag_of(config_class: type, name: str) -> str:
    """How a user writes field `name` of `config_class` on the command line (`--json` for `json_path`, `--batch-size`)."""
    field = next((field for field in dataclasses.fields(config_class) if field.name == name), None)
    return _flag_name(field) if field else "--" + name.replace("_", "-")


def flag_names(config_class: type) -> list[str]:
    """The fields that are command-line flags (all but those declared with `flag=False`), in declaration order."""
    return [field.name for field in _flag_fields(config_class, None)]


def _flag_fields(config_class: type, names: typing.Iterable[str] | None) -> list[dataclasses.Field]:
    fields = {
        field.name: field for field in dataclasses.fields(config_class) if field.metadata.get("flag", True) is not False
    }
    return list(fields.values()) if names is None else [fields[name] for name in names]


def add_flags(
    parser: argparse.ArgumentParser,
    config_class: type,
    names: typing.Iterable[str] | None = None,
    defaults: bool = False,
) -> None:
    """Adds a flag for each of `names` (default: every field with a flag), in that order.

    With `defaults`, a flag left out gives the field's default; otherwise None, so
    that only the flags given override a config file. A bool field is a switch
    (`--no-...` turns it off); without `defaults` its value is None when left out.
    """
    hints = typing.get_type_hints(config_class)
    for field in _flag_fields(config_class, names):
        name = _flag_name(field)
        default = _default(field) if defaults else None
        options = {
            "dest": field.name if name.startswith("-") else None,
            "help": field.metadata.get("help"),
            **field.metadata.get("argparse", {}),
        }
        if hints[field.name] is bool:
            options.update(action="store_false" if name.startswith("--no-") else "store_true", default=default)
        else:
            allowed = typing.get_args(hints[field.name]) or (hints[field.name],)
            parse = field.metadata.get("parse") or next((kind for kind in (int, float) if kind in allowed), None)
            options.update(type=parse, default=default)
        parser.add_argument(
            name, **{key: value for key, value in options.items() if value is not None or key == "default"}
        )


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def flag_values(args: argparse.Namespace, config_class: type) -> dict:
    """The config keys set by the flags given, each converted (a flag left out, or converted to None, sets nothing)."""
    values = {}
    for field in _flag_fields(config_class, None):
        value = getattr(args, field.name, None)
        if value is not None:
            convert = field.metadata.get("convert")
            value = convert(value, _flag_name(field)) if convert else value
        if value is not None:
            values[field.name] = value
    return values


def merge_flags(file_values: dict, args: argparse.Namespace, config_class: type) -> dict:
    """A config file's values overridden by the flags given; `none` (any case) read as None where the field allows it."""
    values = dict(file_values, **flag_values(args, config_class))
    for field in dataclasses.fields(config_class):
        if (
            field.metadata.get("none_word")
            and isinstance(values.get(field.name), str)
            and values[field.name].lower() == "none"
        ):
            values[field.name] = None
    return values


def number_rules(config_class: type) -> dict[str, dict]:
    """`{field: check_number options}` for every number field."""
    return {
        field.name: field.metadata["number"]
        for field in dataclasses.fields(config_class)
        if field.metadata.get("number")
    }


def config_keys(config_class: type) -> tuple[str, ...]:
    """The fields declared `from_config=True`: a flag left out takes `--config`'s key of the same name."""
    return tuple(field.name for field in dataclasses.fields(config_class) if field.metadata.get("from_config"))


def output_paths(config_class: type) -> dict[str, str]:
    """`{field: "file" | "folder"}` for every path the command writes (declared with `output=`)."""
    return {
        field.name: field.metadata["output"]
        for field in dataclasses.fields(config_class)
        if field.metadata.get("output")
    }


# --- flag parsers: `parse` runs inside argparse, `convert` after it ---
def taps_flag(text: str) -> str | dict[str, str]:
    """`preset`, `none`, or `teacher_layer:student_layer` pairs separated by commas -> a mapping."""
    if text in ("preset", "none"):
        return text
    taps = {}
    for pair in text.split(","):
        if ":" not in pair:
            # ArgumentTypeError: argparse prints this message (a ValueError would print "invalid taps_flag value").
            raise argparse.ArgumentTypeError(
                f"--taps takes 'preset', 'none' or teacher_layer:student_layer pairs separated by commas "
                f"(e.g. conv4_block6_out:block_13_expand_relu), received {text!r}."
            )
        teacher_layer, student_layer = (part.strip() for part in pair.split(":", 1))
        if teacher_layer in taps:  # a mapping keeps the last pair only: the first was dropped without a word
            raise argparse.ArgumentTypeError(
                f"--taps names the teacher layer {teacher_layer!r} twice ({teacher_layer}:{taps[teacher_layer]}, {teacher_layer}:{student_layer}); "
                "each teacher layer is distilled into one student layer. Keep one pair per teacher layer, or tap another teacher layer "
                "for the other student layer."
            )
        taps[teacher_layer] = student_layer
    return taps


def numbers_flag(text: str, flag: str) -> list[float]:
    """`"2,1"` -> `[2.0, 1.0]`; a clear error for anything else."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} takes numbers separated by commas, e.g. 2,1; received {text!r}.") from None


def names_flag(text: str, flag: str) -> list[str] | None:
    """`"flip, crop"` -> `["flip", "crop"]` (empty parts left out); an empty flag sets nothing."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def one_or_list_flag(values: list, flag: str) -> Any:
    """A flag with `nargs="+"`: one value as itself, several as a list."""
    return values[0] if len(values) == 1 else values


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs as a dict, each value read as YAML (`--set qat_learning_rate=1e-4` is a number).

    Example:
        >>> parse_overrides(["qat_learning_rate=1e-4", "student=mobilenet_v2"])
        {'qat_learning_rate': 0.0001, 'student': 'mobilenet_v2'}
    """
    import yaml

    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set takes KEY=VALUE, received {pair!r}.")
        key, value = pair.split("=", 1)
        overrides[key] = number_from_yaml(yaml.safe_load(value))
    return overrides
