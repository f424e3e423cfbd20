"""kdistill's error types, its one number check and its one "did you mean" hint: a leaf module (it imports nothing from kdistill).

`UserError` is a mistake in what the user asked for (a config, a flag, a file):
the `kdistill` command prints its message as one line and exits with status 2.
It is a `ValueError`, so `except ValueError` keeps catching it. `Interrupted`
is Ctrl-C during training, carrying the epoch it reached. `check_number` is the
one check of a number's type, sign and finiteness, used wherever numbers are
parsed (configs, flags, the demo's settings, the Python API). `did_you_mean`
is the hint every "unknown name" error ends with. `shown` is how every error
echoes a received value: its repr, cut to a readable length (a 300-byte YAML
alias bomb expands to a value of 88 MB). `interrupted_line` and `library_error_line`
are the `kdistill` command's one-line endings for Ctrl-C and for the errors of the
libraries below it that are the user's situation, not a bug (a damaged archive, a full disk).

Example:
    >>> check_number("epochs", 3, integer=True, positive=True)
    3
    >>> check_number("learning_rate", -1.0, positive=True)
    Traceback (most recent call last):
    kdistill.errors.UserError: learning_rate must be a positive number, received -1.0.
    >>> did_you_mean("epoch", ["epochs", "alpha"])
    " Did you mean 'epochs'?"
    >>> shown(["flip"] * 1000, limit=30)
    "['flip', 'flip', 'flip', 'flip… (8,000 characters in all)"
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
import zipfile
from typing import Any, Iterable

__all__ = [
    "UserError",
    "ChanceLevelError",
    "Interrupted",
    "check_number",
    "did_you_mean",
    "number_from_yaml",
    "parses_as_number",
    "shorten",
    "shown",
    "SHOWN_CHARACTERS",
    "interrupted_line",
    "library_error_line",
]

#: the most characters of a received value (or of a message passed on) that an error shows
SHOWN_CHARACTERS = 200

# YAML 1.1 (PyYAML) reads `1e-3` as a string: a float needs a dot there (`1.0e-3`)
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class UserError(ValueError):
    """A mistake in what the user asked for; the message says what was received and what to do."""


class ChanceLevelError(UserError):
    """A trained model is no better than guessing on the validation images."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C.

    Args:
        epoch: the epoch in progress, counting from 1 (None: before training began).
        epochs: the epochs the run was asked for (None: unknown).
        resumable: whether running the same command again resumes from the last finished epoch.
    """

    def __init__(self, epoch: int | None, epochs: int | None = None, resumable: bool = False):
        self.epoch, self.epochs, self.resumable = epoch, epochs, resumable
        super().__init__(self.where())

    def where(self) -> str:
        """`'interrupted at epoch 2 of 5'`, or `'interrupted before training began'`."""
        if self.epoch is None:
            return "interrupted before training began"
        return f"interrupted at epoch {self.epoch}" + (f" of {self.epochs}" if self.epochs else "")


def _kind(integer: bool, positive: bool, allow_zero: bool, maximum: float | None) -> str:
    """`'a whole number of at least 1'`, `'a number in [0, 1]'`, ... for the messages."""
    noun = "whole number" if integer else "number"
    if maximum is not None:
        low = ("[0" if allow_zero else "(0") if positive else "(-inf"
        return f"a {noun} in {low}, {maximum:g}]"
    if positive:
        return f"a {'non-negative' if allow_zero else 'positive'} {noun}"
    return f"a finite {noun}"


def check_number(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    positive: bool = False,
    allow_zero: bool = False,
    maximum: float | None = None,
    allow_none: bool = False,
    meaning: str = "",
) -> Any:
    """Returns `value` if it is a finite number of the right kind and sign; raises `UserError` naming `name` otherwise.

    Args:
        name: how the user wrote it (`learning_rate`, `--epochs`), for the message.
        value: the value to check. Booleans, strings, NaN and infinities are refused.
        integer: require a whole number (an `int`, not `2.0`).
        positive: require `value > 0` (`value >= 0` with `allow_zero`).
        allow_zero: with `positive`, accept 0.
        maximum: an upper bound, inclusive.
        allow_none: accept None (an unset option).
        meaning: what the number counts, added to the message (`"images, or empty for all"`).

    Returns:
        `value` unchanged (None where allowed).

    Raises:
        UserError: saying what was received and what is allowed.

    Example:
        >>> check_number("weight_decay", 0, positive=True, allow_zero=True)
        0
        >>> check_number("epochs", "abc", integer=True, positive=True)
        Traceback (most recent call last):
        kdistill.errors.UserError: epochs must be a positive whole number, received the str 'abc'.
    """
    if value is None and allow_none:
        return None
    kind = _kind(integer, positive, allow_zero, maximum) + (f" ({meaning})" if meaning else "")
    wanted = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, wanted):
        hint = ""
        if isinstance(value, str) and parses_as_number(value):
            hint = " (write it without quotes)"
        elif integer and isinstance(value, numbers.Real) and not isinstance(value, bool):
            hint = f" (write {int(value)} if that is meant)" if float(value).is_integer() else ""
        raise UserError(f"{name} must be {kind}, received the {type(value).__name__} {shown(value)}{hint}.")
    if not math.isfinite(float(value)):
        raise UserError(f"{name} must be {kind}, received {value!r}.")
    too_low = positive and (value < 0 if allow_zero else (value < 1 if integer else value <= 0))
    if too_low or (maximum is not None and value > maximum):
        raise UserError(f"{name} must be {kind}, received {value!r}.")
    return value


def number_from_yaml(value: Any) -> Any:
    """`value`, with a number in exponent notation that YAML 1.1 left as a string (`1e-3`) made a float.

    Example:
        >>> import yaml
        >>> number_from_yaml(yaml.safe_load("1e-3")), number_from_yaml("resnet8x4")
        (0.001, 'resnet8x4')
    """
    return float(value) if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()) else value


def parses_as_number(text: str) -> bool:
    """True when `text` reads as a number (`"4"`, `"1e-3"`): a number written with quotes."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def did_you_mean(name: str, known: Iterable[str], count: int = 3) -> str:
    """`" Did you mean 'a', 'b'?"` with up to `count` names of `known` close to `name`, or `""` when none is close.

    Example:
        >>> did_you_mean("resnet8x3", ["resnet8x4", "resnet32x4", "mobilenet_v2"], count=2)
        " Did you mean 'resnet8x4', 'resnet32x4'?"
        >>> did_you_mean("vgg", ["resnet8x4"])
        ''
    """
    close = difflib.get_close_matches(name, list(known), n=count)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def shorten(text: str, limit: int = SHOWN_CHARACTERS) -> str:
    """`text` on one line, cut to `limit` characters with the full length said (`"abc… (5,000 characters in all)"`).

    Example:
        >>> shorten("a\\nb"), shorten("x" * 50, limit=10)
        ('a b', 'xxxxxxxxxx… (50 characters in all)')
    """
    text = " ".join(str(text).split("\n"))
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters in all)"


