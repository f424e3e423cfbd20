"""The distillation job shared by the CLI and notebooks: load the teacher and the data, distil, evaluate, export.

A teacher is trained by `kdistill.run.training.train_teacher` and the demo runs
in `kdistill.run.demo`. Each job writes into a run folder and returns what it
measured; the CLI only parses arguments and calls these.

Example:
    >>> from kdistill.run import jobs
    >>> callable(jobs.distill)
    True
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

import keras

from kdistill import data as data_module
from kdistill import evaluation, files, quantize
from kdistill.distiller import FeatureDistiller
from kdistill.errors import ChanceLevelError, UserError
from kdistill.models import checks, saving, teachers
from kdistill.models import taps as taps_module
from kdistill.run import callbacks, distribute, precision, resume, teacher_cache, training
from kdistill.run.config import DistillConfig
from kdistill.run.folder import run_folder

__all__ = ["load_teacher", "check_teacher", "load_data", "distill"]

logger = logging.getLogger(__name__)

def load_data(config: DistillConfig) -> data_module.Splits:
    """Pipelines for a run config."""
    return data_module.load(
        config.data, data_dir=config.data_dir, image_size=config.image_size, batch_size=config.batch_size,
        train_limit=config.train_limit, test_limit=config.test_limit, augment=config.augment, seed=config.seed,
        transfer=config.transfer_data, skip_unreadable=config.skip_unreadable,
    )


def _cached_training_data(config: DistillConfig, splits: data_module.Splits, teacher: keras.Model, layers: list, verbose: int):
    """Training batches with the teacher's outputs read from `config.teacher_cache` (built there on first use).

    With `augment` (crop, flip, mixup, cutmix) the cache holds `config.cache_views` views per image and training replays them.
    """
    if config.augment and not config.cache_views:
        teacher_cache.check_augmentation(config.augment)  # explains --cache-views
    if splits.train_plain is None:
        raise ValueError(f"The teacher cache needs a source read into arrays (fashion_mnist, an image folder); {config.data!r} is not.")
    # What made the training images: a refused cache names the one that changed (e.g. another --seed draws another split).
    source = {key: getattr(config, key) for key in ("data", "data_dir", "seed", "train_limit", "image_size", "transfer_data")}
    try:
        cache = teacher_cache.load(config.teacher_cache, teacher, layers, dataset=splits.train_plain, source=source)
        stored = (cache.views, sorted(cache.meta.get("augment", [])), cache.top_k)
        wanted = (config.cache_views if config.augment else 0, sorted(config.augment), config.cache_top_k)
        if stored != wanted:
            raise teacher_cache.StaleCacheError(
                f"The teacher cache in {config.teacher_cache!r} holds {stored[0]} view(s) per image for augment {stored[1]} with top-k logits "
                f"{stored[2]}; this run asks for {wanted[0]} for {wanted[1]} with {wanted[2]} (other --cache-views, --augment or --cache-top-k). "
                f"{teacher_cache.rebuild_hint(config.teacher_cache)}")
        logger.info("Reading the teacher's outputs from %s", config.teacher_cache)
    except FileNotFoundError:
        logger.info("Computing the teacher's outputs once into %s", config.teacher_cache)
        cache = teacher_cache.build(teacher, layers, splits.train_plain, config.teacher_cache, verbose=min(verbose, 1),
                                    augment=config.augment, views=config.cache_views if config.augment else 0, seed=config.seed, source=source,
                                    top_k=config.cache_top_k)
    return cache.dataset(config.batch_size, shuffle=True, seed=config.seed, layers=layers)


def load_teacher(config: DistillConfig) -> keras.Model:
    """The config's teacher; a list of files becomes one ensemble, each member named after its file."""
    if not config.teacher:
        raise ValueError("A distillation needs a teacher: set `teacher: PATH` (train one with `kdistill train-teacher`).")
    shape = (config.image_size, config.image_size, 3)  # the input size of a KerasHub preset
    paths = [config.teacher] if isinstance(config.teacher, str) else [str(path) for path in config.teacher]
    if len(paths) == 1:  # `teacher: [one.keras]` is that teacher
        if config.teacher_weights is not None:
            raise ValueError("teacher_weights weighs several teachers: give `teacher` as a list of two or more files.")
        return teachers.load(paths[0], input_shape=shape)
    _check_member_files(paths)
    members = []
    for path in config.teacher:
        member = teachers.load(str(path), input_shape=shape)
        member.name = os.path.splitext(os.path.basename(str(path)))[0]  # taps address it as '<file stem>/<layer>'
        members.append(member)
    return teachers.ensemble(members, weights=config.teacher_weights, temperature=config.temperature)


