"""The main job on the offline Fashion-MNIST: teacher, student alone, distilled student, export.

Example:
    >>> from kdistill.run import demo
    >>> demo.DEMO_QUICK["student"]
    'mobilenet_v2'
"""

from __future__ import annotations

import json
import logging
import os
import time

import keras

from kdistill import data as data_module
from kdistill import evaluation, export, plots, quantize
from kdistill.distiller import FeatureDistiller
from kdistill.errors import UserError, check_number
from kdistill.models import saving, teachers
from kdistill.models import taps as taps_module
from kdistill.run import training

__all__ = ["demo", "check_settings", "format_table", "accuracy_latency_rows", "DEMO_QUICK", "DEMO_FULL", "EVIDENCE_REFERENCE"]

#: the committed multi-seed result the demo's one-seed gain is printed beside
#: (benchmarks/results/evidence_fashion_mnist.md; the command and its figures are there)
EVIDENCE_REFERENCE = {"source": "benchmarks/results/evidence_fashion_mnist.md",
                      "line": "5 seeds, MobileNetV2-0.35, teacher 88.34 %: kd +1.90 points [95 % CI +0.35, +3.44], 18 % of the gap; "
                              "kd_transfer +3.06 points [95 % CI +1.75, +4.37], 28 % of the gap; "
                              "at 16 epochs kd_transfer +3.68 [+2.72, +4.65], 47 % of the gap (evidence_fashion_mnist_16_epochs.md)"}

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
    "latency_plot": True,
    "latency_images": 500,
    "qat_epochs": 1,
    "qat_learning_rate": 1e-4,
}
#: `kdistill demo --full`: all 54,000 training images, longer schedules.
DEMO_FULL = dict(DEMO_QUICK, train_limit=None, teacher_epochs=10, student_epochs=15)

_COUNT = {"integer": True, "positive": True}
#: how each number of the schedule is checked (kdistill.errors.check_number's options); the rest are names and switches
_SETTING_NUMBERS = {
    "train_limit": dict(_COUNT, allow_none=True), "test_limit": dict(_COUNT, allow_none=True), "teacher_epochs": _COUNT,
    "student_epochs": _COUNT, "student_width": {"positive": True}, "alpha": {"positive": True, "allow_zero": True, "maximum": 1.0},
    "temperature": {"positive": True}, "tap_weight": {"positive": True, "allow_zero": True}, "batch_size": _COUNT,
    "latency_images": _COUNT, "qat_epochs": dict(_COUNT, allow_zero=True), "qat_learning_rate": {"positive": True},
}
_SETTING_TYPES = {"student": str, "feature_loss": str, "export": bool, "latency_plot": bool}