def shown(value: Any, limit: int = SHOWN_CHARACTERS) -> str:
    """The repr of a received value as an error message shows it: cut to `limit` characters (see `shorten`).

    Example:
        >>> shown("resnet8x4")
        "'resnet8x4'"
    """
    return shorten(repr(value), limit)


def interrupted_line(command: str, interrupt: KeyboardInterrupt) -> str:
    """What Ctrl-C stopped, and what running the same command again does."""
    # distill keeps a per-epoch backup in the run folder (but not under multi_worker)
    if isinstance(interrupt, Interrupted):
        then = (
            "run the same command to resume"
            if interrupt.resumable
            else "nothing was saved: run the same command to start again"
        )
        return f"{interrupt.where()}; {then}"
    if command == "distill":  # a backup left by an earlier interruption is still resumed
        return "interrupted before training began; run the same command to start (or resume) it"
    return "interrupted; run the same command to start again"


def library_error_line(error: Exception) -> str | None:
    """One line for a library's error that is the user's situation, not a bug (None for any other): a damaged zip archive
    (a .keras or .npz file cut short), TensorFlow's errors (a full disk is its ResourceExhaustedError, which is not an OSError)."""
    if isinstance(error, zipfile.BadZipFile):
        return f"a file is damaged: {error} (a .keras or .npz file cut short, e.g. by a kill or a full disk). Rerun with --verbose to see which."
    if type(error).__module__.startswith("tensorflow") and hasattr(error, "message"):
        lines = str(error.message).strip().splitlines() or [""]
        space = (
            " (out of disk space or memory: free some, or choose another output folder)"
            if type(error).__name__ == "ResourceExhaustedError"
            else ""
        )
        return f"TensorFlow: {type(error).__name__}{space}: {lines[0]}"
    return None