def _check_member_files(paths: list) -> None:
    """An ensemble's files: each once, with different file names (taps address a member as '<file stem>/<layer>')."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    for index, stem in enumerate(stems):
        if stem in stems[:index]:
            first = paths[stems.index(stem)]
            same = os.path.realpath(first) == os.path.realpath(paths[index])
            raise UserError(f"The teacher list names {first!r} twice: give each teacher file once." if same else
                            f"The teacher files {first!r} and {paths[index]!r} have the same name {stem!r}, and an ensemble names each member "
                            "after its file (taps read '<file stem>/<layer>'): copy or link one under another name (e.g. "
                            f"{stem}_b{os.path.splitext(paths[index])[1]}) and list that.")


#: validation images measured by `check_teacher`, and the fewest that can tell chance from learning
_TEACHER_CHECK_IMAGES, _TEACHER_CHECK_MINIMUM = 1000, 100


def check_teacher(teacher: keras.Model, splits: data_module.Splits, margin: float = 0.05) -> float | None:
    """Top-1 of the teacher on up to 1,000 validation images; raises when it is no better than chance.

    A teacher that collapsed in training distils chance-level students
    (`benchmarks/README.md`, "Notes behind defaults"), so this runs before any
    distillation. With fewer than 100 validation images it only logs.

    Returns:
        The measured top-1, or None when there is no validation split.

    Raises:
        kdistill.errors.ChanceLevelError: top-1 within `margin` of 1 / classes.
    """
    if splits.validation is None:
        return None
    correct = seen = 0
    for images, labels in splits.validation:
        predictions = keras.ops.convert_to_numpy(teacher(images, training=False)).argmax(-1)
        correct += int((predictions == keras.ops.convert_to_numpy(labels).reshape(-1)).sum())
        seen += len(predictions)
        if seen >= _TEACHER_CHECK_IMAGES:
            break
    top1, chance = correct / max(seen, 1), 1.0 / splits.num_classes
    if seen < _TEACHER_CHECK_MINIMUM:
        logger.warning("Only %d validation images: too few to check the teacher (top-1 %.1f %%).", seen, 100 * top1)
    elif top1 <= chance + margin:
        raise ChanceLevelError(
            f"The teacher reaches {100 * top1:.1f} % top-1 on {seen} validation images, no better than chance ({100 * chance:.1f} %): "
            "distilling it would teach the student nothing. Retrain it (kdistill train-teacher keeps its best epoch) or pass "
            "--no-check-teacher (config check_teacher: false) to go on anyway."
        )
    else:
        logger.info("Teacher top-1 on %d validation images: %.1f %%", seen, 100 * top1)
    return top1


def remove_stale_partials(output_dir: str) -> list[str]:
    """Removes the unfinished model files a killed run left in its run folder (their writer's process is gone)."""
    removed = []
    for name in ("student.keras", "best_student.keras"):
        removed += files.remove_stale_staging(output_dir, files.partial_prefix(name))
    return removed


def _has_accelerator() -> bool:
    """Whether the Keras backend sees a GPU (or TPU)."""
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
    if name == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if name == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def _warn_about_precision(policy: str) -> None:
    if policy == "mixed_float16" and not _has_accelerator():
        logger.warning("precision mixed_float16 on a CPU: CPUs have no fast float16 arithmetic, so this runs much slower than "
                       "float32. Use float32, or mixed_bfloat16 on a CPU with bfloat16 support; mixed_float16 is for GPUs.")


def distill(config: DistillConfig, splits: data_module.Splits | None = None, teacher: keras.Model | None = None, verbose: int = 1,
            restart: bool = False, extra_callbacks: list | None = None) -> dict:
    """Runs one distillation from a config and writes the run folder.

    Writes `student.keras` (the last epoch's), `best_student.keras` (best
    validation accuracy: the one to export), `history.json`/`history.csv` and
    `summary.json` (config, taps, projections, test metrics of the best student
    where there is one, wall time) into `config.resolved_output_dir()`. A
    folder that holds a finished run is refused unless `restart`.

    Survives a crash: weights and optimizer state are backed up to
    `<run folder>/backup/` after every epoch, and running the same config
    again resumes from the last finished epoch (the backup is removed when
    the run completes); Ctrl-C raises `kdistill.errors.Interrupted` naming the
    epoch. Training stops with `NonFiniteLossError`, naming the term, if the
    loss becomes NaN or infinite. The run folder is locked while the run uses
    it (`run_folder`): a second run into it is refused with the holder's pid.
    A run refused by a check leaves no empty folder. In a multi-worker run
    only the chief writes the run folder (see `kdistill.run.distribute.is_chief`).

    Args:
        config: the run's settings.
        splits: data (default: `load_data(config)`).
        teacher: the teacher (default: loaded from `config.teacher`).
        verbose: Keras progress bars.
        restart: discard the backup of an interrupted run instead of resuming it, or train again over a finished run.
        extra_callbacks: your own Keras callbacks, run after kdistill's.

    Returns:
        The summary dict.
    """
    start = time.perf_counter()
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow initialises its devices (e.g. for the data).
    strategy = distribute.get_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    # The other workers of a multi-worker run train in step with the chief; their copies of the files go to a folder they remove.
    output_dir = config.resolved_output_dir() if chief else tempfile.mkdtemp(prefix="kdistill-worker-")
    _warn_about_precision(config.precision)
    if chief and not restart:
        resume.refuse_finished_run(output_dir)
    if config.teacher_cache:
        teacher_cache.check_writable(config.teacher_cache)  # found only when writing, naming a staging folder, after all the work
    with run_folder(output_dir):
        splits = splits or load_data(config)
        if teacher is None:
            teacher = load_teacher(config)
        checks.check_image_shape("training", splits.image_shape, teacher)
        if config.check_teacher:
            check_teacher(teacher, splits)
        remove_stale_partials(output_dir)
        distiller, teacher = _build_distiller(config, splits, teacher, strategy)
        train = splits.train
        if config.teacher_cache:
            train = _cached_training_data(config, splits, teacher, list(distiller.taps), verbose)
        history, resuming = _fit(distiller, config, splits, train, output_dir, strategy, verbose=verbose, restart=restart,
                                 extra_callbacks=extra_callbacks)
        summary = _finish(distiller, config, splits, output_dir, history, strategy, resuming)
        summary["wall_seconds"] = round(time.perf_counter() - start, 1)
        files.write_json(os.path.join(output_dir, "summary.json"), summary)
    if not chief:
        shutil.rmtree(output_dir, ignore_errors=True)
        summary["student_path"] = None
    return summary


def _build_distiller(config: DistillConfig, splits: data_module.Splits, teacher: keras.Model, strategy) -> tuple[FeatureDistiller, keras.Model]:
    """The compiled distiller and its teacher (in the run's precision), made inside the strategy's scope with everything trainable."""
    with strategy.scope(), precision.policy_scope(config.precision):
        teacher = precision.cast_model(teacher, config.precision) if config.precision != "float32" else teacher
        student = training.build_student(config.student, splits, config.student_width, config.seed, weights=config.student_weights,
                                         image_size=config.student_image_size)
        if config.quantize:
            if not config.student_weights:
                logger.warning("quantize: int8 without student_weights fine-tunes a random student; start from a trained float "
                               "student (student_weights: <run>/student.keras) for int8 that keeps its accuracy.")
            # The first training batch sets every activation range; BatchNormalization statistics are frozen and folded.
            student = quantize.quantize_model(student)
        distiller = FeatureDistiller(teacher, student, taps=taps_module.resolve(config.taps, teacher, student), **config.distiller_options())
        steps = -(-(splits.counts["train"] + splits.counts.get("transfer", 0)) // config.batch_size)
        optimizer = training.make_optimizer(config.optimizer, config.learning_rate, config.weight_decay, config.lr_decay_epochs, steps,
                                            schedule=config.schedule, warmup_epochs=config.warmup_epochs, epochs=config.epochs,
                                            global_clipnorm=config.global_clipnorm)
        distiller.compile(optimizer=optimizer, loss=training.label_loss(config.augment), metrics=["accuracy"])
    return distiller, teacher


def _fit(distiller: FeatureDistiller, config: DistillConfig, splits: data_module.Splits, train, output_dir: str, strategy, verbose: int,
         restart: bool, extra_callbacks: list | None) -> tuple[dict, bool]:
    """Trains with kdistill's callbacks (backup, data order, history, non-finite stop, best student); returns (history, resumed)."""
    backup = resume.backup_callbacks(output_dir, config.to_dict(), restart)
    history_csv, resuming, progress = backup.history_csv, backup.resuming, backup.progress
    run_callbacks = backup.callbacks + [callbacks.DataPass(train)]  # epoch k reads its data in epoch k's order, also when resumed
    if splits.validation is not None:
        run_callbacks.append(callbacks.BestStudentCheckpoint(os.path.join(output_dir, "best_student.keras"), resume=resuming))
    if config.tensorboard and distribute.is_chief(strategy):
        # Keras' own callback: every loss term (loss, ce_loss, kd_loss, feat_<layer>) is a logged metric.
        run_callbacks.append(keras.callbacks.TensorBoard(config.tensorboard))
    run_callbacks += list(extra_callbacks or [])
    if distribute.is_multi_worker(strategy):
        # Keras' fit fails under this strategy (see kdistill.run.distribute); no per-epoch backup here.
        with callbacks.reporting_interrupts(progress, resumable=False):
            history = distribute.fit(distiller, train, epochs=config.epochs, strategy=strategy, verbose=verbose)
        history["epoch"] = list(range(config.epochs))
        return history, resuming
    try:
        with callbacks.reporting_interrupts(progress, resumable=True):
            distiller.fit(train, validation_data=splits.validation, epochs=config.epochs, verbose=verbose, callbacks=run_callbacks, shuffle=False)
    finally:
        resume.drop_empty_history(history_csv)  # so run_folder can remove the folder it made for a run stopped in its first epoch
    return resume.read_history_csv(history_csv), resuming


def _finish(distiller: FeatureDistiller, config: DistillConfig, splits: data_module.Splits, output_dir: str, history: dict, strategy,
            resuming: bool) -> dict:
    """Saves the student (biases snapped when quantization-aware), evaluates it, writes the history; returns the summary."""
    chief = distribute.is_chief(strategy)
    if config.quantize:  # biases on TFLite's int32 grid: the int8 file then computes what the saved student computes
        quantize.snap_biases(distiller.student)
        best_path = os.path.join(output_dir, "best_student.keras")
        if chief and os.path.exists(best_path):
            best = saving.load_model(best_path, role="student")
            quantize.snap_biases(best)
            saving.save_for_inference(best, best_path)
    student_path = os.path.join(output_dir, "student.keras")
    saving.save_for_inference(distiller.student, student_path)
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
        best_path = os.path.join(output_dir, "best_student.keras")
        evaluated = saving.load_model(best_path, role="student") if os.path.exists(best_path) else distiller.student
        summary["evaluated"] = "best_student.keras" if os.path.exists(best_path) else "student.keras"
        if tuple(evaluated.input_shape[1:3]) != tuple(splits.image_shape[:2]):  # a student at its own size reads resized test images
            images = keras.Input(splits.image_shape)
            evaluated = keras.Model(images, evaluated(distiller.student_inputs(images)), name=distiller.student.name)
        summary["test"] = evaluation.evaluate(evaluated, splits.test, splits.class_names)
    files.write_json(os.path.join(output_dir, "history.json"), history)
    return summary
