"""One distillation as it trains: the compiled distiller, its training data, its callbacks, `fit`, and the files it leaves.

`kdistill.run.jobs.distill` loads and checks the teacher and the data, builds the
distiller (`build_distiller`) and hands all of it to a `DistillRun`: each step
(the training data, resuming, fitting, saving and testing the student) reads the
run's config, data, strategy and folder from it rather than taking them one by one.

Example:
    >>> import dataclasses
    >>> from kdistill.run.distill_run import DistillRun
    >>> [field.name for field in dataclasses.fields(DistillRun)][:5]
    ['config', 'splits', 'strategy', 'output_dir', 'distiller']
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import keras

from kdistill import data as data_module
from kdistill import evaluation, files, quantize
from kdistill.distiller import FeatureDistiller
from kdistill.models import saving
from kdistill.models import taps as taps_module
from kdistill.run import callbacks, distribute, interrupts, optimizers, precision, resume, teacher_cache, training
from kdistill.run.config import DistillConfig

__all__ = ["DistillRun", "build_distiller"]

logger = logging.getLogger(__name__)


def build_distiller(
    config: DistillConfig, splits: data_module.Splits, teacher: keras.Model, strategy
) -> FeatureDistiller:
    """The compiled distiller, its teacher in the run's precision, made inside the strategy's scope with everything trainable."""
    with strategy.scope(), precision.policy_scope(config.precision):
        teacher = precision.cast_model(teacher, config.precision) if config.precision != "float32" else teacher
        student = training.build_student(
            config.student,
            splits,
            config.student_width,
            config.seed,
            weights=config.student_weights,
            image_size=config.student_image_size,
        )
        if config.quantize:
            if not config.student_weights:
                logger.warning(
                    "quantize: int8 without student_weights fine-tunes a random student; start from a trained float "
                    "student (student_weights: <run>/student.keras) for int8 that keeps its accuracy."
                )
            # The first training batch sets every activation range; BatchNormalization statistics are frozen and folded.
            student = quantize.quantize_model(student)
        distiller = FeatureDistiller(
            teacher, student, taps=taps_module.resolve(config.taps, teacher, student), **config.distiller_options()
        )
        steps = -(-(splits.counts["train"] + splits.counts.get("transfer", 0)) // config.batch_size)
        optimizer = optimizers.config_optimizer(config, steps)
        distiller.compile(optimizer=optimizer, loss=training.label_loss(config.augment), metrics=["accuracy"])
    return distiller


@dataclasses.dataclass
class DistillRun:
    """What every step of one distillation reads, made once by `kdistill.run.jobs.distill`.

    Attributes:
        config: the run's settings.
        splits: its data.
        strategy: the distribution strategy the distiller was built in (`kdistill.run.distribute.get_strategy`).
        output_dir: the run folder (on the other workers of a multi-worker run, a folder they remove afterwards).
        distiller: the compiled distiller (`build_distiller`); `distiller.teacher` is the teacher in the run's precision.
        verbose: Keras progress bars.
        restart: discard the backup of an interrupted run instead of resuming it.
        extra_callbacks: the caller's Keras callbacks, run after kdistill's.
    """

    config: DistillConfig
    splits: data_module.Splits
    strategy: Any
    output_dir: str
    distiller: FeatureDistiller
    verbose: int = 1
    restart: bool = False
    extra_callbacks: list = dataclasses.field(default_factory=list)

    @property
    def chief(self) -> bool:
        """Whether this process writes the run's files (`kdistill.run.distribute.is_chief`)."""
        return distribute.is_chief(self.strategy)

    def path(self, name: str) -> str:
        """A file or folder in the run folder."""
        return os.path.join(self.output_dir, name)

    def training_data(self):
        """The training batches: the splits' own, or with the teacher's outputs read from `config.teacher_cache`."""
        return self._cached_training_data() if self.config.teacher_cache else self.splits.train

    def _cached_training_data(self):
        """Training batches with the teacher's outputs read from `config.teacher_cache` (built there on first use).

        With `augment` (crop, flip, mixup, cutmix) the cache holds `config.cache_views` views per image and training replays them.
        """
        config, teacher, layers = self.config, self.distiller.teacher, list(self.distiller.taps)
        if config.augment and not config.cache_views:
            teacher_cache.check_augmentation(config.augment)  # explains --cache-views
        if self.splits.train_plain is None:
            raise ValueError(
                f"The teacher cache needs a source read into arrays (fashion_mnist, an image folder); {config.data!r} is not."
            )
        # What made the training images: a refused cache names the one that changed (e.g. another --seed draws another
        # split).
        source = {
            key: getattr(config, key)
            for key in ("data", "data_dir", "seed", "train_limit", "image_size", "transfer_data")
        }
        try:
            cache = teacher_cache.load(
                config.teacher_cache, teacher, layers, dataset=self.splits.train_plain, source=source
            )
            stored = (cache.views, sorted(cache.meta.get("augment", [])), cache.top_k)
            wanted = (config.cache_views if config.augment else 0, sorted(config.augment), config.cache_top_k)
            if stored != wanted:
                raise teacher_cache.StaleCacheError(
                    f"The teacher cache in {config.teacher_cache!r} holds {stored[0]} view(s) per image for augment {stored[1]} with top-k logits "
                    f"{stored[2]}; this run asks for {wanted[0]} for {wanted[1]} with {wanted[2]} (other --cache-views, --augment or --cache-top-k). "
                    f"{teacher_cache.rebuild_hint(config.teacher_cache)}"
                )
            logger.info("Reading the teacher's outputs from %s", config.teacher_cache)
        except FileNotFoundError:
            logger.info("Computing the teacher's outputs once into %s", config.teacher_cache)
            cache = teacher_cache.build(
                teacher,
                layers,
                self.splits.train_plain,
                config.teacher_cache,
                verbose=min(self.verbose, 1),
                augment=config.augment,
                views=config.cache_views if config.augment else 0,
                seed=config.seed,
                source=source,
                top_k=config.cache_top_k,
            )
        return cache.dataset(config.batch_size, shuffle=True, seed=config.seed, layers=layers)

    def backup(self) -> resume.Backup:
        """The per-epoch backup (`kdistill.run.resume.backup_callbacks`): resumed when the folder holds one (`restart` discards it
        first); a fresh start drops an earlier history.csv."""
        return resume.backup_callbacks(self.output_dir, self.config.to_dict(), self.restart)

    def training_callbacks(self, train, backup: resume.Backup) -> list:
        """kdistill's callbacks (progress, backup, history, non-finite stop, data order, best student, TensorBoard), then the caller's."""
        # epoch k reads its data in epoch k's order, also when resumed
        run_callbacks = backup.callbacks + [callbacks.DataPass(train)]
        if self.splits.validation is not None:
            run_callbacks.append(
                callbacks.BestStudentCheckpoint(self.path("best_student.keras"), resume=backup.resuming)
            )
        if self.config.tensorboard and self.chief:
            # Keras' own callback: every loss term (loss, ce_loss, kd_loss, feat_<layer>) is a logged metric.
            run_callbacks.append(keras.callbacks.TensorBoard(self.config.tensorboard))
        return run_callbacks + list(self.extra_callbacks)

    def fit(self, train, backup: resume.Backup) -> dict:
        """Trains the distiller on `train` with `training_callbacks`; returns the history (one row per epoch)."""
        run_callbacks = self.training_callbacks(train, backup)
        if distribute.is_multi_worker(self.strategy):
            # Keras' fit fails under this strategy (see kdistill.run.distribute); no per-epoch backup here.
            with interrupts.reporting_interrupts(backup.progress, resumable=False):
                history = distribute.fit(
                    self.distiller, train, epochs=self.config.epochs, strategy=self.strategy, verbose=self.verbose
                )
            history["epoch"] = list(range(self.config.epochs))
            return history
        try:
            with interrupts.reporting_interrupts(backup.progress, resumable=True):
                self.distiller.fit(
                    train,
                    validation_data=self.splits.validation,
                    epochs=self.config.epochs,
                    verbose=self.verbose,
                    callbacks=run_callbacks,
                    shuffle=False,
                )
        finally:
            # so run_folder can remove the folder it made for a run stopped in its first epoch
            resume.drop_empty_history(backup.history_csv)
        return resume.read_history_csv(backup.history_csv)

    def finish(self, history: dict, resuming: bool) -> dict:
        """Saves the student (biases snapped when quantization-aware), tests it, writes the history; returns the summary."""
        student_path = self._save_students()
        distiller = self.distiller
        summary = {
            "config": self.config.to_dict(),
            "taps": distiller.taps,
            "projections": [
                dict(row, teacher_shape=list(row["teacher_shape"]), student_shape=list(row["student_shape"]))
                for row in distiller.projection_summary()
            ],
            "student_path": student_path,
            "epochs_completed": len(history.get("epoch", [])),
            "resumed": resuming,
            "replicas": int(self.strategy.num_replicas_in_sync),
        }
        if self.splits.test is not None and self.chief:  # the other workers' scores would be the chief's again
            summary.update(self._test())
        files.write_json(self.path("history.json"), history)
        return summary

    def _save_students(self) -> str:
        """Writes student.keras (and, quantization-aware, snaps the biases of it and of best_student.keras); returns its path."""
        # biases on TFLite's int32 grid: the int8 file then computes what the saved student computes
        if self.config.quantize:
            quantize.snap_biases(self.distiller.student)
            best_path = self.path("best_student.keras")
            if self.chief and os.path.exists(best_path):
                best = saving.load_model(best_path, role="student")
                quantize.snap_biases(best)
                saving.save_for_inference(best, best_path)
        student_path = self.path("student.keras")
        saving.save_for_inference(self.distiller.student, student_path)
        return student_path

    def _test(self) -> dict:
        """`{"evaluated": file name, "test": metrics}` of the best student (the last one without validation data) on the test split."""
        best_path = self.path("best_student.keras")
        evaluated = (
            saving.load_model(best_path, role="student") if os.path.exists(best_path) else self.distiller.student
        )
        name = "best_student.keras" if os.path.exists(best_path) else "student.keras"
        # a student at its own size reads resized test images
        if tuple(evaluated.input_shape[1:3]) != tuple(self.splits.image_shape[:2]):
            images = keras.Input(self.splits.image_shape)
            evaluated = keras.Model(
                images, evaluated(self.distiller.student_inputs(images)), name=self.distiller.student.name
            )
        return {"evaluated": name, "test": evaluation.evaluate(evaluated, self.splits.test, self.splits.class_names)}
