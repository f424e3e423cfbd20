"""End-to-end jobs shared by the CLI and notebooks: train a teacher, distil, run the demo.

Each function writes into a run folder and returns what it measured; the CLI
only parses arguments and calls these.

Example:
    >>> from kdistill import recipes
    >>> recipes.DEMO_QUICK["student"]
    'mobilenet_v2'
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from kdistill import _model_io
from kdistill import data as data_module
from kdistill import callbacks, distribute, evaluation, export, plots, precision, students, teacher_cache, teachers
from kdistill import taps as taps_module
from kdistill.config import DistillConfig
from kdistill.distiller import FeatureDistiller

__all__ = ["load_data", "train_teacher", "train_student", "distill", "demo", "DEMO_QUICK", "DEMO_FULL", "format_table"]

logger = logging.getLogger(__name__)

#: the default demo: fits in the 20-minute budget on a 2-core CPU.
DEMO_QUICK = {
    "train_limit": 10_000,
    "teacher_epochs": 4,
    "student_epochs": 5,
    "student": "mobilenet_v2",
    "student_width": 0.35,
    "alpha": 0.9,
    "temperature": 4.0,
    "feature_loss": "normalized_mse",
    "tap_weight": 10.0,
    "batch_size": 64,
    "export": True,
}
#: `kdistill demo --full`: all 54,000 training images, longer schedules.
DEMO_FULL = dict(DEMO_QUICK, train_limit=None, teacher_epochs=10, student_epochs=15)


def load_data(config: DistillConfig) -> data_module.Splits:
    """Pipelines for a run config."""
    return data_module.load(
        config.data, data_dir=config.data_dir, image_size=config.image_size, batch_size=config.batch_size,
        train_limit=config.train_limit, test_limit=config.test_limit, augment=config.augment, seed=config.seed,
    )


def _optimizer(name: str, learning_rate: float, weight_decay: float | None = None, decay_epochs=(), steps_per_epoch: int | None = None):
    """Adam / SGD (momentum 0.9) / AdamW, with an optional step decay (x0.1 at each of `decay_epochs`)."""
    optimizers = {"adam": keras.optimizers.Adam, "sgd": lambda **kw: keras.optimizers.SGD(momentum=0.9, **kw), "adamw": keras.optimizers.AdamW}
    if name not in optimizers:
        raise ValueError(f"Unknown optimizer {name!r}; known: {', '.join(optimizers)}.")
    rate = learning_rate
    if decay_epochs:
        if not steps_per_epoch:
            raise ValueError("A learning-rate decay by epoch needs the number of steps per epoch.")
        # The first step of epoch e (counting from 0) is step e * steps_per_epoch; it uses the decayed rate.
        boundaries = [int(epoch) * steps_per_epoch - 1 for epoch in sorted(decay_epochs)]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, [learning_rate * 0.1**i for i in range(len(boundaries) + 1)])
    kwargs = {"weight_decay": weight_decay} if weight_decay else {}
    return optimizers[name](learning_rate=rate, **kwargs)


def _label_loss(splits: data_module.Splits, augment) -> str:
    mixes = any(a in ("mixup", "cutmix") for a in augment)
    return "categorical_crossentropy" if mixes else "sparse_categorical_crossentropy"


def _write_json(path: str, value) -> None:
    with open(path, "w") as handle:
        json.dump(value, handle, indent=2, default=float)


#: the teacher recipe measured stable on the offline data (see benchmarks/teacher.py and the README)
TEACHER_RECIPE = {"optimizer": "adam", "learning_rate": 1e-3, "warmup_epochs": 1, "schedule": "cosine", "weight_decay": None}


_MIN_CHANCE_CHECK_IMAGES = 100


def teacher_optimizer(optimizer: str = "adam", learning_rate: float | None = None, epochs: int = 1, steps_per_epoch: int = 1,
                      warmup_epochs: float = 1, schedule: str = "cosine", weight_decay: float | None = None):
    """The teacher's optimizer: linear warm-up then cosine decay to zero (or a constant rate).

    Args:
        optimizer: "sgd" (momentum 0.9), "adam" or "adamw".
        learning_rate: peak rate; None picks 0.05 for SGD and 1e-3 otherwise.
        epochs, steps_per_epoch: the schedule's length.
        warmup_epochs: epochs of linear warm-up from 0 (may be fractional; 0 for none).
        schedule: "cosine" or "constant".
        weight_decay: decoupled weight decay, or None.
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', received {schedule!r}.")
    peak = learning_rate if learning_rate is not None else (0.05 if optimizer == "sgd" else 1e-3)
    total = max(1, int(epochs * steps_per_epoch))
    warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(0.0 if warmup else peak, decay_steps=max(1, total - warmup), alpha=0.0,
                                                      warmup_target=peak if warmup else None, warmup_steps=warmup)
    else:
        rate = peak
    return _make_optimizer(optimizer, rate, weight_decay)


