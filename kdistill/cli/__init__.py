"""The `kdistill` command: parses arguments and config files, then calls the public functions.

    kdistill demo                      # the main job on offline Fashion-MNIST
    kdistill train-teacher --epochs 4 --output saved_models/teacher.keras
    kdistill distill --config examples/configs/fashion_mnist_r50_mv2.yaml
    kdistill evaluate saved_models/demo/student_distilled.keras
    kdistill export saved_models/demo/student_distilled.keras --formats saved_model,int8
    kdistill cache-teacher --teacher saved_models/teacher.keras --output saved_models/teacher_cache
    kdistill taps suggest --teacher saved_models/demo/teacher.keras --student mobilenet_v2 --cka --heatmap cka.png
    kdistill --backend jax distill --config run.yaml   # any command but export on JAX or PyTorch (no TensorFlow needed)

Each command's flags are built from its declaration: `distill`'s from
`DistillConfig`'s fields, the others' from their classes in `kdistill.run.commands`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from kdistill import backend as backend_module

# Subcommands take their handlers from here when the parser is built: replacing kdistill.cli._evaluate reaches it.
from kdistill.cli.handlers import (
    _cache_teacher,
    _demo,
    _distill,
    _evaluate,
    _export,
    _progress,
    _taps_suggest,
    _train_teacher,
)
from kdistill.errors import SHOWN_CHARACTERS, UserError, interrupted_line, library_error_line, shorten
from kdistill.run import commands as command_options
from kdistill.run import flag_checks, options
from kdistill.run.config import DATA_FLAGS, DistillConfig
from kdistill.run.flag_checks import fill_from_config

__all__ = ["main", "build_parser", "BACKENDS"]

BACKENDS = ("tensorflow", "jax", "torch")


_select_backend = backend_module.select  # `--backend`: sets KERAS_BACKEND before Keras loads


def _data_arguments(parser: argparse.ArgumentParser, shared: tuple[str, ...] = DATA_FLAGS, config: bool = True) -> None:
    """The `DistillConfig` fields a command shares as flags (`--config` before the data flags); a flag left out is None until `_run` fills it."""
    options.add_flags(parser, DistillConfig, [name for name in shared if name not in DATA_FLAGS])
    if config:
        parser.add_argument(
            "--config",
            help="YAML or JSON run config (the file `kdistill distill --config` reads): its data keys; flags override them",
        )
    options.add_flags(parser, DistillConfig, [name for name in shared if name in DATA_FLAGS])


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line naming the fix (argparse prints the whole usage block first)."""

    def parse_known_args(self, args=None, namespace=None):
        self.arguments = list(sys.argv[1:] if args is None else args)  # for error()
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        flag = message.split()[1].rstrip(":").split("/")[-1] if message.endswith("expected one argument") else None
        value = (
            (self.arguments[self.arguments.index(flag) + 1 :] or [""])[0]
            if flag in getattr(self, "arguments", [])
            else ""
        )
        if value[:1] == "-" and value[1:2] in set("0123456789."):  # argparse read `--teacher-weights -1,1` as two flags
            message += f" (a value that starts with '-' is written after '=': {flag}={value})"
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the flags)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `kdistill` parser: global flags, then one subcommand per job, each with its handler (`args.func`)."""
    parser = _Parser(prog="kdistill", description="Knowledge distillation for Keras 3 / TensorFlow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend (sets KERAS_BACKEND before Keras loads; default: KERAS_BACKEND, else tensorflow). "
        "jax and torch train without TensorFlow; export needs tensorflow",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in (
        _add_demo,
        _add_train_teacher,
        _add_distill,
        _add_evaluate,
        _add_cache_teacher,
        _add_taps,
        _add_export,
    ):
        add_command(commands)
    return parser


def _add_command(commands, name: str, handler, **description) -> argparse.ArgumentParser:
    """A subcommand whose flags are its declaration's (`kdistill.run.commands`): its own, with the shared `DistillConfig` flags among them."""
    declared = command_options.options_of(*name.split())
    parser = commands.add_parser(name.split()[-1], **description)
    own = options.flag_names(declared)
    first = own[: own.index(declared.shared_after) + 1] if getattr(declared, "shared_after", None) else []
    options.add_flags(parser, declared, first, defaults=True)
    if declared.shared:
        _data_arguments(parser, declared.shared)
    options.add_flags(parser, declared, own[len(first) :], defaults=True)
    parser.set_defaults(func=handler)
    return parser


def _add_demo(commands) -> None:
    _add_command(
        commands,
        "demo",
        _demo,
        help="teacher vs student alone vs distilled student on offline Fashion-MNIST",
        description="Trains (or reuses) a teacher (a CIFAR ResNet-20 by default) on 32x32 Fashion-MNIST, trains the same student "
        "without and with distillation (the distilled one also reads the unlabelled transfer set), evaluates all three, "
        "saves a table and plots, and exports.",
    )


def _add_train_teacher(commands) -> None:
    _add_command(
        commands,
        "train-teacher",
        _train_teacher,
        help="train a ResNet teacher and save it",
        description="Trains a ResNet teacher (random init, ImageNet backbone, or a weights file) and saves it as .keras.",
    )


