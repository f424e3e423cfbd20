"""The main job on the offline Fashion-MNIST: teacher, student alone, distilled student, export.

Its schedule is `kdistill.run.demo_settings.DemoSettings` (`DEMO_QUICK`, `DEMO_FULL`).

Example:
    >>> from kdistill.run import demo
    >>> from kdistill.run.demo_settings import DEMO_QUICK
    >>> demo.teacher_record(DEMO_QUICK, 0)["epochs"]
    8
"""

from __future__ import annotations

import logging
import os

import keras

from kdistill import data as data_module
from kdistill import evaluation, files, plots
from kdistill.models import saving, teachers
from kdistill.models import taps as taps_module
from kdistill.run import demo_stages as stages
from kdistill.run import environment, paired, training
from kdistill.run.demo_settings import DEMO_FULL, DEMO_QUICK, DemoSettings
from kdistill.run.folder import run_folder

__all__ = ["demo", "summary_text", "teacher_record", "EVIDENCE_REFERENCE"]

#: the committed multi-seed result the demo's one-seed gain is printed beside
#: (benchmarks/results/evidence_fashion_mnist.md; the command and its figures are there)
EVIDENCE_REFERENCE = {
    "source": "benchmarks/results/evidence_fashion_mnist.md",
    "line": "5 seeds, MobileNetV2-0.35, teacher 88.34 %: kd +1.90 points [95 % CI +0.35, +3.44], 18 % of the gap; "
    "kd_transfer +3.06 points [95 % CI +1.75, +4.37], 28 % of the gap; "
    "at 16 epochs kd_transfer +3.68 [+2.72, +4.65], 47 % of the gap (evidence_fashion_mnist_16_epochs.md)",
}

logger = logging.getLogger(__name__)


def _load_data(
    settings: DemoSettings, data_dir: str | None, seed: int
) -> tuple[data_module.Splits, data_module.Splits]:
    """The labelled splits (teacher, evaluation) and the training pool the students draw from (with the transfer set, if any)."""
    common = dict(
        data_dir=data_dir,
        image_size=32,
        batch_size=settings.batch_size,
        train_limit=settings.train_limit,
        test_limit=settings.test_limit,
        seed=seed,
    )
    splits = data_module.load("fashion_mnist", **common)
    transfer = settings.transfer and settings.train_limit is not None
    pool = data_module.load("fashion_mnist", transfer="rest", **common) if transfer else splits
    return splits, pool


def teacher_record(settings: DemoSettings, seed: int) -> dict:
    """What `teacher.json` records of the teacher's training; a saved teacher is reused only while it matches.

    Example:
        >>> teacher_record(DEMO_QUICK, 0)["name"]
        'resnet20'
    """
    return {
        "name": settings.teacher,
        "train_limit": settings.train_limit,
        "epochs": settings.teacher_epochs,
        "input_size": settings.teacher_input_size,
        "seed": seed,
        "recipe": training.TEACHER_RECIPE,
    }


def _teacher(
    splits: data_module.Splits, output_dir: str, settings: DemoSettings, seed: int, retrain: bool, verbose: int
) -> tuple[keras.Model, dict, bool]:
    """The saved teacher when it was trained with these settings, else a new one; always read back from its file.

    Reading the file back in both cases makes the students' inputs the same whether the teacher was trained now or
    reused, so a reused teacher changes no student result.
    """
    path, meta_path = os.path.join(output_dir, "teacher.keras"), os.path.join(output_dir, "teacher.json")
    meta = teacher_record(settings, seed)
    reuse = not retrain and os.path.exists(path) and stages.read_json(meta_path) == meta
    history = {}
    if reuse:
        logger.info("Reusing the teacher in %s", path)
    else:
        size = settings.teacher_input_size
        logger.info(
            "Training the %s teacher (%d epochs on %d images at %dx%d)",
            settings.teacher,
            settings.teacher_epochs,
            splits.counts["train"],
            size,
            size,
        )
        keras.utils.set_random_seed(seed)
        _, history = training.train_teacher(
            splits,
            path,
            epochs=settings.teacher_epochs,
            name=settings.teacher,
            resize_to=None if size == splits.image_shape[0] else size,
            verbose=verbose,
        )
        files.write_json(meta_path, meta)
    return teachers.load(path), history, reuse