def check_settings(overrides: dict) -> dict:
    """Checks `demo`'s schedule overrides (names, types, numbers' signs) before any work; returns them.

    Example:
        >>> check_settings({"student_epochs": 2})
        {'student_epochs': 2}
        >>> check_settings({"student_epochs": "abc"})
        Traceback (most recent call last):
        kdistill.errors.UserError: student_epochs must be a positive whole number, received the str 'abc'.
    """
    known = set(DEMO_QUICK) | {"test_limit"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError(f"Unknown demo setting(s) {unknown}; known: {', '.join(sorted(known))}.")
    for key, value in overrides.items():
        if key in _SETTING_NUMBERS:
            check_number(key, value, **_SETTING_NUMBERS[key])
        elif not isinstance(value, _SETTING_TYPES[key]):
            raise UserError(f"{key} must be a {_SETTING_TYPES[key].__name__}, received the {type(value).__name__} {value!r}.")
    return overrides


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
        rows.append({"model": name, "runtime": "Keras", "top1": float((logits.argmax(-1) == labels).mean()),
                     "latency_ms": round(export.keras_latency_ms(model, images[:1]), 3)})
        for mode in ("int8",) if quantize.is_quantized(model) else ("float32", "int8"):  # a quantization-aware model is int8 only
            path = export.tflite(model, os.path.join(folder, f"{name.replace(' ', '_')}_{mode}.tflite"), quantize=mode,
                                 representative=representative, representative_count=200)
            predicted = export.tflite_predict(path, images)
            interpreter = export.tflite_runner(path)
            rows.append({"model": name, "runtime": f"TFLite {mode}", "top1": float((predicted.argmax(-1) == labels).mean()),
                         "latency_ms": round(export.latency_ms(interpreter, images[:1]), 3)})
    return rows


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
    `output_dir`; fine-tunes the distilled student's quantization-aware int8
    twin for `qat_epochs` (`kdistill.quantize`; the same teacher and losses);
    then exports the distilled student to `output_dir/export/` (SavedModel in
    TF Serving's layout, int8 and int16x8 TFLite) and the twin as int8 with its
    trained ranges, with a parity report.

    Args:
        output_dir: run folder.
        full: the longer schedule (`DEMO_FULL`) instead of `DEMO_QUICK`.
        data_dir: where the Fashion-MNIST files are (see `kdistill.data`).
        seed: seed of data order and initialisation.
        overrides: replaces entries of the schedule (tests use tiny settings); checked by `check_settings`.
        verbose: Keras progress bars (1) or none (0).
        retrain_teacher: train a new teacher even if `output_dir/teacher.keras` exists.

    Returns:
        The summary: schedule, a row per model, wall time per stage.
    """
    settings = dict(DEMO_FULL if full else DEMO_QUICK, **check_settings(dict(overrides or {})))
    timings = {}
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    splits = data_module.load("fashion_mnist", data_dir=data_dir, image_size=32, batch_size=settings["batch_size"],
                              train_limit=settings["train_limit"], test_limit=settings.get("test_limit"), seed=seed)
    logger.info("Fashion-MNIST: %s", splits.counts)
    os.makedirs(output_dir, exist_ok=True)  # after the data loaded: a run refused there leaves no empty folder

    teacher_path = os.path.join(output_dir, "teacher.keras")
    stage = time.perf_counter()
    teacher_meta_path = os.path.join(output_dir, "teacher.json")
    teacher_meta = {"train_limit": settings["train_limit"], "epochs": settings["teacher_epochs"], "seed": seed, "recipe": training.TEACHER_RECIPE}
    reuse = not retrain_teacher and os.path.exists(teacher_path) and os.path.exists(teacher_meta_path) and json.load(open(teacher_meta_path)) == teacher_meta
    if reuse:
        teacher = teachers.load(teacher_path)
        teacher_history = {}
        logger.info("Reusing the teacher in %s", teacher_path)
    else:
        logger.info("Training the ResNet50 teacher (%d epochs on %d images)", settings["teacher_epochs"], splits.counts["train"])
        teacher, teacher_history = training.train_teacher(splits, teacher_path, epochs=settings["teacher_epochs"], verbose=verbose)
        training.write_json(teacher_meta_path, teacher_meta)
    timings["teacher"] = round(time.perf_counter() - stage, 1)

    stage = time.perf_counter()
    logger.info("Training the student alone (%d epochs)", settings["student_epochs"])
    student_alone = training.build_student(settings["student"], splits, settings["student_width"], seed)
    initial_weights = student_alone.get_weights()
    alone_history = training.train_student(splits, student_alone, settings["student_epochs"], verbose=verbose)
    alone_path = os.path.join(output_dir, "student_alone.keras")
    saving.save_for_inference(student_alone, alone_path)
    timings["student_alone"] = round(time.perf_counter() - stage, 1)

    stage = time.perf_counter()
    logger.info("Distilling the teacher into the same student (%d epochs)", settings["student_epochs"])
    student = training.build_student(settings["student"], splits, settings["student_width"], seed)
    student.set_weights(initial_weights)  # the same starting point as the baseline
    distiller = FeatureDistiller(
        teacher, student, taps=taps_module.preset(teacher, student), feature_loss=settings["feature_loss"], logits_loss="kl",
        temperature=settings["temperature"], alpha=settings["alpha"], tap_weights=settings["tap_weight"],
    )
    distiller.compile(optimizer=training.make_optimizer("adam", 1e-3), metrics=["accuracy"])
    distilled_history = distiller.fit(splits.train, validation_data=splits.validation, epochs=settings["student_epochs"], verbose=verbose, shuffle=False).history
    distilled_path = os.path.join(output_dir, "student_distilled.keras")
    saving.save_for_inference(distiller.student, distilled_path)
    timings["student_distilled"] = round(time.perf_counter() - stage, 1)

    stage = time.perf_counter()
    logger.info("Evaluating the three models on %d test images", splits.counts["test"])
    rows = []
    saved = (("teacher (ResNet50)", teacher, teacher_path), ("student alone", student_alone, alone_path),
             ("distilled student", distiller.student, distilled_path))
    for name, model, path in saved:
        report = evaluation.evaluate(model, splits.test, splits.class_names)
        rows.append(dict(report, name=name))
    timings["evaluation"] = round(time.perf_counter() - stage, 1)

    twin = None
    if settings["qat_epochs"]:
        stage = time.perf_counter()
        logger.info("Quantization-aware fine-tuning of the distilled student (%d epoch(s)): BatchNormalization folded, int8 weights and "
                    "activations simulated, the same teacher and losses", settings["qat_epochs"])
        twin = quantize.quantize_model(distiller.student, calibration_images=export.collect_images(splits.train, 512)[0])
        qat = FeatureDistiller(teacher, twin, taps=distiller.taps, feature_loss=settings["feature_loss"], logits_loss="kl",
                               temperature=settings["temperature"], alpha=settings["alpha"], tap_weights=settings["tap_weight"])
        qat.compile(optimizer=training.make_optimizer("adam", settings["qat_learning_rate"]), metrics=["accuracy"])
        qat.fit(splits.train, validation_data=splits.validation, epochs=settings["qat_epochs"], verbose=verbose, shuffle=False)
        quantize.snap_biases(twin)  # biases on TFLite's int32 grid, so that the int8 file computes what the twin computes
        qat_path = os.path.join(output_dir, "student_int8_qat.keras")
        saving.save_for_inference(twin, qat_path)
        rows.append(dict(evaluation.evaluate(twin, splits.test, splits.class_names), name="distilled, int8-aware"))
        timings["quantization_aware"] = round(time.perf_counter() - stage, 1)

    exported = None
    if settings["export"] and keras.backend.backend() != "tensorflow":
        logger.info("Skipping the export (SavedModel, TFLite): it needs the TensorFlow backend, this is %s. "
                    "Export the saved student later with `kdistill export %s`.", keras.backend.backend(), distilled_path)
        settings["export"] = False
    if settings["export"]:
        stage = time.perf_counter()
        logger.info("Exporting the distilled student (SavedModel, int8 and int16x8 TFLite) and checking them against Keras")
        exported = export.export_all(distiller.student, os.path.join(output_dir, "export"), formats=("saved_model", "int8", "int16x8"),
                                     representative=splits.validation if splits.validation is not None else splits.train, test=splits.test)
        if twin is not None:  # its rows: the twin in Keras, and its int8 file against it (trained ranges, no calibration)
            aware = export.export_all(twin, os.path.join(output_dir, "export", "int8_aware"), formats=("int8",), test=splits.test)
            exported["report"]["formats"]["keras_int8_aware"] = aware["report"]["formats"]["keras"]
            exported["report"]["formats"]["tflite_int8_aware"] = aware["report"]["formats"]["tflite_int8"]
            exported["report"]["files"]["int8_aware"] = aware["files"]["int8"]
            training.write_json(os.path.join(output_dir, "export", "report.json"), exported["report"])
        timings["export"] = round(time.perf_counter() - stage, 1)

    figures = []
    if settings["latency_plot"] and settings["export"]:
        stage = time.perf_counter()
        logger.info("Measuring accuracy against single-image latency (Keras, TFLite float32, TFLite int8) for each model")
        latency = accuracy_latency_rows(
            {"teacher": teacher, "student alone": student_alone, "distilled student": distiller.student,
             **({"distilled, int8-aware": twin} if twin is not None else {})},
            os.path.join(output_dir, "latency"), splits.validation if splits.validation is not None else splits.train, splits.test,
            limit=settings["latency_images"],
        )
        figures.append(plots.accuracy_latency(latency, os.path.join(output_dir, "accuracy_latency.png")))
        timings["latency"] = round(time.perf_counter() - stage, 1)

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
        "figures": [curves, comparison, *figures],
        "table": format_table(rows),
    }
    if figures:
        summary["latency"] = latency
    summary["reference"] = EVIDENCE_REFERENCE
    if exported is not None:
        summary["export"] = exported["report"]
        summary["export_table"] = export.format_report(exported["report"])
    training.write_json(os.path.join(output_dir, "summary.json"), summary)
    training.write_json(os.path.join(output_dir, "histories.json"), histories)
    return summary
