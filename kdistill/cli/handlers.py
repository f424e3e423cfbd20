"""The `kdistill` command's handlers: one per command, each calling the public functions and returning the exit status.

`kdistill.cli.build_parser` sets each as its subcommand's `args.func`; `kdistill.cli.main` runs it after the flags are
checked, and turns a user's mistake into one line.
"""

from __future__ import annotations

import os
import sys

from kdistill.errors import UserError
from kdistill.run import options
from kdistill.run.config import DistillConfig
from kdistill.run.config_files import read_config_file


def _progress() -> int:
    """Keras verbosity: a live progress bar in a terminal, one line per epoch in a log file."""
    return 1 if sys.stdout.isatty() else 2


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
    from kdistill.run import interrupts, training

    splits = _load_splits(args)
    keras.utils.set_random_seed(args.seed)
    progress = interrupts.EpochProgress()  # the epoch a Ctrl-C stops in, for the message
    with interrupts.reporting_interrupts(progress, resumable=False):
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
