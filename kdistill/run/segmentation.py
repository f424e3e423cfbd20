"""Segmentation from the command line: mask data, training a segmenter teacher, distilling, evaluating and exporting.

The task is segmentation when `--task segmentation` (`task: segmentation`) says so, when the data holds masks
(`--data scenes`, `--data masks:FOLDER`), or, for `evaluate` and `export`, when the saved model returns a logit map
(output rank 4); `kdistill.run.segmentation_commands.command` picks the route.

Data:
    scenes                      the offline synthetic scenes (`kdistill.data.load_scenes`) from the Fashion-MNIST files
                                in `--data-dir`; `--train-limit` / `--test-limit` scenes (default 2000 / 500) of `--image-size`
    masks:FOLDER                `FOLDER/images` and `FOLDER/masks` (PNG masks with the images' file names); a
                                `FOLDER/test/images` + `FOLDER/test/masks` pair is the test split, else the last fifth
    masks:IMAGES_DIR,MASKS_DIR  the same with the two folders named
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import numpy as np

from kdistill.errors import UserError

__all__ = [
    "TASKS",
    "MaskSplits",
    "is_mask_data",
    "resolve_task",
    "load",
    "train_teacher",
    "compile_alone",
    "add_unlabelled_scenes",
    "build_distiller",
    "train_student",
    "distill",
    "format_report",
]

logger = logging.getLogger(__name__)

TASKS = ("classification", "segmentation")  # the values of `task`
_SCENE_COUNTS = (2000, 500)  # training and test scenes when no limit is given


class MaskSplits(NamedTuple):
    """Images `(N, S, S, 3)` in [0, 255] and integer masks `(N, S, S)` of the training and test splits, and the class names."""

    train_images: np.ndarray
    train_masks: np.ndarray
    test_images: np.ndarray
    test_masks: np.ndarray
    class_names: list


def is_mask_data(data: str | None) -> bool:
    """Whether a data source holds masks: `scenes` or `masks:...`."""
    return isinstance(data, str) and (data == "scenes" or data.startswith("masks:"))


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


def _mask_folders(spec: str) -> tuple[tuple[str, str], tuple[str, str] | None]:
    """(images, masks) folders of the training split and of the test split (None: none) that `masks:...` names."""
    parts = spec[len("masks:") :].split(",")
    if len(parts) == 2:
        return (parts[0], parts[1]), None
    if len(parts) != 1 or not parts[0]:
        raise UserError(
            f"--data {spec!r}: write masks:FOLDER (with FOLDER/images and FOLDER/masks) or masks:IMAGES_DIR,MASKS_DIR."
        )
    folder = parts[0]
    test = os.path.join(folder, "test")
    has_test = os.path.isdir(os.path.join(test, "images"))
    return (os.path.join(folder, "images"), os.path.join(folder, "masks")), (
        (os.path.join(test, "images"), os.path.join(test, "masks")) if has_test else None
    )


def _class_names(folder: str, masks: np.ndarray, num_classes: int | None, ignore_label: int | None) -> list:
    """Names from `labels.txt` beside the masks folder, else the numbers `0..classes-1` (classes from the model or the masks)."""
    labels = os.path.join(os.path.dirname(os.path.normpath(folder)), "labels.txt")
    if os.path.exists(labels):
        with open(labels) as file:
            return [line.strip() for line in file if line.strip()]
    values = masks[masks != ignore_label] if ignore_label is not None else masks
    return [str(index) for index in range(num_classes or int(values.max()) + 1)]


def load(
    data: str,
    data_dir: str | None = None,
    image_size: int | None = 32,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
    num_classes: int | None = None,
    ignore_label: int | None = 255,
) -> MaskSplits:
    """The training and test images and masks that `data` names (`scenes` or `masks:...`, see the module docstring)."""
    from kdistill.data import load_scenes, read_mask_folders

    if data == "scenes":
        train, test = load_scenes(
            data_dir,
            train_count=train_limit or _SCENE_COUNTS[0],
            test_count=test_limit or _SCENE_COUNTS[1],
            size=image_size or 64,
            seed=seed,
        )
        return MaskSplits(train.images, train.masks, test.images, test.masks, train.class_names)
    if not is_mask_data(data):
        raise UserError(f"Segmentation reads masks: --data scenes or --data masks:FOLDER, received {data!r}.")
    (images_dir, masks_dir), test_dirs = _mask_folders(data)
    classes = num_classes or 256  # without a model the masks tell the classes (values up to 254, 255 the ignore label)
    images, masks, _ = read_mask_folders(images_dir, masks_dir, classes, image_size, ignore_label)
    if test_dirs is not None:
        test_images, test_masks, _ = read_mask_folders(*test_dirs, classes, image_size, ignore_label)
    else:
        order = np.random.default_rng(seed).permutation(len(images))
        cut = len(images) - max(1, len(images) // 5) if len(images) > 1 else len(images)
        images, masks, test_images, test_masks = (
            images[order[:cut]],
            masks[order[:cut]],
            images[order[cut:]],
            masks[order[cut:]],
        )
    names = _class_names(masks_dir, np.concatenate([masks, test_masks]), num_classes, ignore_label)
    images, masks = images[:train_limit] if train_limit else images, masks[:train_limit] if train_limit else masks
    return MaskSplits(
        images,
        masks,
        test_images[:test_limit] if test_limit else test_images,
        test_masks[:test_limit] if test_limit else test_masks,
        names,
    )


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


def add_unlabelled_scenes(
    splits: MaskSplits, count: int, data_dir: str | None = None, seed: int = 100, ignore_label: int = 255
) -> MaskSplits:
    """`splits` with `count` more training scenes whose masks are all `ignore_label`: a transfer set that only a teacher labels.

    The scenes are drawn from the Fashion-MNIST training items with their own `seed` (other scenes than the labelled ones).
    An image without a valid pixel gets no cross-entropy and is distilled over all its pixels (`kdistill.losses.dense`).
    """
    from kdistill.data import load_scenes

    if count <= 0:
        return splits
    extra = load_scenes(data_dir, train_count=count, test_count=1, size=splits.train_images.shape[1], seed=seed)[0]
    masks = np.full(extra.masks.shape, ignore_label, splits.train_masks.dtype)
    return splits._replace(
        train_images=np.concatenate([splits.train_images, extra.images]),
        train_masks=np.concatenate([splits.train_masks, masks]),
    )


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
