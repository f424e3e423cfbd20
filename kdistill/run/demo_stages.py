"""The demo's stages and the run object they read (`DemoRun`): teacher, students, teacher caches, quantization-aware
fine-tuning, export, latency, and their clock.

Example:
    >>> from kdistill.run import demo_stages
    >>> from kdistill.run.demo_settings import DEMO_QUICK
    >>> demo_stages.teacher_record(DEMO_QUICK, 0)["epochs"]
    8
    >>> clock = demo_stages.Clock()
    >>> with clock("nothing"):
    ...     pass
    >>> sorted(clock.finish())
    ['nothing', 'total']
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time

import keras

from kdistill import data as data_module
from kdistill import export, files, plots, quantize
from kdistill.models import saving, teachers
from kdistill.models import taps as taps_module
from kdistill.run import optimizers, paired, teacher_cache, training
from kdistill.run.demo_settings import DemoSettings

__all__ = [
    "DemoRun",
    "teacher_record",
    "Clock",
    "read_json",
    "teacher_caches",
    "distill_options",
    "data_seen",
    "quantization_aware",
    "export_and_figures",
    "accuracy_latency_rows",
]

logger = logging.getLogger(__name__)


class Clock:
    """Wall time of named stages (`with clock("teacher"): ...`) and of the whole run (`finish`)."""

    def __init__(self):
        self.start, self.seconds = time.perf_counter(), {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        began = time.perf_counter()
        yield
        self.seconds[stage] = round(time.perf_counter() - began, 1)

    def finish(self) -> dict:
        return dict(self.seconds, total=round(time.perf_counter() - self.start, 1))


def teacher_record(settings: DemoSettings, seed: int) -> dict:
    """What `teacher.json` records of the teacher's training; a saved teacher is reused only while it matches.

    Example:
        >>> from kdistill.run.demo_settings import DEMO_QUICK
        >>> teacher_record(DEMO_QUICK, 0)["name"]
        'resnet20'
    """
    return {
        "name": settings.teacher,
        "train_limit": settings.train_limit,
        "epochs": settings.teacher_epochs,
        "input_size": settings.teacher_input_size,
        "seed": seed,
        "recipe": optimizers.TEACHER_RECIPE,
    }


@dataclasses.dataclass
class DemoRun:
    """What every stage of one demo reads, made once by `demo` after the data loads.

    Attributes:
        settings: the schedule (`DemoSettings`).
        splits: the labelled splits (the teacher's training data, evaluation).
        pool: the training pool the students draw from (with the transfer set, if any).
        output_dir: the run folder.
        seed: seed of the teacher and the students (initial weights and order).
        retrain_teacher: train a new teacher even if a matching one is saved.
        verbose: Keras progress bars (1) or none (0).
        clock: the wall time of each stage.
    """

    settings: DemoSettings
    splits: data_module.Splits
    pool: data_module.Splits
    output_dir: str
    seed: int = 0
    retrain_teacher: bool = False
    verbose: int = 1
    clock: Clock = dataclasses.field(default_factory=Clock)

    def path(self, name: str) -> str:
        """A file in the run folder."""
        return os.path.join(self.output_dir, name)

    def teacher(self) -> tuple[keras.Model, dict, bool]:
        """The saved teacher when it was trained with these settings, else a new one; always read back from its file.

        Reading the file back in both cases makes the students' inputs the same whether the teacher was trained now or
        reused, so a reused teacher changes no student result. Returns `(teacher, its history, whether it was reused)`.
        """
        settings, path, meta_path = self.settings, self.path("teacher.keras"), self.path("teacher.json")
        meta = teacher_record(settings, self.seed)
        reuse = not self.retrain_teacher and os.path.exists(path) and read_json(meta_path) == meta
        history = {}
        if reuse:
            logger.info("Reusing the teacher in %s", path)
        else:
            size = settings.teacher_input_size
            logger.info(
                "Training the %s teacher (%d epochs on %d images at %dx%d)",
                settings.teacher,
                settings.teacher_epochs,
                self.splits.counts["train"],
                size,
                size,
            )
            keras.utils.set_random_seed(self.seed)
            _, history = training.train_teacher(
                self.splits,
                path,
                epochs=settings.teacher_epochs,
                name=settings.teacher,
                resize_to=None if size == self.splits.image_shape[0] else size,
                verbose=self.verbose,
            )
            files.write_json(meta_path, meta)
        return teachers.load(path), history, reuse

    def students(self, teacher: keras.Model, caches: dict) -> tuple[keras.Model, keras.Model, dict]:
        """The student alone and the distilled student: the same initial weights, steps, order and labelled images."""
        settings, splits = self.settings, self.splits
        epochs, steps = settings.student_epochs, -(-splits.counts["train"] // settings.batch_size)
        fit = dict(
            epochs=epochs,
            steps_per_epoch=steps,
            seed=self.seed,
            batch_size=settings.batch_size,
            verbose=self.verbose,
            validation=caches["validation"].dataset(settings.batch_size, shuffle=False, pipeline="numpy")
            if caches["validation"]
            else splits.validation,
        )
        student = training.build_student(settings.student, splits, settings.student_width, self.seed)
        initial = student.get_weights()
        logger.info("Training the student alone (%d epochs of %d steps, labels only)", epochs, steps)
        alone = paired.train_from_cache(
            teacher,
            student,
            caches["train"],
            options=paired.ALONE,
            indices=paired.labelled_indices(caches["train"]),
            **fit,
        )
        distilled = training.build_student(settings.student, splits, settings.student_width, self.seed)
        distilled.set_weights(initial)
        logger.info(
            "Distilling the teacher into the same student (%d epochs of %d steps%s)",
            epochs,
            steps,
            ", labelled and unlabelled images" if self.pool is not splits else "",
        )
        distiller = paired.train_from_cache(
            teacher, distilled, caches["train"], options=distill_options(teacher, distilled, settings), **fit
        )
        histories = {"student alone": alone.history.history, "distilled student": distiller.history.history}
        return student, distiller, histories


def read_json(path: str):
    """The JSON value in `path`, or None when there is no such file."""
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def _cache(teacher: keras.Model, layers: list[str], dataset, folder: str, verbose: int):
    try:
        return teacher_cache.load(folder, teacher, layers, dataset=dataset)
    except (FileNotFoundError, teacher_cache.StaleCacheError) as reason:
        logger.info("Caching the teacher's outputs into %s (%s)", folder, str(reason).split(";")[0])
        return teacher_cache.build(teacher, layers, dataset, folder, dtype="float16", verbose=verbose)


def teacher_caches(
    teacher: keras.Model, layers: list[str], pool: data_module.Splits, output_dir: str, verbose: int
) -> dict:
    """The teacher's outputs on the training pool and the validation images, computed once and reused while they match."""
    return {
        "train": _cache(teacher, layers, pool.train_plain, os.path.join(output_dir, "teacher_cache"), verbose),
        "validation": None
        if pool.validation is None
        else _cache(teacher, layers, pool.validation, os.path.join(output_dir, "teacher_cache_validation"), verbose),
    }


def distill_options(teacher: keras.Model, student: keras.Model, settings: DemoSettings) -> dict:
    """The distilled student's `FeatureDistiller` options: the preset taps, the feature loss and KD."""
    return {
        "taps": taps_module.preset(teacher, student),
        "feature_loss": settings.feature_loss,
        "logits_loss": "kl",
        "temperature": settings.temperature,
        "alpha": settings.alpha,
        "tap_weights": settings.tap_weight,
    }


def data_seen(name: str, splits: data_module.Splits, pool: data_module.Splits) -> str:
    """What a model of the demo trained on, as the printed table says it."""
    labelled = f"{splits.counts['train']:,} labelled"
    extra = pool.counts.get("transfer", pool.counts["train"] - splits.counts["train"])
    return f"{labelled} + {extra:,} unlabelled" if name.startswith("distilled") and extra else labelled


def quantization_aware(run: DemoRun, teacher, distiller, caches: dict) -> keras.Model:
    """Fine-tunes the distilled student's int8-aware twin with the same teacher, losses and images; saves it."""
    settings, splits = run.settings, run.splits
    logger.info(
        "Quantization-aware fine-tuning of the distilled student (%d epoch(s)): BatchNormalization folded, int8 weights and "
        "activations simulated, the same teacher and losses",
        settings.qat_epochs,
    )
    twin = quantize.quantize_model(distiller.student, calibration_images=export.collect_images(splits.train, 512)[0])
    options = dict(distill_options(teacher, distiller.student, settings), taps=distiller.taps)
    steps = -(-splits.counts["train"] // settings.batch_size)
    paired.train_from_cache(
        teacher,
        twin,
        caches["train"],
        options=options,
        epochs=settings.qat_epochs,
        steps_per_epoch=steps,
        seed=run.seed,
        batch_size=settings.batch_size,
        learning_rate=settings.qat_learning_rate,
        verbose=run.verbose,
    )
    quantize.snap_biases(twin)  # biases on TFLite's int32 grid, so that the int8 file computes what the twin computes
    saving.save_for_inference(twin, run.path("student_int8_qat.keras"))
    return twin


def _export(distilled: keras.Model, twin, output_dir: str, splits) -> dict:
    logger.info("Exporting the distilled student (SavedModel, int8 and int16x8 TFLite) and checking them against Keras")
    exported = export.export_all(
        distilled,
        os.path.join(output_dir, "export"),
        formats=("saved_model", "int8", "int16x8"),
        representative=splits.validation if splits.validation is not None else splits.train,
        test=splits.test,
    )
    if twin is not None:  # its rows: the twin in Keras, and its int8 file against it (trained ranges, no calibration)
        aware = export.export_all(
            twin, os.path.join(output_dir, "export", "int8_aware"), formats=("int8",), test=splits.test
        )
        exported["report"]["formats"]["keras_int8_aware"] = aware["report"]["formats"]["keras"]
        exported["report"]["formats"]["tflite_int8_aware"] = aware["report"]["formats"]["tflite_int8"]
        exported["report"]["files"]["int8_aware"] = aware["files"]["int8"]
        files.write_json(os.path.join(output_dir, "export", "report.json"), exported["report"])
    report = dict(exported["report"])  # the summary names the files beside it, as paths that travel
    report["files"] = {name: os.path.relpath(path, output_dir) for name, path in report["files"].items()}
    return report


def export_and_figures(run: DemoRun, models: dict, twin) -> dict:
    """Export (TensorFlow backend only) and the accuracy-against-latency figure; the summary entries they add."""
    settings, output_dir, splits, clock = run.settings, run.output_dir, run.splits, run.clock
    summary = {"figures": []}
    if settings.export and keras.backend.backend() != "tensorflow":
        logger.info(
            "Skipping the export (SavedModel, TFLite): it needs the TensorFlow backend, this is %s. Export the saved student later "
            "with `kdistill export %s`.",
            keras.backend.backend(),
            os.path.join(output_dir, "student_distilled.keras"),
        )
        settings.export = False  # the summary records the export as skipped
    if settings.export:
        with clock("export"):
            summary["export"] = _export(models["distilled student"], twin, output_dir, splits)
            summary["export_table"] = export.format_report(summary["export"])
    if settings.latency_plot and settings.export:
        logger.info(
            "Measuring accuracy against single-image latency (Keras, TFLite float32, TFLite int8) for each model"
        )
        with clock("latency"):
            summary["latency"] = accuracy_latency_rows(
                {"teacher" if name.startswith("teacher") else name: model for name, model in models.items()},
                os.path.join(output_dir, "latency"),
                splits.validation if splits.validation is not None else splits.train,
                splits.test,
                limit=settings.latency_images,
            )
            summary["figures"].append(
                plots.accuracy_latency(summary["latency"], os.path.join(output_dir, "accuracy_latency.png"))
            )
    return summary


def accuracy_latency_rows(models: dict, folder: str, representative, test, limit: int = 500) -> list[dict]:
    """Test top-1 and single-image latency of each model in Keras, TFLite float32 and TFLite int8.

    Args:
        models: `{name: keras.Model}`.
        folder: where the TFLite files are written.
        representative: calibration batches for int8.
        test: `(images, labels)` batches.
        limit: test images per measurement.

    Returns:
        Rows of `model`, `runtime`, `top1`, `latency_ms`.
    """
    images, labels = export.collect_images(test, limit)
    rows = []
    for name, model in models.items():
        logits = keras.ops.convert_to_numpy(model.predict(images, verbose=0, batch_size=256))
        rows.append(
            {
                "model": name,
                "runtime": "Keras",
                "top1": float((logits.argmax(-1) == labels).mean()),
                "latency_ms": round(export.keras_latency_ms(model, images[:1]), 3),
            }
        )
        with files.staging_folder(folder, prefix=".savedmodel-") as staging:
            source = export.saved_model(model, staging)  # one SavedModel for both of its TFLite files
            # a quantization-aware model is int8 only
            for mode in ("int8",) if quantize.is_quantized(model) else ("float32", "int8"):
                path = export.tflite(
                    model,
                    os.path.join(folder, f"{name.replace(' ', '_')}_{mode}.tflite"),
                    quantize=mode,
                    representative=representative,
                    representative_count=200,
                    saved_model_dir=source,
                )
                predicted = export.tflite_predict(path, images)
                rows.append(
                    {
                        "model": name,
                        "runtime": f"TFLite {mode}",
                        "top1": float((predicted.argmax(-1) == labels).mean()),
                        "latency_ms": round(export.latency_ms(export.tflite_runner(path), images[:1]), 3),
                    }
                )
    return rows
