"""The `kdistill` command: parses arguments and config files, then calls the public functions.

    kdistill demo                      # the main job on offline Fashion-MNIST
    kdistill train-teacher --epochs 4 --output saved_models/teacher.keras
    kdistill distill --config examples/configs/fashion_mnist_r50_mv2.yaml
    kdistill evaluate saved_models/demo/student_distilled.keras
    kdistill export saved_models/demo/student_distilled.keras --formats saved_model,int8
    kdistill cache-teacher --teacher saved_models/teacher.keras --output saved_models/teacher_cache
    kdistill taps suggest --teacher saved_models/demo/teacher.keras --student mobilenet_v2 --cka --heatmap cka.png
    kdistill --backend jax distill --config run.yaml   # any command but export on JAX or PyTorch (no TensorFlow needed)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from kdistill import backend as backend_module
from kdistill.errors import SHOWN_CHARACTERS, UserError, interrupted_line, library_error_line, shorten
from kdistill.run import flag_checks, options
from kdistill.run.config import DistillConfig, read_config_file
from kdistill.run.flag_checks import fill_from_config

__all__ = ["main", "build_parser", "BACKENDS"]

BACKENDS = ("tensorflow", "jax", "torch")

#: the `DistillConfig` fields that every command reading data takes as flags, in this order
DATA_FLAGS = ("data", "task", "data_dir", "skip_unreadable", "image_size", "train_limit", "test_limit", "batch_size", "seed")


_select_backend = backend_module.select  # `--backend`: sets KERAS_BACKEND before Keras loads


def _data_arguments(parser: argparse.ArgumentParser, config: bool = True) -> None:
    """`--config` and the data flags, declared with the config's fields (`DistillConfig`); a flag left out is None until `_run` fills it."""
    if config:
        parser.add_argument("--config", help="YAML or JSON run config (the file `kdistill distill --config` reads): its data keys; flags override them")
    options.add_flags(parser, DistillConfig, DATA_FLAGS)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line naming the fix (argparse prints the whole usage block first)."""

    def parse_known_args(self, args=None, namespace=None):
        self.arguments = list(sys.argv[1:] if args is None else args)  # for error()
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        flag = message.split()[1].rstrip(":").split("/")[-1] if message.endswith("expected one argument") else None
        value = (self.arguments[self.arguments.index(flag) + 1:] or [""])[0] if flag in getattr(self, "arguments", []) else ""
        if value[:1] == "-" and value[1:2] in set("0123456789."):  # argparse read `--teacher-weights -1,1` as two flags
            message += f" (a value that starts with '-' is written after '=': {flag}={value})"
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the flags)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `kdistill` parser: global flags, then one subcommand per job, each with its handler (`args.func`)."""
    parser = _Parser(prog="kdistill", description="Knowledge distillation for Keras 3 / TensorFlow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (sets KERAS_BACKEND before Keras loads; default: KERAS_BACKEND, else tensorflow). "
                             "jax and torch train without TensorFlow; export needs tensorflow")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in (_add_demo, _add_train_teacher, _add_distill, _add_evaluate, _add_cache_teacher, _add_taps, _add_export):
        add_command(commands)
    return parser


def _add_demo(commands) -> None:
    demo = commands.add_parser("demo", help="teacher vs student alone vs distilled student on offline Fashion-MNIST",
                               description="Trains (or reuses) a teacher (a CIFAR ResNet-20 by default) on 32x32 Fashion-MNIST, "
                                           "trains the same student without and with distillation (the distilled one also reads the "
                                           "unlabelled transfer set), evaluates all three, saves a table and plots, and exports.")
    demo.add_argument("--full", action="store_true", help="the longer schedule (all training images, more epochs)")
    demo.add_argument("--output-dir", default=os.path.join("saved_models", "demo"), help="run folder (default saved_models/demo)")
    demo.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    demo.add_argument("--seed", type=int, default=0, help="draws the split, the teacher and the students (default 0)")
    demo.add_argument("--retrain-teacher", action="store_true", help="train a new teacher even if one is saved")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a schedule entry, e.g. --set student_epochs=2")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--task", choices=["classification", "segmentation"], default=None, help="segmentation: the demo on offline synthetic scenes")
    demo.set_defaults(func=_demo)