def _make_optimizer(name: str, rate, weight_decay: float | None):
    optimizers = {"adam": keras.optimizers.Adam, "sgd": lambda **kw: keras.optimizers.SGD(momentum=0.9, nesterov=True, **kw), "adamw": keras.optimizers.AdamW}
    if name not in optimizers:
        raise ValueError(f"Unknown optimizer {name!r}; known: {', '.join(optimizers)}.")
    kwargs = {"weight_decay": weight_decay} if weight_decay else {}
    return optimizers[name](learning_rate=rate, **kwargs)


def train_teacher(splits: data_module.Splits, output_path: str, epochs: int = 4, weights: str | None = None, learning_rate: float | None = None,
                  name: str = "resnet50", augment=(), verbose: int = 1, optimizer: str = TEACHER_RECIPE["optimizer"],
                  warmup_epochs: float = TEACHER_RECIPE["warmup_epochs"], schedule: str = TEACHER_RECIPE["schedule"],
                  weight_decay: float | None = TEACHER_RECIPE["weight_decay"], resize_to: int | None = None,
                  callbacks_: list | None = None) -> tuple[keras.Model, dict]:
    """Trains a ResNet teacher on `splits`, keeps its best epoch and saves it to `output_path` (.keras).

    The recipe (Adam, peak rate 1e-3 after one epoch of linear warm-up, cosine
    decay to zero, BatchNorm momentum 0.9) replaced a flat Adam 1e-3, which let
    a 54,000-image run collapse to chance in its last epoch; SGD with momentum
    (peak 0.05 or 0.01) diverged in validation here (benchmarks/teacher.py). With validation data the weights of
    the best epoch by validation accuracy are kept (`callbacks.KeepBestEpoch`),
    a last epoch far below the best is reported, and a teacher no better than
    chance raises `callbacks.ChanceLevelError` instead of being saved.

    Args:
        splits: data (`kdistill.data.load`).
        output_path: the `.keras` file to write.
        epochs: training epochs.
        weights: None, "imagenet" or a path (see `kdistill.teachers.get`).
        learning_rate: peak rate (None: 0.05 for SGD, 1e-3 for Adam).
        name: "resnet50", "resnet101" or "resnet152".
        augment: the augmentations the pipeline applies (mixup/cutmix need one-hot labels).
        verbose: Keras progress bars.
        optimizer, warmup_epochs, schedule, weight_decay: see `teacher_optimizer`.
        resize_to: upsample inputs inside the teacher (see `kdistill.teachers.get`).
        callbacks_: extra Keras callbacks.

    Returns:
        `(teacher, history dict)`; the history also holds `best_epoch` (counting from 0).
    """
    teacher = teachers.get(name, num_classes=splits.num_classes, input_shape=splits.image_shape, weights=weights, resize_to=resize_to)
    steps = -(-splits.counts["train"] // _batch_size(splits.train))
    mixes = any(a in ("mixup", "cutmix") for a in augment)
    teacher.compile(
        optimizer=teacher_optimizer(optimizer, learning_rate, epochs, steps, warmup_epochs, schedule, weight_decay),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True) if mixes else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    run_callbacks = list(callbacks_ or [])
    keep = None
    if splits.validation is not None:
        # Below ~100 validation images chance and learning cannot be told apart; the best epoch is still kept.
        checkable = splits.counts.get("validation", 0) >= _MIN_CHANCE_CHECK_IMAGES
        if not checkable:
            logger.warning("Only %d validation images: too few to check that the teacher beats chance.", splits.counts.get("validation", 0))
        keep = callbacks.KeepBestEpoch(chance_level=1.0 / splits.num_classes if checkable else None)
        run_callbacks.append(keep)
    history = teacher.fit(splits.train, validation_data=splits.validation, epochs=epochs, verbose=verbose, shuffle=False, callbacks=run_callbacks).history
    if keep is not None:
        history["best_epoch"] = keep.best_epoch
    os.makedirs(os.path.dirname(output_path) or ".", exist_ok=True)
    _model_io.save_for_inference(teacher, output_path)
    return teacher, history


def _batch_size(dataset) -> int:
    """The batch size of a batched tf.data pipeline (its first dimension), 64 if unknown."""
    size = dataset.element_spec[0].shape[0] if isinstance(dataset.element_spec, tuple) else None
    if size is None:
        for images, _ in dataset.take(1):
            return int(images.shape[0])
        return 64
    return int(size)


def _build_student(name: str, splits: data_module.Splits, width: float | None, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    kwargs = {"width": width} if width is not None and name.startswith("mobilenet") else {}
    return students.get(name, num_classes=splits.num_classes, input_shape=splits.image_shape, **kwargs)


def train_student(splits: data_module.Splits, student: keras.Model, epochs: int, learning_rate: float = 1e-3, optimizer: str = "adam", verbose: int = 1, callbacks=None) -> dict:
    """Trains a student on labels alone (the baseline distillation must beat)."""
    student.compile(optimizer=_optimizer(optimizer, learning_rate), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return student.fit(splits.train, validation_data=splits.validation, epochs=epochs, verbose=verbose, callbacks=callbacks, shuffle=False).history


def _read_history_csv(path: str) -> dict:
    """History from CSVLogger's file, one row per epoch (the last row wins if an epoch was logged twice)."""
    import csv

    if not os.path.exists(path):
        return {}
    with open(path, newline="") as handle:
        rows = {int(row["epoch"]): row for row in csv.DictReader(handle)}
    history: dict = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            history.setdefault(key, []).append(int(value) if key == "epoch" else float(value))
    return history


def _cached_training_data(config: DistillConfig, splits: data_module.Splits, teacher: keras.Model, layers: list, verbose: int):
    """Training batches with the teacher's outputs read from `config.teacher_cache` (built there on first use)."""
    teacher_cache.check_augmentation(config.augment)
    if splits.train_plain is None:
        raise ValueError(f"The teacher cache needs a source read into arrays (fashion_mnist, an image folder); {config.data!r} is not.")
    try:
        cache = teacher_cache.load(config.teacher_cache, teacher, layers, dataset=splits.train_plain)
        logger.info("Reading the teacher's outputs from %s", config.teacher_cache)
    except FileNotFoundError:
        logger.info("Computing the teacher's outputs once into %s", config.teacher_cache)
        cache = teacher_cache.build(teacher, layers, splits.train_plain, config.teacher_cache, verbose=min(verbose, 1))
    return cache.dataset(config.batch_size, shuffle=True, seed=config.seed, layers=layers)


def _resolve_taps(config: DistillConfig, teacher: keras.Model, student: keras.Model) -> dict:
    if isinstance(config.taps, dict):
        return dict(config.taps)
    if config.taps == "none":
        return {}
    return taps_module.preset(teacher, student)


def distill(config: DistillConfig, splits: data_module.Splits | None = None, teacher: keras.Model | None = None, verbose: int = 1) -> dict:
    """Runs one distillation from a config and writes the run folder.

    Writes `student.keras`, `best_student.keras` (best validation accuracy),
    `history.json`/`history.csv` and `summary.json` (config, taps, projections,
    test metrics, wall time) into `config.resolved_output_dir()`.

    Survives a crash: weights and optimizer state are backed up to
    `<run folder>/backup/` after every epoch, and running the same config
    again resumes from the last finished epoch (the backup is removed when
    the run completes). Training stops with `NonFiniteLossError`, naming the
    term, if the loss becomes NaN or infinite. In a multi-worker run only the
    chief writes the run folder (see `kdistill.distribute.is_chief`).

    Returns:
        The summary dict.
    """
    start = time.perf_counter()
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow initialises its devices (e.g. for the data).
    strategy = distribute.get_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    # The other workers of a multi-worker run train in step with the chief; their copies of the files go to a folder they remove.
    output_dir = config.resolved_output_dir() if chief else tempfile.mkdtemp(prefix="kdistill-worker-")
    os.makedirs(output_dir, exist_ok=True)
    splits = splits or load_data(config)
    if teacher is None:
        if not config.teacher:
            raise ValueError("A distillation needs a teacher: set `teacher: PATH` (train one with `kdistill train-teacher`).")
        teacher = teachers.load(config.teacher)
    with strategy.scope(), precision.policy_scope(config.precision):
        # Everything trainable, the optimizer and the metrics are made inside the strategy's scope.
        teacher = precision.cast_model(teacher, config.precision) if config.precision != "float32" else teacher
        student = _build_student(config.student, splits, config.student_width, config.seed)
        distiller = FeatureDistiller(
            teacher, student, taps=_resolve_taps(config, teacher, student), feature_loss=config.feature_loss, logits_loss=config.logits_loss,
            temperature=config.temperature, alpha=config.alpha, tap_weights=config.tap_weights, review=config.review,
        )
        steps = -(-splits.counts["train"] // config.batch_size)
        optimizer = _optimizer(config.optimizer, config.learning_rate, config.weight_decay, config.lr_decay_epochs, steps)
        distiller.compile(optimizer=optimizer, loss=_label_loss(splits, config.augment), metrics=["accuracy"])
    train = splits.train
    if config.teacher_cache:
        train = _cached_training_data(config, splits, teacher, list(distiller.taps), verbose)
    history_csv = os.path.join(output_dir, "history.csv")
    backup_dir = os.path.join(output_dir, "backup")
    resuming = os.path.exists(os.path.join(backup_dir, "training_metadata.json"))
    if resuming:
        logger.info("Resuming the interrupted run from %s", backup_dir)
    elif os.path.exists(history_csv):
        os.remove(history_csv)  # a finished earlier run in this folder: start its history afresh
    run_callbacks = [
        # Backs up weights and optimizer state after every epoch; the same command resumes after a crash.
        keras.callbacks.BackupAndRestore(backup_dir),
        keras.callbacks.CSVLogger(history_csv, append=True),
        callbacks.StopOnNonFiniteLoss(),
    ]
    if splits.validation is not None:
        run_callbacks.append(callbacks.BestStudentCheckpoint(os.path.join(output_dir, "best_student.keras")))
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Keras' fit fails under this strategy (see kdistill.distribute); no per-epoch backup here.
        history = distribute.fit(distiller, train, epochs=config.epochs, strategy=strategy, verbose=verbose)
        history["epoch"] = list(range(config.epochs))
    else:
        distiller.fit(train, validation_data=splits.validation, epochs=config.epochs, verbose=verbose, callbacks=run_callbacks, shuffle=False)
        history = _read_history_csv(history_csv)
    student_path = os.path.join(output_dir, "student.keras")
    _model_io.save_for_inference(distiller.student, student_path)
    summary = {
        "config": config.to_dict(),
        "taps": distiller.taps,
        "projections": [dict(row, teacher_shape=list(row["teacher_shape"]), student_shape=list(row["student_shape"])) for row in distiller.projection_summary()],
        "student_path": student_path,
        "epochs_completed": len(history.get("epoch", [])),
        "resumed": resuming,
        "replicas": int(strategy.num_replicas_in_sync),
    }
    if splits.test is not None and chief:  # the other workers' scores would be the chief's again
        summary["test"] = evaluation.evaluate(distiller.student, splits.test, splits.class_names)
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    _write_json(os.path.join(output_dir, "history.json"), history)
    _write_json(os.path.join(output_dir, "summary.json"), summary)
    if not chief:
        shutil.rmtree(output_dir, ignore_errors=True)
        summary["student_path"] = None
    return summary


def format_table(rows: list[dict]) -> str:
    """A plain-text table of model results (name, top1, top5, parameters, size, images/s)."""
    header = f"{'model':<22} {'top-1':>7} {'top-5':>7} {'params':>11} {'size MB':>8} {'images/s':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        top5 = f"{100 * row['top5']:.2f}" if "top5" in row else "-"
        lines.append(f"{row['name']:<22} {100 * row['top1']:>7.2f} {top5:>7} {row['parameters']:>11,} {row['size_mb']:>8.2f} {row['images_per_second']:>9.0f}")
    return "\n".join(lines)


def demo(output_dir: str = os.path.join("saved_models", "demo"), full: bool = False, data_dir: str | None = None, seed: int = 0,
         overrides: dict | None = None, verbose: int = 1, retrain_teacher: bool = False) -> dict:
    """The main job on the offline Fashion-MNIST: teacher, student alone, distilled student.

    Trains (or reuses) a ResNet50 teacher at 32x32, trains the same student
    twice from the same initial weights (labels alone; labels + teacher
    features and logits), evaluates all three on the test set, and writes
    `summary.json`, `curves.png`, `comparison.png` and the three models into
    `output_dir`; then exports the distilled student to `output_dir/export/`
    (SavedModel in TF Serving's layout, int8 and int16x8 TFLite) with a parity report.

    Args:
        output_dir: run folder.
        full: the longer schedule (`DEMO_FULL`) instead of `DEMO_QUICK`.
        data_dir: where the Fashion-MNIST files are (see `kdistill.data`).
        seed: seed of data order and initialisation.
        overrides: replaces entries of the schedule (tests use tiny settings).
        verbose: Keras progress bars (1) or none (0).
        retrain_teacher: train a new teacher even if `output_dir/teacher.keras` exists.

    Returns:
        The summary: schedule, a row per model, wall time per stage.
    """
    settings = dict(DEMO_FULL if full else DEMO_QUICK, **(overrides or {}))
    os.makedirs(output_dir, exist_ok=True)
    timings = {}
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    splits = data_module.load("fashion_mnist", data_dir=data_dir, image_size=32, batch_size=settings["batch_size"],
                              train_limit=settings["train_limit"], test_limit=settings.get("test_limit"), seed=seed)
    logger.info("Fashion-MNIST: %s", splits.counts)

    teacher_path = os.path.join(output_dir, "teacher.keras")
    stage = time.perf_counter()
    teacher_meta_path = os.path.join(output_dir, "teacher.json")
    teacher_meta = {"train_limit": settings["train_limit"], "epochs": settings["teacher_epochs"], "seed": seed, "recipe": TEACHER_RECIPE}
    reuse = not retrain_teacher and os.path.exists(teacher_path) and os.path.exists(teacher_meta_path) and json.load(open(teacher_meta_path)) == teacher_meta
    if reuse:
        teacher = teachers.load(teacher_path)
        teacher_history = {}
        logger.info("Reusing the teacher in %s", teacher_path)
    else:
        logger.info("Training the ResNet50 teacher (%d epochs on %d images)", settings["teacher_epochs"], splits.counts["train"])
        teacher, teacher_history = train_teacher(splits, teacher_path, epochs=settings["teacher_epochs"], verbose=verbose)
        _write_json(teacher_meta_path, teacher_meta)
    timings["teacher"] = round(time.perf_counter() - stage, 1)

    stage = time.perf_counter()
    logger.info("Training the student alone (%d epochs)", settings["student_epochs"])
    student_alone = _build_student(settings["student"], splits, settings["student_width"], seed)
    initial_weights = student_alone.get_weights()
    alone_history = train_student(splits, student_alone, settings["student_epochs"], verbose=verbose)
    alone_path = os.path.join(output_dir, "student_alone.keras")
    _model_io.save_for_inference(student_alone, alone_path)
    timings["student_alone"] = round(time.perf_counter() - stage, 1)

    stage = time.perf_counter()
    logger.info("Distilling the teacher into the same student (%d epochs)", settings["student_epochs"])
    student = _build_student(settings["student"], splits, settings["student_width"], seed)
    student.set_weights(initial_weights)  # the same starting point as the baseline
    distiller = FeatureDistiller(
        teacher, student, taps=taps_module.preset(teacher, student), feature_loss=settings["feature_loss"], logits_loss="kl",
        temperature=settings["temperature"], alpha=settings["alpha"], tap_weights=settings["tap_weight"],
    )
    distiller.compile(optimizer=_optimizer("adam", 1e-3), metrics=["accuracy"])
    distilled_history = distiller.fit(splits.train, validation_data=splits.validation, epochs=settings["student_epochs"], verbose=verbose, shuffle=False).history
    distilled_path = os.path.join(output_dir, "student_distilled.keras")
    _model_io.save_for_inference(distiller.student, distilled_path)
    timings["student_distilled"] = round(time.perf_counter() - stage, 1)

    stage = time.perf_counter()
    logger.info("Evaluating the three models on %d test images", splits.counts["test"])
    rows = []
    for name, model, path in (("teacher (ResNet50)", teacher, teacher_path), ("student alone", student_alone, alone_path), ("distilled student", distiller.student, distilled_path)):
        report = evaluation.evaluate(model, splits.test, splits.class_names)
        rows.append(dict(report, name=name))
    timings["evaluation"] = round(time.perf_counter() - stage, 1)

    exported = None
    if settings["export"]:
        stage = time.perf_counter()
        logger.info("Exporting the distilled student (SavedModel, int8 and int16x8 TFLite) and checking them against Keras")
        exported = export.export_all(distiller.student, os.path.join(output_dir, "export"), formats=("saved_model", "int8", "int16x8"),
                                     representative=splits.validation if splits.validation is not None else splits.train, test=splits.test)
        timings["export"] = round(time.perf_counter() - stage, 1)

    histories = {"student alone": alone_history, "distilled student": distilled_history}
    if teacher_history:
        histories["teacher (ResNet50)"] = teacher_history
    curves = plots.training_curves(histories, os.path.join(output_dir, "curves.png"))
    comparison = plots.comparison(rows, os.path.join(output_dir, "comparison.png"))
    timings["total"] = round(time.perf_counter() - start, 1)
    summary = {
        "settings": settings,
        "data": splits.counts,
        "taps": distiller.taps,
        "projections": [row["projection"] for row in distiller.projection_summary()],
        "results": rows,
        "distillation_gain_top1": rows[2]["top1"] - rows[1]["top1"],
        "seconds": timings,
        "teacher_reused": reuse,
        "figures": [curves, comparison],
        "table": format_table(rows),
    }
    if exported is not None:
        summary["export"] = exported["report"]
        summary["export_table"] = export.format_report(exported["report"])
    _write_json(os.path.join(output_dir, "summary.json"), summary)
    _write_json(os.path.join(output_dir, "histories.json"), histories)
    return summary
