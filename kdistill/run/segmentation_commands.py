"""The segmentation routes (`command`) of `kdistill train-teacher`, `distill`, `evaluate`, `export`, `taps suggest` and `demo`.

The demo on the offline scenes (`kdistill demo --task segmentation`): a teacher segmenter trained alone, the student
trained alone on the labelled scenes, and the same student (same initial weights, as many steps) distilled with
`DEMO_RECIPE` from the labelled scenes and unlabelled ones that only the teacher labels; the three test mIoUs are
printed and saved to `<output-dir>/summary.json`.
"""

from __future__ import annotations

import os
import time

from kdistill.errors import UserError
from kdistill.run import segmentation, segmentation_data
from kdistill.run.demo_settings import SEGMENTATION_DEMO, SegmentationDemoSettings
from kdistill.run.segmentation import format_report, train_teacher
from kdistill.run.segmentation_data import MaskSplits, is_mask_data, load

__all__ = ["command", "demo", "DEMO_RECIPE"]

#: the demo's distillation recipe: pixel-wise KD (Hinton's KL at T = 4 on each pixel's class vector) and the per-pixel CE, alpha 0.5;
#: the best of `benchmarks/segmentation.py`'s recipes on these scenes (CWD on the logit map did not beat the student alone there)
DEMO_RECIPE = {"logits_loss": "kl", "temperature": 4.0, "alpha": 0.5, "feature_loss": None, "taps": {}}


def _is_segmenter_file(path: str):
    """The saved model when it returns a logit map (output rank 4; a saved distiller: its student's), else None."""
    from kdistill.models import saving

    model = saving.load_model(path, role="model", classifier=False)
    inner = getattr(model, "student", model)
    outputs = getattr(inner, "outputs", None) or []
    return model if len(outputs) == 1 and len(outputs[0].shape) == 4 else None


def _is_segmenter_name(name) -> bool:
    """Whether `name` is a registered segmenter (`kdistill.segmenters`)."""
    from kdistill.models import segmenters

    return isinstance(name, str) and name in segmenters.available()


def _task_of(args) -> tuple[str, object]:
    """The task of a parsed command line (and, for evaluate/export, the segmenter it loaded)."""
    data = getattr(args, "data", None)
    if args.command == "taps":  # segmentation: said by --task, by mask data, or by a segmenter student's name
        task = getattr(args, "task", None) or (
            "segmentation" if is_mask_data(data) or _is_segmenter_name(args.student) else None
        )
        if task == "segmentation" and (args.cka or args.heatmap):
            segmentation.resolve_task(task, data)  # CKA reads images with masks
        return task or "classification", None
    if args.command in ("evaluate", "export") and getattr(args, "task", None) is None and not is_mask_data(data):
        model = _is_segmenter_file(args.model) if os.path.exists(args.model) else None
        if model is not None:
            shape = tuple(getattr(model, "student", model).outputs[0].shape[1:])
            raise UserError(
                f"{args.model!r} returns a map of shape (batch, {', '.join(str(size) for size in shape)}), not logits of shape "
                "(batch, classes): a segmenter's logit map, measured on images with masks (--data scenes or --data "
                "masks:FOLDER); a classifier for this data must end in one logit per class."
            )
        return "classification", None
    task = segmentation.resolve_task(getattr(args, "task", None), data if args.command != "demo" else None)
    if task == "segmentation" and args.command in ("evaluate", "export"):
        model = _is_segmenter_file(args.model)
        if model is None:
            raise UserError(
                f"{args.model!r} is a classifier (its output is not a logit map (batch, H, W, classes)); it cannot be measured "
                "on masks: evaluate it on classification data, or give a segmenter."
            )
        return task, model
    return task, None


