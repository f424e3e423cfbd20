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
from kdistill.errors import SHOWN_CHARACTERS, UserError, interrupted_line, library_error_line, shorten
from kdistill.run import commands as command_options
from kdistill.run import flag_checks, options
from kdistill.run.config import DATA_FLAGS, DistillConfig, read_config_file
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


def _progress() -> int:
    """Keras verbosity: a live progress bar in a terminal, one line per epoch in a log file."""
    return 1 if sys.stdout.isatty() else 2


def _run(args) -> int:
    """Fills the flags left out from --config (`fill_from_config`), checks numbers and output paths (`flag_checks`), runs the handler."""
    declared = command_options.options_of(args.command, getattr(args, "taps_command", None))
    if declared is not None and declared.shared:
        fill_from_config(args, declared.shared + options.config_keys(declared))
    flag_checks.check(args)
    from kdistill.run import segmentation_commands

    text = segmentation_commands.command(
        args, verbose=_progress()
    )  # masks (--task segmentation, --data scenes, a segmenter model): their own route
    return args.func(args) if text is None else print(text) or 0


def _load_splits(args, **changes):
    """The data the data flags name (`kdistill.data.load`); `changes` replaces some of its arguments."""
    from kdistill import data

    arguments = dict(
        data_dir=args.data_dir,
        skip_unreadable=bool(args.skip_unreadable),
        image_size=args.image_size,
        batch_size=args.batch_size,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        seed=args.seed,
    )
    return data.load(args.data, **dict(arguments, **changes))


def _held_out(splits, args):
    """The test split, else (an image folder without a test folder) the validation split, saying so on stderr."""
    dataset, name = splits.held_out()
    if name != "test":
        print(
            f"kdistill {args.command}: {args.data!r} has no test split (a test folder goes in --data-dir); using its validation split: the "
            f"{splits.counts['validation']} images training with --seed {args.seed} left out",
            file=sys.stderr,
        )
    return dataset


# === Handlers: one per command, each returning the exit status ===
def _demo(args) -> int:
    from kdistill.run import demo

    overrides = options.parse_overrides(args.set)  # demo.demo checks them by DemoSettings' declarations before any work
    summary = demo.demo(
        args.output_dir,
        full=args.full,
        data_dir=args.data_dir,
        seed=args.seed,
        overrides=overrides,
        verbose=0 if args.quiet else _progress(),
        retrain_teacher=args.retrain_teacher,
    )
    print(demo.summary_text(summary, args.output_dir))
    return 0


def _train_teacher(args) -> int:
    import keras

    from kdistill import evaluation
    from kdistill.run import callbacks, training

    splits = _load_splits(args)
    keras.utils.set_random_seed(args.seed)
    progress = callbacks.EpochProgress()  # the epoch a Ctrl-C stops in, for the message
    with callbacks.reporting_interrupts(progress, resumable=False):
        teacher, history = training.train_teacher(
            splits,
            args.output,
            epochs=args.epochs,
            weights=args.weights,
            learning_rate=args.learning_rate,
            name=args.name,
            verbose=_progress(),
            optimizer=args.optimizer,
            warmup_epochs=args.warmup_epochs,
            resize_to=args.resize_to,
            callbacks_=[progress],
        )
    report = evaluation.evaluate(teacher, splits.test, splits.class_names) if splits.test is not None else {}
    print(f"teacher saved to {args.output}" + (f"; test top-1 {100 * report['top1']:.2f}%" if report else ""))
    return 0


def _distill(args) -> int:
    from kdistill import evaluation
    from kdistill import files
    from kdistill.run import jobs

    file_values = read_config_file(args.config) if args.config else {}
    config = DistillConfig.from_dict(options.merge_flags(file_values, args, DistillConfig))
    files.check_output_path(config.resolved_output_dir(), "folder")  # also the default saved_models/<run name>
    import keras

    keras.utils.set_random_seed(config.seed)
    summary = jobs.distill(config, verbose=_progress(), restart=args.restart)
    if "test" in summary:
        print(evaluation.format_table([dict(summary["test"], name=f"{config.student} ({summary['evaluated']})")]))
    written = "" if summary["student_path"] else " (written by the chief worker; this worker keeps no files)"
    print(f"run folder: {config.resolved_output_dir()}{written}")
    return 0


