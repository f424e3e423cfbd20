"""The main job on the offline Fashion-MNIST: teacher, student alone, distilled student, export.

Its schedule is `kdistill.run.demo_settings.DemoSettings` (`DEMO_QUICK`, `DEMO_FULL`).

Its stages, and the run object they read (`DemoRun`), are in `kdistill.run.demo_stages`.

Example:
    >>> from kdistill.run import demo
    >>> demo.summary_text.__name__
    'summary_text'
"""

from __future__ import annotations

import logging
import os


from kdistill import data as data_module
from kdistill import evaluation, files, plots
from kdistill.models import saving
from kdistill.models import taps as taps_module
from kdistill.run import demo_stages as stages
from kdistill.run import environment, training
from kdistill.run.demo_settings import DEMO_FULL, DEMO_QUICK, DemoSettings
from kdistill.run.folder import run_folder

__all__ = ["demo", "summary_text", "EVIDENCE_REFERENCE"]

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
    run = stages.DemoRun(settings, splits, pool, output_dir, seed, retrain_teacher, verbose, clock)
    # locked while in use; taken after the data loaded, so a refused run leaves no empty folder
    with run_folder(output_dir):
        return _run(run)


def _teacher_row(settings: DemoSettings) -> str:
    return f"teacher ({settings.teacher})"


def _run(run: stages.DemoRun) -> dict:
    """The demo's stages in order; returns the summary it writes."""
    settings, splits, pool, clock = run.settings, run.splits, run.pool, run.clock
    with clock("teacher"):
        teacher, teacher_history, reused = run.teacher()
    probe = training.build_student(settings.student, splits, settings.student_width, run.seed)
    with clock("teacher_cache"):
        layers = sorted(taps_module.preset(teacher, probe))
        caches = stages.teacher_caches(teacher, layers, pool, run.output_dir, run.verbose)
    with clock("students"):
        student_alone, distiller, histories = run.students(teacher, caches)
    saving.save_for_inference(student_alone, run.path("student_alone.keras"))
    saving.save_for_inference(distiller.student, run.path("student_distilled.keras"))
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
            twin = stages.quantization_aware(run, teacher, distiller, caches)
            rows.append(
                dict(
                    evaluation.evaluate(twin, splits.test, splits.class_names),
                    name="distilled, int8-aware",
                    data=stages.data_seen("distilled student", splits, pool),
                )
            )
            models["distilled, int8-aware"] = twin
    summary = stages.export_and_figures(run, models, twin)
    if teacher_history:
        histories[_teacher_row(settings)] = teacher_history
    figures = [
        plots.training_curves(histories, run.path("curves.png")),
        plots.comparison(rows, run.path("comparison.png")),
        *summary["figures"],
    ]
    # beside summary.json: names that travel
    summary["figures"] = [os.path.relpath(path, run.output_dir) for path in figures]
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
    files.write_json(run.path("summary.json"), summary)
    files.write_json(run.path("histories.json"), histories)
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