def _students(
    teacher, splits, pool, caches, settings: DemoSettings, seed: int, verbose: int
) -> tuple[keras.Model, keras.Model, dict]:
    """The student alone and the distilled student: the same initial weights, steps, order and labelled images."""
    epochs, steps = settings.student_epochs, -(-splits.counts["train"] // settings.batch_size)
    run = dict(
        epochs=epochs,
        steps_per_epoch=steps,
        seed=seed,
        batch_size=settings.batch_size,
        verbose=verbose,
        validation=caches["validation"].dataset(settings.batch_size, shuffle=False, pipeline="numpy")
        if caches["validation"]
        else splits.validation,
    )
    student = training.build_student(settings.student, splits, settings.student_width, seed)
    initial = student.get_weights()
    logger.info("Training the student alone (%d epochs of %d steps, labels only)", epochs, steps)
    alone = paired.train_from_cache(
        teacher, student, caches["train"], options=paired.ALONE, indices=paired.labelled_indices(caches["train"]), **run
    )
    distilled = training.build_student(settings.student, splits, settings.student_width, seed)
    distilled.set_weights(initial)
    logger.info(
        "Distilling the teacher into the same student (%d epochs of %d steps%s)",
        epochs,
        steps,
        ", labelled and unlabelled images" if pool is not splits else "",
    )
    distiller = paired.train_from_cache(
        teacher, distilled, caches["train"], options=stages.distill_options(teacher, distilled, settings), **run
    )
    histories = {"student alone": alone.history.history, "distilled student": distiller.history.history}
    return student, distiller, histories


def demo(
    output_dir: str = os.path.join("saved_models", "demo"),
    full: bool = False,
    data_dir: str | None = None,
    seed: int = 0,
    overrides: dict | None = None,
    verbose: int = 1,
    retrain_teacher: bool = False,
) -> dict:
    """The main job on the offline Fashion-MNIST: teacher, student alone, distilled student.

    Trains (or reuses) a teacher (`teacher`, a CIFAR ResNet-20 by default) on the
    labelled images, upsampled to `teacher_input_size` inside it; caches its outputs once; trains the same
    student twice from the same initial weights, for the same steps in the same
    order on the same labelled images: on labels alone, then with the teacher's
    features and logits (and, with `transfer`, the other training images without
    their labels); evaluates all three on the test set; fine-tunes the distilled
    student's quantization-aware int8 twin for `qat_epochs`; exports the distilled
    student (SavedModel, int8 and int16x8 TFLite) and the twin, with a parity
    report; and writes `summary.json`, `histories.json`, the figures and the models
    into `output_dir`. The teacher stage and the student stages each seed
    themselves, so reusing a saved teacher changes no student result.

    Args:
        output_dir: run folder.
        full: the longer schedule (`DEMO_FULL`) instead of `DEMO_QUICK`.
        data_dir: where the Fashion-MNIST files are (see `kdistill.data`).
        seed: seed of the data split, the teacher and the students (initial weights and order).
        overrides: replaces entries of the schedule (tests use tiny settings); checked by `DemoSettings`' declarations.
        verbose: Keras progress bars (1) or none (0).
        retrain_teacher: train a new teacher even if `output_dir/teacher.keras` exists.

    Returns:
        The summary: schedule, data, a row per model, wall time per stage.
    """
    settings = (DEMO_FULL if full else DEMO_QUICK).replaced(dict(overrides or {}))
    clock = stages.Clock()
    splits, pool = _load_data(settings, data_dir, seed)
    logger.info("Fashion-MNIST: %s", pool.counts)
    # locked while in use; taken after the data loaded, so a refused run leaves no empty folder
    with run_folder(output_dir):
        return _run(settings, splits, pool, output_dir, seed, retrain_teacher, verbose, clock)


def _teacher_row(settings: DemoSettings) -> str:
    return f"teacher ({settings.teacher})"


def _run(
    settings: DemoSettings,
    splits,
    pool,
    output_dir: str,
    seed: int,
    retrain_teacher: bool,
    verbose: int,
    clock: stages.Clock,
) -> dict:
    """The demo's stages in order; returns the summary it writes."""
    with clock("teacher"):
        teacher, teacher_history, reused = _teacher(splits, output_dir, settings, seed, retrain_teacher, verbose)
    probe = training.build_student(settings.student, splits, settings.student_width, seed)
    with clock("teacher_cache"):
        caches = stages.teacher_caches(teacher, sorted(taps_module.preset(teacher, probe)), pool, output_dir, verbose)
    with clock("students"):
        student_alone, distiller, histories = _students(teacher, splits, pool, caches, settings, seed, verbose)
    saving.save_for_inference(student_alone, os.path.join(output_dir, "student_alone.keras"))
    saving.save_for_inference(distiller.student, os.path.join(output_dir, "student_distilled.keras"))
    with clock("evaluation"):
        models = {
            _teacher_row(settings): teacher,
            "student alone": student_alone,
            "distilled student": distiller.student,
        }
        rows = [
            dict(
                evaluation.evaluate(model, splits.test, splits.class_names),
                name=name,
                data=stages.data_seen(name, splits, pool),
            )
            for name, model in models.items()
        ]
    twin = None
    if settings.qat_epochs:
        with clock("quantization_aware"):
            twin = stages.quantization_aware(teacher, distiller, caches, splits, settings, seed, output_dir, verbose)
            rows.append(
                dict(
                    evaluation.evaluate(twin, splits.test, splits.class_names),
                    name="distilled, int8-aware",
                    data=stages.data_seen("distilled student", splits, pool),
                )
            )
            models["distilled, int8-aware"] = twin
    summary = stages.export_and_figures(settings, output_dir, models, twin, splits, clock)
    if teacher_history:
        histories[_teacher_row(settings)] = teacher_history
    figures = [
        plots.training_curves(histories, os.path.join(output_dir, "curves.png")),
        plots.comparison(rows, os.path.join(output_dir, "comparison.png")),
        *summary["figures"],
    ]
    # beside summary.json: names that travel
    summary["figures"] = [os.path.relpath(path, output_dir) for path in figures]
    summary["environment"] = environment.describe()
    summary.update(
        settings=settings.to_dict(),
        data=pool.counts,
        taps=distiller.taps,
        results=rows,
        teacher_reused=reused,
        reference=EVIDENCE_REFERENCE,
        projections=[row["projection"] for row in distiller.projection_summary()],
        seconds=clock.finish(),
        distillation_gain_top1=rows[2]["top1"] - rows[1]["top1"],
        table=evaluation.format_table(rows),
    )
    files.write_json(os.path.join(output_dir, "summary.json"), summary)
    files.write_json(os.path.join(output_dir, "histories.json"), histories)
    return summary


def summary_text(summary: dict, output_dir: str) -> str:
    """What `kdistill demo` prints at the end: the table, the export, the gain beside the multi-seed result, latency, files."""
    lines = ["", summary["table"]]
    if "export_table" in summary:
        lines.append(
            "\nExported distilled student (" + os.path.join(output_dir, "export") + "):\n" + summary["export_table"]
        )
    lines.append(
        f"\ndistillation gain (top-1): {100 * summary['distillation_gain_top1']:+.2f} points (one seed); "
        f"wall time {summary['seconds']['total']:.0f} s"
    )
    lines.append(f"multi-seed result ({summary['reference']['source']}): {summary['reference']['line']}")
    if "latency" in summary:
        lines.append("\naccuracy against single-image latency on this CPU:")
        width = max(len(row["model"]) for row in summary["latency"])
        lines += [
            f"  {row['model']:<{width}} {row['runtime']:<15} top-1 {100 * row['top1']:6.2f}%  {row['latency_ms']:8.3f} ms"
            for row in summary["latency"]
        ]
    lines.append(
        f"figures: {', '.join(os.path.join(output_dir, name) for name in summary['figures'])}\n"
        f"summary: {os.path.join(output_dir, 'summary.json')}"
    )
    return "\n".join(lines)