def _add_train_teacher(commands) -> None:
    teacher = commands.add_parser("train-teacher", help="train a ResNet teacher and save it",
                                  description="Trains a ResNet teacher (random init, ImageNet backbone, or a weights file) and saves it as .keras.")
    _data_arguments(teacher)
    teacher.add_argument("--name", default="resnet50", help="resnet50 | resnet101 | resnet152 (ImageNet ResNets) | resnet20 | resnet32 | resnet56 (CIFAR ResNets)")
    teacher.add_argument("--weights", default=None, help="None (random), imagenet, or a weights/model file")
    teacher.add_argument("--epochs", type=int, default=4)
    teacher.add_argument("--learning-rate", type=float, default=None, help="peak rate (default 1e-3 for adam, 0.01 for sgd)")
    teacher.add_argument("--optimizer", default="adam", choices=["sgd", "adam", "adamw"], help="adam (default); sgd: momentum 0.9")
    teacher.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up before the cosine decay")
    teacher.add_argument("--resize-to", type=int, default=None, help="upsample inputs inside the teacher to this size (e.g. 64)")
    teacher.add_argument("--output", default=os.path.join("saved_models", "teacher.keras"), help="where to save the teacher")
    teacher.set_defaults(func=_train_teacher)


def _add_distill(commands) -> None:
    """`distill`'s flags are the config's fields (`DistillConfig`, declared with `kdistill.run.options.option`)."""
    distill = commands.add_parser("distill", help="distil a teacher into a student",
                                  description="Distils a saved teacher into a student. Flags override the config file's entries.")
    distill.add_argument("--config", help="YAML or JSON run config (keys: see kdistill.run.config.DistillConfig)")
    _data_arguments(distill, config=False)  # a flag left out leaves the config file's value
    options.add_flags(distill, DistillConfig, [name for name in options.flag_names(DistillConfig) if name not in DATA_FLAGS])
    distill.add_argument("--restart", action="store_true", help="discard the backup of an interrupted run in the output folder and start afresh")
    distill.set_defaults(func=_distill)


def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="accuracy, size and speed of a saved model",
                                   description="Top-1/top-5 and per-class accuracy, parameters, size and images/s of a saved model.")
    evaluate.add_argument("model", help="saved model (.keras)")
    _data_arguments(evaluate)
    evaluate.add_argument("--json", dest="json_path", help="also write the report to this JSON file")
    evaluate.set_defaults(func=_evaluate)


def _add_cache_teacher(commands) -> None:
    cache = commands.add_parser("cache-teacher", help="compute the teacher's tapped outputs once and store them",
                                description="Runs the teacher once over the (unaugmented) training images and stores its tapped "
                                            "outputs and logits as .npy files, keyed by hashes of the teacher, data and taps. "
                                            "`kdistill distill --teacher-cache DIR` then trains without running the teacher.")
    cache.add_argument("--teacher", required=True, help="saved teacher (.keras)")
    _data_arguments(cache)
    cache.add_argument("--layers", help="comma-separated teacher layers (default: the preset's, e.g. conv3_block4_out,conv4_block6_out)")
    cache.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="storage dtype (float16 halves the disk)")
    cache.add_argument("--views", type=int, default=0, help="store this many augmented views per image (with --augment)")
    cache.add_argument("--augment", default="", help="views' augmentation, comma-separated: crop, flip, mixup, cutmix")
    cache.add_argument("--top-k", type=int, default=None, help="store only the teacher's k largest logits per view (compact soft labels)")
    cache.add_argument("--output", default=os.path.join("saved_models", "teacher_cache"), help="cache folder (default saved_models/teacher_cache)")
    cache.set_defaults(func=_cache_teacher)