def _add_distill(commands) -> None:
    """`distill`'s flags are the config's fields (`DistillConfig`, declared with `kdistill.run.options.option`)."""
    distill = commands.add_parser(
        "distill",
        help="distil a teacher into a student",
        description="Distils a saved teacher into a student. Flags override the config file's entries.",
    )
    distill.add_argument("--config", help="YAML or JSON run config (keys: see kdistill.run.config.DistillConfig)")
    _data_arguments(distill, config=False)  # a flag left out leaves the config file's value
    options.add_flags(
        distill, DistillConfig, [name for name in options.flag_names(DistillConfig) if name not in DATA_FLAGS]
    )
    distill.add_argument(
        "--restart",
        action="store_true",
        help="discard the backup of an interrupted run in the output folder and start afresh",
    )
    distill.set_defaults(func=_distill)


def _add_evaluate(commands) -> None:
    _add_command(
        commands,
        "evaluate",
        _evaluate,
        help="accuracy, size and speed of a saved model",
        description="Top-1/top-5 and per-class accuracy, parameters, size and images/s of a saved model.",
    )


def _add_cache_teacher(commands) -> None:
    _add_command(
        commands,
        "cache-teacher",
        _cache_teacher,
        help="compute the teacher's tapped outputs once and store them",
        description="Runs the teacher once over the (unaugmented) training images and stores its tapped outputs and logits as .npy "
        "files, keyed by hashes of the teacher, data and taps. `kdistill distill --teacher-cache DIR` then trains "
        "without running the teacher.",
    )


def _add_taps(commands) -> None:
    taps_parser = commands.add_parser("taps", help="help choosing taps (kdistill taps suggest)")
    taps_commands = taps_parser.add_subparsers(dest="taps_command", metavar="SUBCOMMAND", required=True)
    _add_command(
        taps_commands,
        "taps suggest",
        _taps_suggest,
        help="stage outputs of both networks, a pairing, and CKA scores",
        description="Lists candidate stage outputs of teacher and student with their shapes, proposes a pairing by stage and "
        "resolution and, with --cka, scores every pair by linear CKA on a batch of real images.",
    )


def _add_export(commands) -> None:
    _add_command(
        commands,
        "export",
        _export,
        help="export a student as SavedModel and TFLite, with a parity report",
        description="Writes a SavedModel in TF Serving's layout (<output-dir>/serving/<version>) and TFLite files, then checks each "
        "against the Keras student on the test split and writes report.json.",
    )


def _run(args) -> int:
    """Fills the flags left out from --config (`fill_from_config`), checks numbers and output paths (`flag_checks`), runs the handler."""
    declared = command_options.options_of(args.command, getattr(args, "taps_command", None))
    if declared is not None and declared.shared:
        fill_from_config(args, declared.shared + options.config_keys(declared))
    flag_checks.check(args)
    from kdistill.run import segmentation_commands

    # masks (--task segmentation, --data scenes, a segmenter model): their own route
    text = segmentation_commands.command(args, verbose=_progress())
    return args.func(args) if text is None else print(text) or 0


def _report(args, message: str) -> int:
    """One line on stderr (the traceback before it with --verbose); the exit status of a refused command."""
    if args.verbose:
        traceback.print_exc()
    print(f"kdistill {args.command}: error: {shorten(message, 10 * SHOWN_CHARACTERS)}", file=sys.stderr)
    return 2


def _log_to_stderr(verbose: bool) -> None:
    """kdistill's stage messages on stderr, one line each ("kdistill: Training the teacher ..."); DEBUG with --verbose."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("kdistill: %(message)s"))
    package_logger = logging.getLogger("kdistill")
    for earlier in [h for h in package_logger.handlers if getattr(h, "kdistill_cli", False)]:
        # an earlier main() in this process (tests, notebooks): one line per message, current stderr
        package_logger.removeHandler(earlier)
    handler.kdistill_cli = True
    package_logger.addHandler(handler)
    # one line per message (TensorFlow's absl setup also gives the root logger a handler)
    package_logger.propagate = False
    package_logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # TensorFlow's Python warnings (e.g. "5 out of the last 35 calls ... triggered tf.function retracing" when the
        # demo predicts with several models), printed twice through absl's and the root handlers: --verbose shows them.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kdistill` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    _log_to_stderr(args.verbose)
    try:
        _select_backend(args.backend)
        backend_module.check_backend_name()
        if not args.verbose:
            backend_module.import_tensorflow_quietly()
        return _run(args)
    except KeyboardInterrupt as interrupt:  # Ctrl-C: where it stopped and how to go on, no traceback
        if sys.stdout.isatty():
            print()  # off the progress bar's line
        print(f"kdistill {args.command}: {interrupted_line(args.command, interrupt)}", file=sys.stderr)
        return 130
    # UserError is kdistill's user-error type; ValueError stays for the checks that raise it plainly. TypeError is left
    # to show its traceback: it is a bug, not a user's mistake.
    except (UserError, ValueError, FileNotFoundError, ImportError) as error:
        return _report(args, str(error))
    except OSError as error:  # disk full, permissions, a path under a file: one line naming the path
        # ours name the path already
        detail = f"{error.strerror} ({error.filename or 'no path given'})" if error.strerror else str(error)
        return _report(args, detail)
    except Exception as error:  # a library's error kdistill did not translate: one line when it is not a bug
        if library_error_line(error) is None:
            raise
        return _report(args, library_error_line(error))