def command(args, verbose: int = 2) -> str | None:
    """Runs a segmentation command line and returns the text to print; None when the command is not about segmentation."""
    if args.command == "distill":
        from kdistill.run import options
        from kdistill.run.config import DistillConfig
        from kdistill.run.config_files import read_config_file

        values = options.merge_flags(read_config_file(args.config) if args.config else {}, args, DistillConfig)
        if segmentation.resolve_task(values.get("task"), values.get("data")) != "segmentation":
            return None
        config = DistillConfig.from_dict(values)
        summary = segmentation.distill(config, verbose, restart=bool(getattr(args, "restart", False)))
        return (
            format_report(summary["test"], f"{config.student} (student.keras)")
            + f"\nrun folder: {summary['output_dir']}"
        )
    if args.command not in ("train-teacher", "evaluate", "export", "demo", "taps"):
        return None
    task, model = _task_of(args)
    if task != "segmentation":
        return None
    return {
        "train-teacher": _train_teacher,
        "evaluate": _evaluate,
        "export": _export,
        "demo": _demo,
        "taps": _taps_suggest,
    }[args.command](args, model, verbose)


def _splits(args, num_classes=None) -> MaskSplits:
    return load(args.data, args.data_dir, args.image_size, args.train_limit, args.test_limit, args.seed, num_classes)


def _train_teacher(args, model, verbose: int) -> str:
    from kdistill.segmentation_metrics import evaluate_segmenter

    name = "conv_segmenter" if args.name == "resnet50" else args.name  # resnet50 is the classifiers' default
    splits = _splits(args)
    teacher = train_teacher(
        splits,
        args.output,
        name=name,
        epochs=args.epochs,
        learning_rate=args.learning_rate or (0.01 if args.optimizer == "sgd" else 1e-3),
        batch_size=args.batch_size,
        seed=args.seed,
        verbose=verbose,
        optimizer=args.optimizer,
        warmup_epochs=args.warmup_epochs,
    )
    report = evaluate_segmenter(teacher, splits.test_images, splits.test_masks, splits.class_names)
    return f"teacher saved to {args.output}; test mean IoU {100 * report['mean_iou']:.2f}%"


def _evaluate(args, model, verbose: int) -> str:
    from kdistill import files
    from kdistill.segmentation_metrics import evaluate_segmenter

    student = getattr(model, "student", model)
    splits = _splits(args, int(student.outputs[0].shape[-1]))
    report = evaluate_segmenter(model, splits.test_images, splits.test_masks, splits.class_names)
    if args.json_path:
        files.write_json(args.json_path, report)
    return format_report(report, os.path.basename(args.model))


def _export(args, model, verbose: int) -> str:
    from kdistill import export

    student = getattr(model, "student", model)
    splits = _splits(args, int(student.outputs[0].shape[-1]))
    formats = export.check_formats(
        name.strip() for name in (args.formats or "saved_model,float32,int8").split(",") if name.strip()
    )
    count = min(args.calibration_images, len(splits.train_images))
    representative = [
        (splits.train_images[start : start + 32], splits.train_masks[start : start + 32])
        for start in range(0, count, 32)
    ]
    test = [
        (splits.test_images[start : start + 32], splits.test_masks[start : start + 32])
        for start in range(0, len(splits.test_images), 32)
    ]
    result = export.export_segmenter(
        model,
        args.output_dir,
        formats=formats,
        representative=representative,
        test=test,
        class_names=splits.class_names,
        limit=args.report_limit,
        version=args.version,
        int8_io=args.int8_io,
        calibration=args.calibration,
        percentile=args.percentile,
    )
    return (
        export.format_segmentation_report(result["report"])
        + f"\n\nreport: {os.path.join(args.output_dir, 'report.json')}"
    )