def _add_taps(commands) -> None:
    taps_parser = commands.add_parser("taps", help="help choosing taps (kdistill taps suggest)")
    taps_commands = taps_parser.add_subparsers(dest="taps_command", metavar="SUBCOMMAND", required=True)
    suggest = taps_commands.add_parser("suggest", help="stage outputs of both networks, a pairing, and CKA scores",
                                       description="Lists candidate stage outputs of teacher and student with their shapes, proposes "
                                                   "a pairing by stage and resolution and, with --cka, scores every pair by linear "
                                                   "CKA on a batch of real images.")
    suggest.add_argument("--teacher", nargs="+", help="a saved teacher (.keras; several: their ensemble) or 'resnet50' (random weights; "
                                                       "default: the config's teacher, else resnet50)")
    suggest.add_argument("--student", help="a registered student name or a saved model (default: the config's, else mobilenet_v2)")
    options.add_flags(suggest, DistillConfig, ["student_width"])
    _data_arguments(suggest)
    suggest.add_argument("--cka", action="store_true", help="score pairs by linear CKA on --cka-images test images")
    suggest.add_argument("--cka-images", type=int, default=128)
    suggest.add_argument("--heatmap", help="save the CKA matrix as this PNG (implies --cka)")
    suggest.set_defaults(func=_taps_suggest)


def _add_export(commands) -> None:
    export = commands.add_parser("export", help="export a student as SavedModel and TFLite, with a parity report",
                                 description="Writes a SavedModel in TF Serving's layout (<output-dir>/serving/<version>) and TFLite files, "
                                             "then checks each against the Keras student on the test split and writes report.json.")
    export.add_argument("model", help="saved student (.keras); a saved distiller exports its student only")
    _data_arguments(export)
    export.add_argument("--output-dir", default=os.path.join("saved_models", "export"), help="where to write (default saved_models/export)")
    export.add_argument("--formats", default=None,
                        help="comma-separated: saved_model, onnx, float32, float16, dynamic, int8, int16x8 (default saved_model,float32,int8; "
                             "saved_model,int8 for a quantization-aware student)")
    export.add_argument("--version", type=int, default=1, help="TF Serving version folder (default 1)")
    export.add_argument("--int8-io", action="store_true", help="int8 model input/output too (default float input/output)")
    export.add_argument("--report-limit", type=int, default=1000, help="test images used by the parity report (default 1000)")
    export.add_argument("--calibration", choices=["minmax", "percentile", "trained"], default="minmax",
                        help="int8 activation ranges: the converter's min/max (default), each range cut to its percentiles, or "
                             "a quantization-aware student's trained ranges (used by itself for such a student)")
    export.add_argument("--percentile", type=float, default=99.99, help="upper percentile kept by --calibration percentile (default 99.99)")
    export.add_argument("--calibration-images", type=int, default=500, help="images that calibrate int8/int16x8 (default 500): the validation "
                                                                             "split, or the training images where it holds fewer")
    export.set_defaults(func=_export)


def _progress() -> int:
    """Keras verbosity: a live progress bar in a terminal, one line per epoch in a log file."""
    return 1 if sys.stdout.isatty() else 2


def _run(args) -> int:
    """Fills the data flags left out from --config (`fill_from_config`), checks numbers and output paths (`flag_checks`), runs the handler."""
    if args.command != "distill" and hasattr(args, "data"):
        fill_from_config(args, DATA_FLAGS + (("teacher", "student", "student_width") if args.command == "taps" else ()))
    flag_checks.check(args)
    from kdistill.run import segmentation_commands

    text = segmentation_commands.command(args, verbose=_progress())  # masks (--task segmentation, --data scenes, a segmenter model): their own route
    return args.func(args) if text is None else print(text) or 0


def _load_splits(args, **changes):
    """The data the data flags name (`kdistill.data.load`); `changes` replaces some of its arguments."""
    from kdistill import data

    arguments = dict(data_dir=args.data_dir, skip_unreadable=bool(args.skip_unreadable), image_size=args.image_size, batch_size=args.batch_size,
                     train_limit=args.train_limit, test_limit=args.test_limit, seed=args.seed)
    return data.load(args.data, **dict(arguments, **changes))


