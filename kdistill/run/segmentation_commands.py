"""The segmentation routes of `kdistill train-teacher`, `evaluate`, `export` and `demo` (chosen by `kdistill.run.segmentation.command`).

The demo on the offline scenes (`kdistill demo --task segmentation`): a teacher segmenter trained alone, the student
trained alone, and the same student (same initial weights, same batch order) distilled with the default recipe,
channel-wise distillation (CWD, Shu et al., ICCV 2021) of the logit map at temperature 1, weighted 3, plus the
per-pixel cross-entropy; the three test mIoUs are printed and saved to `<output-dir>/summary.json`.
"""

from __future__ import annotations

import os
import time

from kdistill.run.segmentation import MaskSplits, build_distiller, format_report, load, train_teacher

__all__ = ["run", "demo", "DEMO_SCHEDULE", "DEMO_RECIPE"]

#: the demo's sizes (a `--set key=value` changes one): 32x32 scenes, a conv_segmenter teacher, a MobileNetV2-0.35 segmenter student
DEMO_SCHEDULE = {"image_size": 32, "train_scenes": 2000, "test_scenes": 500, "teacher_epochs": 8, "student_epochs": 8, "batch_size": 32,
                 "learning_rate": 2e-3}
#: the demo's distillation recipe: CWD on the logit map (the paper's segmentation setting) and the per-pixel CE
DEMO_RECIPE = {"logits_loss": {"name": "cwd", "temperature": 1.0}, "logits_weight": 3.0, "alpha": 0.5, "feature_loss": None, "taps": {}}


def run(args, model, verbose: int) -> str:
    """Dispatches a parsed segmentation command line to its route; returns the text to print."""
    return {"train-teacher": _train_teacher, "evaluate": _evaluate, "export": _export, "demo": _demo}[args.command](args, model, verbose)


def _splits(args, num_classes=None) -> MaskSplits:
    return load(args.data, args.data_dir, args.image_size, args.train_limit, args.test_limit, args.seed, num_classes)


def _train_teacher(args, model, verbose: int) -> str:
    from kdistill.segmentation_metrics import evaluate_segmenter

    name = "conv_segmenter" if args.name == "resnet50" else args.name  # resnet50 is the classifiers' default
    splits = _splits(args)
    teacher = train_teacher(splits, args.output, name=name, epochs=args.epochs, learning_rate=args.learning_rate or 1e-3,
                            batch_size=args.batch_size, seed=args.seed, verbose=verbose)
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
    formats = export.check_formats(name.strip() for name in (args.formats or "saved_model,float32,int8").split(",") if name.strip())
    count = min(args.calibration_images, len(splits.train_images))
    representative = [(splits.train_images[start:start + 32], splits.train_masks[start:start + 32]) for start in range(0, count, 32)]
    test = [(splits.test_images[start:start + 32], splits.test_masks[start:start + 32]) for start in range(0, len(splits.test_images), 32)]
    result = export.export_segmenter(model, args.output_dir, formats=formats, representative=representative, test=test,
                                     class_names=splits.class_names, limit=args.report_limit, version=args.version, int8_io=args.int8_io,
                                     calibration=args.calibration, percentile=args.percentile)
    return export.format_segmentation_report(result["report"]) + f"\n\nreport: {os.path.join(args.output_dir, 'report.json')}"


def demo(output_dir: str, data_dir: str | None = None, seed: int = 0, overrides: dict | None = None, verbose: int = 2) -> dict:
    """Teacher, student alone and distilled student on the offline scenes; returns (and saves) their test mIoU and seconds."""
    import keras

    from kdistill import files
    from kdistill.models import segmenters
    from kdistill.segmentation_metrics import evaluate_segmenter

    schedule = dict(DEMO_SCHEDULE, **(overrides or {}))
    unknown = sorted(set(schedule) - set(DEMO_SCHEDULE))
    if unknown:
        raise ValueError(f"Unknown demo setting {unknown[0]!r}; the segmentation demo's settings: {', '.join(DEMO_SCHEDULE)}.")
    splits = load("scenes", data_dir, schedule["image_size"], schedule["train_scenes"], schedule["test_scenes"], seed)
    classes, shape, started = len(splits.class_names), tuple(splits.train_images.shape[1:]), time.perf_counter()
    fit = dict(batch_size=schedule["batch_size"], epochs=schedule["student_epochs"], verbose=verbose)
    teacher = train_teacher(splits, os.path.join(output_dir, "teacher.keras"), epochs=schedule["teacher_epochs"],
                            learning_rate=schedule["learning_rate"], batch_size=schedule["batch_size"], seed=seed, verbose=verbose)
    summary = {"teacher": evaluate_segmenter(teacher, splits.test_images, splits.test_masks, splits.class_names)["mean_iou"]}
    for name in ("student_alone", "distilled"):
        keras.utils.set_random_seed(seed + 1)  # both students start from the same weights and read the same batch order
        student = segmenters.get("mobilenet_v2_segmenter", classes, shape)
        if name == "student_alone":
            from kdistill.run.segmentation import _compile

            _compile(student, schedule["learning_rate"]).fit(splits.train_images, splits.train_masks, **fit)
        else:
            recipe = dict(DEMO_RECIPE)
            build_distiller(teacher, student, recipe.pop("taps"), schedule["learning_rate"], **recipe).fit(
                splits.train_images, splits.train_masks, **fit)
        summary[name] = evaluate_segmenter(student, splits.test_images, splits.test_masks, splits.class_names)["mean_iou"]
    summary.update(seconds=round(time.perf_counter() - started, 1), schedule=schedule, recipe=repr(DEMO_RECIPE))
    files.write_json(os.path.join(output_dir, "summary.json"), summary)
    return summary


def _demo(args, model, verbose: int) -> str:
    from kdistill.run import options

    output_dir = args.output_dir if args.output_dir != os.path.join("saved_models", "demo") else os.path.join("saved_models", "demo_segmentation")
    summary = demo(output_dir, args.data_dir, args.seed, options.parse_overrides(args.set), 0 if args.quiet else verbose)
    rows = [("teacher (conv_segmenter)", summary["teacher"]), ("student alone (mobilenet_v2_segmenter)", summary["student_alone"]),
            ("distilled student (CWD on the logit map)", summary["distilled"])]
    lines = [f"  {name:<42} test mIoU {100 * value:6.2f}%" for name, value in rows]
    return "\n".join(["segmentation demo on the offline scenes:", *lines, f"({summary['seconds']:.0f} s; summary: {output_dir}/summary.json)"])