def _taps_suggest(args, model, verbose: int) -> str:
    """`kdistill taps suggest` on two segmenters: their stage outputs, a pairing, a pasteable --taps line; CKA on test images with masks."""
    from kdistill import plots
    from kdistill.models import tap_suggest

    teachers = [args.teacher] if isinstance(args.teacher, str) else list(args.teacher or ["conv_segmenter"])
    if len(teachers) != 1:
        raise UserError(
            f"taps suggest on segmenters compares one teacher, received {len(teachers)}: {', '.join(map(str, teachers))}."
        )
    teacher, student = tap_suggest.build_segmenter_pair(
        teachers[0], args.student, args.image_size or 64, args.student_width
    )
    images = None
    if args.cka or args.heatmap:
        size = tuple(teacher.inputs[0].shape[1:3])
        if size[0] != size[1]:
            raise UserError(
                f"CKA on {args.data!r} reads square images; the teacher takes {size[0]}x{size[1]}: leave --cka out."
            )
        splits = load(
            args.data, args.data_dir, size[0], 1, args.cka_images, args.seed, int(teacher.outputs[0].shape[-1])
        )
        images = splits.test_images[: args.cka_images]
    suggestion = tap_suggest.suggest(teacher, student, images)
    text = tap_suggest.format_suggestion(suggestion)
    return text + (f"\nCKA heatmap: {plots.cka_heatmap(suggestion, args.heatmap)}" if args.heatmap else "")


def demo(
    output_dir: str,
    data_dir: str | None = None,
    seed: int = 0,
    settings: SegmentationDemoSettings = SEGMENTATION_DEMO,
    verbose: int = 2,
) -> dict:
    """Teacher, student alone and distilled student on the offline scenes; returns (and saves) their test mIoU and seconds.

    `settings`: the schedule (`kdistill.run.demo_settings.SegmentationDemoSettings`; `--set key=value` changes one).
    """
    from kdistill import files
    from kdistill.run import environment
    from kdistill.segmentation_metrics import evaluate_segmenter

    splits = load("scenes", data_dir, settings.image_size, settings.train_scenes, settings.test_scenes, seed)
    started = time.perf_counter()
    teacher = train_teacher(
        splits,
        os.path.join(output_dir, "teacher.keras"),
        epochs=settings.teacher_epochs,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        seed=seed,
        verbose=verbose,
    )
    summary = {
        "teacher": evaluate_segmenter(teacher, splits.test_images, splits.test_masks, splits.class_names)["mean_iou"]
    }
    with_transfer = segmentation_data.add_unlabelled_scenes(splits, settings.transfer_scenes, data_dir, seed=seed + 100)
    for name, data, recipe in (("student_alone", splits, None), ("distilled", with_transfer, DEMO_RECIPE)):
        student = segmentation.train_student(teacher, data, recipe, settings, seed, verbose)
        summary[name] = evaluate_segmenter(student, splits.test_images, splits.test_masks, splits.class_names)[
            "mean_iou"
        ]
    summary.update(
        seconds=round(time.perf_counter() - started, 1),
        schedule=settings.to_dict(),
        recipe=repr(DEMO_RECIPE),
        environment=environment.describe(),
    )
    files.write_json(os.path.join(output_dir, "summary.json"), summary)
    return summary


def _demo(args, model, verbose: int) -> str:
    from kdistill.run import options

    output_dir = (
        args.output_dir
        if args.output_dir != os.path.join("saved_models", "demo")
        else os.path.join("saved_models", "demo_segmentation")
    )
    settings = SEGMENTATION_DEMO.replaced(options.parse_overrides(args.set))  # checked before any work
    summary = demo(output_dir, args.data_dir, args.seed, settings, 0 if args.quiet else verbose)
    rows = [
        ("teacher (conv_segmenter)", summary["teacher"]),
        ("student alone (mobilenet_v2_segmenter)", summary["student_alone"]),
        ("distilled student (pixel-wise KD)", summary["distilled"]),
    ]
    lines = [f"  {name:<42} test mIoU {100 * value:6.2f}%" for name, value in rows]
    return "\n".join(
        [
            "segmentation demo on the offline scenes:",
            *lines,
            f"({summary['seconds']:.0f} s; summary: {output_dir}/summary.json)",
        ]
    )