def _held_out(splits, args):
    """The test split, else (an image folder without a test folder) the validation split, saying so on stderr."""
    dataset, name = splits.held_out()
    if name != "test":
        print(f"kdistill {args.command}: {args.data!r} has no test split (a test folder goes in --data-dir); using its validation split: the "
              f"{splits.counts['validation']} images training with --seed {args.seed} left out", file=sys.stderr)
    return dataset


# === Handlers: one per command, each returning the exit status ===
def _demo(args) -> int:
    from kdistill.run import demo

    overrides = options.parse_overrides(args.set)  # demo.demo checks them (names, types, signs) before any work
    summary = demo.demo(args.output_dir, full=args.full, data_dir=args.data_dir, seed=args.seed, overrides=overrides,
                        verbose=0 if args.quiet else _progress(), retrain_teacher=args.retrain_teacher)
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
        teacher, history = training.train_teacher(splits, args.output, epochs=args.epochs, weights=args.weights, learning_rate=args.learning_rate,
                                                  name=args.name, verbose=_progress(), optimizer=args.optimizer,
                                                  warmup_epochs=args.warmup_epochs, resize_to=args.resize_to, callbacks_=[progress])
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
    layers = [name.strip() for name in args.layers.split(",")] if args.layers else list(taps.preset(teacher, "mobilenet_v2"))
    splits = _load_splits(args)
    augment = [name.strip() for name in args.augment.split(",") if name.strip()]
    cache = teacher_cache.build(teacher, layers, splits.train_plain, args.output, dtype=args.dtype, verbose=_progress(), views=args.views,
                                augment=augment, seed=args.seed, top_k=args.top_k)
    print(f"cached {cache.describe()}")
    return 0


def _taps_suggest(args) -> int:
    from kdistill import plots
    from kdistill.models import tap_suggest

    teacher, student = tap_suggest.build_pair(args.teacher or "resnet50", args.student, args.image_size, args.student_width)
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
        raise UserError(f"kdistill export writes SavedModel and TFLite files, which needs the TensorFlow backend; this is "
                        f"{keras.backend.backend()!r}. Run `kdistill --backend tensorflow export ...` (pip install \"kdistill[tensorflow]\"): "
                        "a student saved on JAX or PyTorch loads there unchanged.")
    from kdistill import export, quantize
    from kdistill.export import int8_calibration
    from kdistill.models import saving

    int8_calibration.check(args.calibration, args.percentile)
    model = saving.load_model(args.model, role="student")
    default_formats = "saved_model,int8" if quantize.is_quantized(export.student_of(model)) else "saved_model,float32,int8"
    formats = export.check_formats(name.strip() for name in (default_formats if args.formats is None else args.formats).split(",") if name.strip())
    splits = _load_splits(args)
    calibrate = splits.validation if splits.counts.get("validation", 0) >= args.calibration_images else splits.train_plain
    result = export.export_all(model, args.output_dir, formats=formats, representative=calibrate, test=_held_out(splits, args), version=args.version,
                               int8_io=args.int8_io, limit=args.report_limit, calibration=args.calibration, percentile=args.percentile,
                               class_names=splits.class_names, calibration_images=args.calibration_images)
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
        package_logger.removeHandler(earlier)  # an earlier main() in this process (tests, notebooks): one line per message, current stderr
    handler.kdistill_cli = True
    package_logger.addHandler(handler)
    package_logger.propagate = False  # one line per message (TensorFlow's absl setup also gives the root logger a handler)
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
        detail = f"{error.strerror} ({error.filename or 'no path given'})" if error.strerror else str(error)  # ours name the path already
        return _report(args, detail)
    except Exception as error:  # a library's error kdistill did not translate: one line when it is not a bug
        if library_error_line(error) is None:
            raise
        return _report(args, library_error_line(error))


if __name__ == "__main__":
    sys.exit(main())
