"""Segmentation from the command line: mask data, training a segmenter teacher, distilling, evaluating and exporting.

The task is segmentation when `--task segmentation` (`task: segmentation`) says so, when the data holds masks
(`--data scenes`, `--data masks:FOLDER`), or, for `evaluate` and `export`, when the saved model returns a logit map
(output rank 4); `kdistill.run.segmentation_commands.command` picks the route.

The data (`--data scenes`, `masks:FOLDER`) is read by `kdistill.run.segmentation_data`.
"""

from __future__ import annotations

import logging
import os


from kdistill.errors import UserError
from kdistill.run.segmentation_data import MaskSplits, is_mask_data, load, with_transfer_images

__all__ = [
    "TASKS",
    "resolve_task",
    "train_teacher",
    "compile_alone",
    "build_distiller",
    "train_student",
    "distill",
    "format_report",
]

logger = logging.getLogger(__name__)

TASKS = ("classification", "segmentation")  # the values of `task`


def resolve_task(task: str | None, data: str | None) -> str:
    """`task` when given (checked against the data), else segmentation for mask data (said in one log line), else classification."""
    if task is not None and task not in TASKS:
        raise UserError(f"task must be one of {', '.join(TASKS)}, received {task!r}.")
    if task == "segmentation" and data is not None and not is_mask_data(data):
        raise UserError(
            f"task segmentation needs data with masks, but data is {data!r}: use --data scenes (offline synthetic scenes) or "
            "--data masks:FOLDER (FOLDER/images and FOLDER/masks)."
        )
    if task == "classification" and is_mask_data(data):
        raise UserError(
            f"data {data!r} holds masks, which a classifier cannot learn from: use --task segmentation (or leave --task out)."
        )
    if task is None and is_mask_data(data):
        logger.info("task: segmentation (the data %r holds masks)", data)
        return "segmentation"
    return task or "classification"


def compile_alone(model, learning_rate: float, ignore_label: int | None = 255, optimizer=None):
    """Per-pixel cross-entropy without the ignored pixels and `optimizer` (default: Adam at `learning_rate`), for a model trained
    alone: a teacher, or the student-alone run."""
    import keras

    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore_label),
    )
    return model


def train_teacher(
    splits: MaskSplits,
    output: str | None,
    name: str = "conv_segmenter",
    epochs: int = 4,
    learning_rate: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    verbose: int = 2,
    optimizer: str = "adam",
    warmup_epochs: float = 1.0,
    **options,
):
    """A segmenter from `kdistill.segmenters` trained alone on the masks and saved (when `output` is given); returns it.

    As `kdistill train-teacher` trains a classifier: `optimizer` ("adam", "sgd", "adamw") with a linear warm-up of
    `warmup_epochs`, then a cosine decay to zero at the last step (`kdistill.run.optimizers.make_optimizer`).
    """
    import keras

    from kdistill.models import saving, segmenters
    from kdistill.run import optimizers

    keras.utils.set_random_seed(seed)
    shape = tuple(splits.train_images.shape[1:])
    steps = -(-len(splits.train_images) // batch_size)
    cosine = optimizers.make_optimizer(
        optimizer, learning_rate, schedule="cosine", warmup_epochs=warmup_epochs, epochs=epochs, steps_per_epoch=steps
    )
    model = compile_alone(
        segmenters.get(name, len(splits.class_names), shape, **options), learning_rate, optimizer=cosine
    )
    model.fit(splits.train_images, splits.train_masks, batch_size=batch_size, epochs=epochs, verbose=verbose)
    if output:
        saving.save_for_inference(model, output)
    return model


def build_distiller(teacher, student, taps="preset", learning_rate: float = 1e-3, optimizer=None, **distiller_options):
    """A compiled `FeatureDistiller` of two segmenters; taps `"preset"` pairs their stages (`kdistill.taps.preset`), `"none"` none;
    `optimizer` (default: Adam at `learning_rate`)."""
    import keras

    from kdistill.distiller import FeatureDistiller
    from kdistill.models import taps as taps_module

    if taps == "preset":
        taps = taps_module.preset(teacher, student)
    distiller = FeatureDistiller(teacher, student, taps={} if taps == "none" else taps, **distiller_options)
    distiller.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate), metrics=["accuracy"])
    return distiller