def _evaluate(args) -> int:
    from kdistill import evaluation, files
    from kdistill.models import saving

    model = saving.load_model(args.model, role="model")
    splits = _load_splits(args, train_limit=None)
    report = evaluation.evaluate(model, _held_out(splits, args), splits.class_names)
    print(evaluation.format_table([dict(report, name=os.path.basename(args.model))]))
    print("\nper-class top-1:")
    for name, value in report["per_class_accuracy"].items():
        print(f"  {name:<14} {'-' if value is None else f'{100 * value:6.2f}'}")
    if args.json_path:
        files.write_json(args.json_path, report)  # its folder made, the file written whole
    return 0


def _cache_teacher(args) -> int:
    from kdistill.models import taps, teachers
    from kdistill.run import teacher_cache

    teacher = teachers.load(args.teacher)
    layers = (
        [name.strip() for name in args.layers.split(",")] if args.layers else list(taps.preset(teacher, "mobilenet_v2"))
    )
    splits = _load_splits(args)
    augment = [name.strip() for name in args.augment.split(",") if name.strip()]
    cache = teacher_cache.build(
        teacher,
        layers,
        splits.train_plain,
        args.output,
        dtype=args.dtype,
        verbose=_progress(),
        views=args.views,
        augment=augment,
        seed=args.seed,
        top_k=args.top_k,
    )
    print(f"cached {cache.describe()}")
    return 0


def _taps_suggest(args) -> int:
    from kdistill import plots
    from kdistill.models import tap_suggest

    teacher, student = tap_suggest.build_pair(
        args.teacher or "resnet50", args.student, args.image_size, args.student_width
    )
    images = None
    if args.cka or args.heatmap:
        splits = _load_splits(args, batch_size=args.cka_images, test_limit=args.cka_images, train_limit=None)
        images = next(iter(splits.test if splits.test is not None else splits.train))[0]
    suggestion = tap_suggest.suggest(teacher, student, images)
    print(tap_suggest.format_suggestion(suggestion))
    if args.heatmap:
        print(f"CKA heatmap: {plots.cka_heatmap(suggestion, args.heatmap)}")
    return 0


def _export(args) -> int:
    import keras

    if keras.backend.backend() != "tensorflow":
        raise UserError(
            f"kdistill export writes SavedModel and TFLite files, which needs the TensorFlow backend; this is "
            f'{keras.backend.backend()!r}. Run `kdistill --backend tensorflow export ...` (pip install "kdistill[tensorflow]"): '
            "a student saved on JAX or PyTorch loads there unchanged."
        )
    from kdistill import export, quantize
    from kdistill.export import int8_calibration
    from kdistill.models import saving

    int8_calibration.check(args.calibration, args.percentile)
    model = saving.load_model(args.model, role="student")
    default_formats = (
        "saved_model,int8" if quantize.is_quantized(export.student_of(model)) else "saved_model,float32,int8"
    )
    formats = export.check_formats(
        name.strip() for name in (default_formats if args.formats is None else args.formats).split(",") if name.strip()
    )
    splits = _load_splits(args)
    calibrate = (
        splits.validation if splits.counts.get("validation", 0) >= args.calibration_images else splits.train_plain
    )
    result = export.export_all(
        model,
        args.output_dir,
        formats=formats,
        representative=calibrate,
        test=_held_out(splits, args),
        version=args.version,
        int8_io=args.int8_io,
        limit=args.report_limit,
        calibration=args.calibration,
        percentile=args.percentile,
        class_names=splits.class_names,
        calibration_images=args.calibration_images,
    )
    print(export.format_report(result["report"]))
    print(f"\nreport: {os.path.join(args.output_dir, 'report.json')}")
    return 0


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
        package_logger.removeHandler(
            earlier
        )  # an earlier main() in this process (tests, notebooks): one line per message, current stderr
    handler.kdistill_cli = True
    package_logger.addHandler(handler)
    package_logger.propagate = (
        False  # one line per message (TensorFlow's absl setup also gives the root logger a handler)
    )
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
    # UserError is kdistill's user-error type; ValueError stays for the checks that raise it plainly. TypeError is left to show its
    # traceback: it is a bug, not a user's mistake.
    except (UserError, ValueError, FileNotFoundError, ImportError) as error:
        return _report(args, str(error))
    except OSError as error:  # disk full, permissions, a path under a file: one line naming the path
        detail = (
            f"{error.strerror} ({error.filename or 'no path given'})" if error.strerror else str(error)
        )  # ours name the path already
        return _report(args, detail)
    except Exception as error:  # a library's error kdistill did not translate: one line when it is not a bug
        if library_error_line(error) is None:
            raise
        return _report(args, library_error_line(error))


if __name__ == "__main__":
    sys.exit(main())
