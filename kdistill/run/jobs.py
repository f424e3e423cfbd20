"""The distillation job shared by the CLI and notebooks: load the teacher and the data, distil, evaluate, export.

A teacher is trained by `kdistill.run.training.train_teacher` and the demo runs
in `kdistill.run.demo`. Each job writes into a run folder and returns what it
measured; the CLI only parses arguments and calls these. `distill` checks the
teacher and the data here, then trains through a `kdistill.run.distill_run.DistillRun`.

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
from kdistill import files
from kdistill.errors import ChanceLevelError, UserError
from kdistill.models import checks, teachers
from kdistill.run import distribute, resume, teacher_cache
from kdistill.run.config import DistillConfig
from kdistill.run.distill_run import DistillRun, build_distiller
from kdistill.run.folder import run_folder

__all__ = ["load_teacher", "check_teacher", "load_data", "distill"]

logger = logging.getLogger(__name__)


def load_data(config: DistillConfig) -> data_module.Splits:
    """Pipelines for a run config."""
    return data_module.load(
        config.data,
        data_dir=config.data_dir,
        image_size=config.image_size,
        batch_size=config.batch_size,
        train_limit=config.train_limit,
        test_limit=config.test_limit,
        augment=config.augment,
        seed=config.seed,
        transfer=config.transfer_data,
        skip_unreadable=config.skip_unreadable,
    )


def load_teacher(config: DistillConfig) -> keras.Model:
    """The config's teacher; a list of files becomes one ensemble, each member named after its file."""
    if not config.teacher:
        raise ValueError(
            "A distillation needs a teacher: set `teacher: PATH` (train one with `kdistill train-teacher`)."
        )
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
            raise UserError(
                f"The teacher list names {first!r} twice: give each teacher file once."
                if same
                else f"The teacher files {first!r} and {paths[index]!r} have the same name {stem!r}, and an ensemble names each member "
                "after its file (taps read '<file stem>/<layer>'): copy or link one under another name (e.g. "
                f"{stem}_b{os.path.splitext(paths[index])[1]}) and list that."
            )


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
        logger.warning(
            "precision mixed_float16 on a CPU: CPUs have no fast float16 arithmetic, so this runs much slower than "
            "float32. Use float32, or mixed_bfloat16 on a CPU with bfloat16 support; mixed_float16 is for GPUs."
        )


def distill(
    config: DistillConfig,
    splits: data_module.Splits | None = None,
    teacher: keras.Model | None = None,
    verbose: int = 1,
    restart: bool = False,
    extra_callbacks: list | None = None,
) -> dict:
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
    # The other workers of a multi-worker run train in step with the chief; their copies of the files go to a folder
    # they remove.
    output_dir = config.resolved_output_dir() if chief else tempfile.mkdtemp(prefix="kdistill-worker-")
    _warn_about_precision(config.precision)
    if chief and not restart:
        resume.refuse_finished_run(output_dir)
    if config.teacher_cache:
        # found only when writing, naming a staging folder, after all the work
        teacher_cache.check_writable(config.teacher_cache)
    with run_folder(output_dir):
        splits = splits or load_data(config)
        if teacher is None:
            teacher = load_teacher(config)
        checks.check_image_shape("training", splits.image_shape, teacher)
        if config.check_teacher:
            check_teacher(teacher, splits)
        remove_stale_partials(output_dir)
        run = DistillRun(
            config,
            splits,
            strategy,
            output_dir,
            build_distiller(config, splits, teacher, strategy),
            verbose=verbose,
            restart=restart,
            extra_callbacks=list(extra_callbacks or []),
        )
        train = run.training_data()
        backup = run.backup()
        summary = run.finish(run.fit(train, backup), backup.resuming)
        summary["wall_seconds"] = round(time.perf_counter() - start, 1)
        files.write_json(run.path("summary.json"), summary)
    if not chief:
        shutil.rmtree(output_dir, ignore_errors=True)
        summary["student_path"] = None
    return summary