def train_student(
    teacher, splits: MaskSplits, recipe: dict | None, schedule, seed: int, verbose: int = 0, width: float = 0.35
):
    """A MobileNetV2 segmenter trained alone (`recipe` None) or distilled from `teacher` with `recipe` (FeatureDistiller options and
    `taps`, `kdistill.run.segmentation_commands.DEMO_RECIPE`) for as many steps as `schedule.student_epochs` epochs over the
    labelled images (fewer epochs when unlabelled images, masks all ignored, are added); Adam with one epoch of warm-up and
    cosine decay. `schedule`: its `student_epochs`, `batch_size` and `learning_rate` (a
    `kdistill.run.demo_settings.SegmentationDemoSettings`). Every seed's students start from the same weights. Returns the student."""
    import keras

    from kdistill.losses.dense import IGNORE_LABEL
    from kdistill.models import segmenters
    from kdistill.run import optimizers

    labelled = int((splits.train_masks.reshape(len(splits.train_masks), -1) != IGNORE_LABEL).any(axis=1).sum())
    # the student alone's number of steps
    epochs = max(1, round(schedule.student_epochs * labelled / len(splits.train_images)))
    steps = -(-len(splits.train_images) // schedule.batch_size)
    optimizer = optimizers.make_optimizer(
        "adam", schedule.learning_rate, schedule="cosine", warmup_epochs=1, epochs=epochs, steps_per_epoch=steps
    )
    keras.utils.set_random_seed(seed + 1)
    student = segmenters.get(
        "mobilenet_v2_segmenter", len(splits.class_names), tuple(splits.train_images.shape[1:]), width=width
    )
    if recipe is None:
        model = compile_alone(student, schedule.learning_rate, optimizer=optimizer)
    else:
        options = dict(recipe)
        model = build_distiller(teacher, student, options.pop("taps"), optimizer=optimizer, **options)
    keras.utils.set_random_seed(seed + 1)
    model.fit(splits.train_images, splits.train_masks, batch_size=schedule.batch_size, epochs=epochs, verbose=verbose)
    return student


def _teacher_and_data(config) -> tuple:
    """The teacher, from a file or a KerasHub DeepLabV3 preset (`keras_hub:FOLDER`, its own head, built at the data's size), and the data."""
    from kdistill.models import checks, hub, saving, segmenters

    if not isinstance(config.teacher, str):
        raise UserError(
            "Segmentation distils one teacher file: set teacher (--teacher saved_models/segmenter.keras); train one with "
            "`kdistill train-teacher --task segmentation --name conv_segmenter --data scenes`."
        )
    data = (config.data, config.data_dir, config.image_size, config.train_limit, config.test_limit, config.seed)
    if not hub.is_hub_name(config.teacher):
        teacher = saving.load_model(config.teacher, role="teacher", classifier=False)
        checks.check_segmenter(teacher, "teacher", why="the task is segmentation")
        return teacher, load(*data, int(teacher.outputs[0].shape[-1]), config.ignore_label)
    splits = load(*data, None, config.ignore_label)
    try:
        teacher = segmenters.get(config.teacher, None, tuple(splits.train_images.shape[1:]))
    except ValueError as error:
        raise UserError(str(error)) from error
    classes = int(teacher.outputs[0].shape[-1])
    if len(splits.class_names) > classes:
        raise UserError(
            f"The teacher {config.teacher!r} predicts {classes} classes but the data {config.data!r} has {len(splits.class_names)}: "
            f"train its head on this data first (`kdistill train-teacher --task segmentation --name {config.teacher}`)."
        )
    return teacher, splits._replace(
        class_names=list(splits.class_names) + [str(index) for index in range(len(splits.class_names), classes)]
    )


def distill(config, verbose: int = 2, restart: bool = False) -> dict:
    """A `kdistill distill` run on masks: the teacher, a student from `kdistill.segmenters`, test mIoU; the student saved in the run folder.

    Like a classification run (`kdistill.run.jobs.distill`) it locks its run folder, backs up every epoch to
    `<run folder>/backup/`, and the same config run again resumes from the last finished epoch (`restart`: start afresh);
    a folder holding a finished run (summary.json) is refused unless `restart`.
    """
    from kdistill.run import resume
    from kdistill.run.folder import run_folder

    output_dir = config.resolved_output_dir()
    if not restart:
        resume.refuse_finished_run(output_dir)
    with run_folder(output_dir):
        summary = _run(config, output_dir, verbose, restart)
    return summary


def _run(config, output_dir: str, verbose: int, restart: bool) -> dict:
    """Builds, trains (backed up each epoch, resumed from a backup), saves and evaluates the student; writes summary.json."""
    import keras

    from kdistill import files
    from kdistill.models import saving, segmenters
    from kdistill.run import interrupts, jobs, optimizers, resume
    from kdistill.segmentation_metrics import evaluate_segmenter

    teacher, splits = _teacher_and_data(config)
    splits, transfer = with_transfer_images(splits, config.transfer_data, config.ignore_label)
    jobs.remove_stale_partials(output_dir)
    width = {} if config.student_width is None else {"width": config.student_width}
    student = segmenters.get(
        config.student, int(teacher.outputs[0].shape[-1]), tuple(splits.train_images.shape[1:]), **width
    )
    steps = -(-len(splits.train_images) // config.batch_size)
    optimizer = optimizers.config_optimizer(config, steps)
    distiller = build_distiller(teacher, student, config.taps, optimizer=optimizer, **config.distiller_options())
    keras.utils.set_random_seed(config.seed)
    backup = resume.backup_callbacks(output_dir, config.to_dict(), restart)
    try:  # Keras shuffles the arrays each epoch: a resumed run reads its remaining epochs in another order than an uninterrupted one
        with interrupts.reporting_interrupts(backup.progress, resumable=True):
            distiller.fit(
                splits.train_images,
                splits.train_masks,
                batch_size=config.batch_size,
                epochs=config.epochs,
                verbose=verbose,
                callbacks=backup.callbacks,
            )
    finally:
        resume.drop_empty_history(backup.history_csv)
    history = resume.read_history_csv(backup.history_csv)
    student_path = saving.save_for_inference(distiller.student, os.path.join(output_dir, "student.keras"))
    report = evaluate_segmenter(
        distiller.student, splits.test_images, splits.test_masks, splits.class_names, ignore_label=config.ignore_label
    )
    files.write_json(os.path.join(output_dir, "test_report.json"), report)
    summary = {
        "config": config.to_dict(),
        "taps": distiller.taps,
        "student_path": student_path,
        "epochs_completed": len(history.get("epoch", [])),
        "resumed": backup.resuming,
        "transfer_images": transfer,
        "test": report,
    }
    files.write_json(os.path.join(output_dir, "history.json"), history)
    files.write_json(os.path.join(output_dir, "summary.json"), summary)
    return dict(summary, output_dir=output_dir)


def format_report(report: dict, name: str) -> str:
    """A segmentation report as text: mean IoU and pixel accuracy, then the IoU of each class."""
    percent = "-" if report["mean_iou"] is None else f"{100 * report['mean_iou']:.2f}"
    lines = [
        f"{name}: mean IoU {percent}%, pixel accuracy {100 * (report['pixel_accuracy'] or 0):.2f}% ({report['examples']} images)",
        "per-class IoU:",
    ]
    lines += [
        f"  {label:<14} {'-' if value is None else f'{100 * value:6.2f}'}"
        for label, value in report["per_class_iou"].items()
    ]
    return "\n".join(lines)
