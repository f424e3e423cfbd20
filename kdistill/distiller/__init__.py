"""FeatureDistiller: a frozen teacher, a student, projections and losses in one `keras.Model`.

Data flow of one training step (TensorFlow backend):

    batch (x, y) -> teacher feature model (once, training=False, outside the tape)
                 -> student feature model (once, training=True, inside the tape)
                 -> adapter (student features -> teacher shapes, `kdistill.adapters`)
                 -> objective: CE + logits KD + feature losses per tap -> weighted total (`kdistill.losses.objective`)
                 -> gradients for student + adapter (+ a loss's own weights)

On other Keras backends the same math runs through `call` + `compute_loss`,
so `fit` trains it there too (the teacher is behind `ops.stop_gradient`).

Example:
    >>> import numpy as np, kdistill
    >>> teacher = kdistill.teachers.resnet50(num_classes=10, input_shape=(32, 32, 3))
    >>> student = kdistill.students.get("resnet8x4", num_classes=10, input_shape=(32, 32, 3))
    >>> distiller = kdistill.FeatureDistiller(teacher, student, taps={"conv3_block4_out": "stage2_out"})
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])  # doctest: +ELLIPSIS
    <FeatureDistiller ...>
    >>> x = np.random.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    >>> y = np.random.randint(0, 10, (8,))
    >>> history = distiller.fit(x, y, epochs=1, batch_size=4, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'ce_loss', 'feat_conv3_block4_out', 'kd_loss', 'loss']
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import keras
from keras import ops, tree

from kdistill.distiller.saving import CompileAndSave
from kdistill.fit_build import build_before_fit
from kdistill.labels import UNLABELED
from kdistill import adapters, losses as losses_module
from kdistill.losses import dense
from kdistill.losses.labels import check_alpha
from kdistill.losses.objective import Objective, metric_inputs
from kdistill.models import checks, ensemble as ensemble_module, folding, summary as model_summary, taps as taps_module

__all__ = ["FeatureDistiller", "UNLABELED"]

logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="kdistill")
class FeatureDistiller(CompileAndSave, keras.Model):
    """Distils a frozen teacher's features and logits into a student.

    Total loss = `alpha * (logits_weight * KD + Σ_tap tap_weight * feature_loss)
    + (1 - alpha) * CE(labels, student logits)`. Every term is a metric:
    `loss`, `ce_loss`, `kd_loss` and `feat_<teacher layer>` (with `val_` in
    evaluation), next to the compiled metrics (computed on the student's logits).

    Args:
        teacher: functional Keras model returning logits. It is frozen
            (`trainable=False`) and always called with `training=False`. A list
            of such models is distilled as one ensemble (see
            `kdistill.teachers.ensemble`): soft targets from their averaged
            probabilities at `temperature`, each teacher run once per step at
            its own input size, and taps addressed as `"<teacher name>/<layer>"`.
        student: functional Keras model returning logits.
        taps: `{teacher_layer: student_layer}`; `{}` distils logits only.
            `None` uses `kdistill.taps.preset(teacher, student)` and raises a
            `ValueError` when the pair has no preset (see `kdistill.taps.resolve`).
        feature_loss: name (see `kdistill.losses.available("feature")`: mse,
            normalized_mse, at, sp, rkd, pkt, ...), `{"name": ..., option: value}`,
            a weighted list such as `[("at", 1000.0), ("sp", 3000.0)]`, a loss
            object, or None for no feature terms.
        logits_loss: name (see `kdistill.losses.available("logits")`: kl, dkd,
            standardized_kd), the same forms as `feature_loss`, or None for no
            logits term. DKD reads the labels of the batch.
        temperature: softening temperature, > 0, for a named logits loss and
            for a named feature loss that takes one (`"kl"`, `"cwd"`); a dict
            such as `{"name": "cwd", "temperature": 1.0}` sets its own.
        alpha: weight of the distillation terms in [0, 1].
        tap_weights: one weight for every tap, or `{teacher_layer: weight}`.
        logits_weight: weight of the logits term inside the distillation part.
        alignment: how projections align spatial sizes: "auto", "resize", "pool".
        adapter: how student features reach the teacher's shape, a name from
            `kdistill.adapters.available()`: `"projection"` (one learned
            projection per tap, see `kdistill.adapters.projection`) or
            `"review"` (ReviewKD's attention-based fusion: the student's taps
            are reduced to `review_channels`, fused from the deepest tap up,
            and mapped to each teacher tap by a 3x3 conv + BN, see
            `kdistill.adapters.review`; use it with `feature_loss="hcl"`).
        review_channels: channels of the fused maps under `adapter="review"`.
        fold_batch_norm: run the teacher with each BatchNormalization folded
            into the convolution before it where that saves work
            (`kdistill.models.folding`): the same outputs to float rounding,
            faster on large inputs (`benchmarks/README.md` has the timings). The
            teacher itself is not changed; False runs it layer by layer.
        ignore_label: for segmenters, the mask value of pixels to skip (255 as in Pascal VOC; None: only negative labels).
        teacher_weights: one weight per teacher when `teacher` is a list
            (normalised); None weighs them equally.
        name: model name.

    Segmenters (logit maps `(batch, H, W, classes)`, integer masks `(batch, H, W)`): CE and KD per pixel, averaged over each
    sample's pixels other than `ignore_label`, or `logits_loss={"name": "cwd", "temperature": 1.0}` on the logit map; the
    student's map is resized to the teacher's, the target (see `kdistill.losses.dense`).

    Raises:
        ValueError: for a bad tap name (with the closest names and the stage
            outputs), alpha outside [0, 1], temperature <= 0, or features that
            no projection can map.
    """

    #: the constructor's options, saved by `get_config` (the models, taps and name are saved beside them; several
    #: teachers' weights live in their ensemble). `kdistill.run.config.DistillConfig` declares the same names with
    #: `distiller=True`.
    OPTIONS = (
        "feature_loss",
        "logits_loss",
        "temperature",
        "alpha",
        "tap_weights",
        "logits_weight",
        "alignment",
        "review_channels",
        "adapter",
        "fold_batch_norm",
        "ignore_label",
    )

    def __init__(
        self,
        teacher: keras.Model | Sequence[keras.Model],
        student: keras.Model,
        taps: Mapping[str, str] | None = None,
        feature_loss: Any = "mse",
        logits_loss: Any = "kl",
        temperature: float = 4.0,
        alpha: float = 0.5,
        tap_weights: float | Mapping[str, float] = 1.0,
        logits_weight: float = 1.0,
        alignment: str = "auto",
        review_channels: int = 64,
        adapter: str = "projection",
        fold_batch_norm: bool = True,
        ignore_label: int | None = dense.IGNORE_LABEL,
        teacher_weights: Sequence[float] | None = None,
        name: str = "feature_distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        # === Options ===
        self.alpha = check_alpha(alpha)
        losses_module.check_temperature(temperature)
        self.temperature = float(temperature)
        self.adapter = adapters.check(adapter)
        if isinstance(review_channels, bool) or not isinstance(review_channels, int) or review_channels < 1:
            raise ValueError(f"review_channels must be a positive integer (e.g. 64), received {review_channels!r}.")
        self.review_channels = review_channels
        self.alignment = alignment
        self.logits_weight = float(logits_weight)
        self.fold_batch_norm = bool(fold_batch_norm)
        self.ignore_label = dense.check_ignore_label(ignore_label)
        # === Models ===
        teacher = self._one_teacher(teacher, teacher_weights)
        self.dense = checks.dense_logits(teacher)
        self.taps = taps_module.resolve(taps, teacher, student)
        self._set_losses(feature_loss, logits_loss)
        self._set_models(teacher, student)
        # === Adapter, objective, metrics ===
        self._build_adapter()
        self._build_objective(tap_weights)
        self.loss_trackers = {key: keras.metrics.Mean(name=key) for key in self.training_objective.term_names}
        self.built = True

    def _one_teacher(self, teacher, teacher_weights) -> keras.Model:
        """The teacher model; several teachers become one ensemble (`kdistill.teachers.ensemble`)."""
        if isinstance(teacher, (list, tuple)):
            return ensemble_module.ensemble(teacher, weights=teacher_weights, temperature=self.temperature)
        if teacher_weights is not None:
            raise ValueError(
                "teacher_weights weighs several teachers; pass a list of teachers, e.g. FeatureDistiller([teacher_a, teacher_b], ...)."
            )
        return teacher

    def _set_losses(self, feature_loss, logits_loss) -> None:
        """The losses from their names (a named loss taking a temperature gets the distiller's)."""
        self.feature_loss = (
            losses_module.get(feature_loss, kind="feature", temperature=self.temperature)
            if feature_loss is not None
            else None
        )
        kind = dense.logits_loss_kind(logits_loss) if self.dense else "logits"
        self.logits_loss = (
            losses_module.get(logits_loss, kind=kind, temperature=self.temperature) if logits_loss is not None else None
        )
        if self.dense:
            dense.check_logits_loss(self.logits_loss)

    def _set_models(self, teacher: keras.Model, student: keras.Model) -> None:
        """Freezes the teacher and builds both feature models (the teacher's folded view held untracked)."""
        teacher.trainable = False
        self.teacher = teacher
        self.student = student
        self.teacher_features = taps_module.feature_model(
            teacher, list(self.taps), role="teacher", name="teacher_features"
        )
        # The folded view shares the teacher's variables; held untracked so that saved files keep their layout.
        forward = folding.fold_batch_norm(self.teacher_features) if self.fold_batch_norm else self.teacher_features
        self._teacher_forward = folding.Untracked(model=forward)
        student_layers = list(dict.fromkeys(self.taps.values()))
        self.student_features = taps_module.feature_model(
            student, student_layers, role="student", name="student_features"
        )
        checks.check_logits_pair(teacher, student)

    def _shapes(self) -> tuple[dict, dict]:
        teacher_shapes = {t: taps_module.tap_shape(self.teacher, t) for t in self.taps}
        student_shapes = {t: taps_module.tap_shape(self.student, s) for t, s in self.taps.items()}
        return teacher_shapes, student_shapes

    # Saved files address the adapter's per-tap layers as `projections` and the objective's per-tap losses as
    # `tap_losses` (Keras saves a layer under the first attribute, in sorted order, that reaches it): both are kept as
    # attributes, and `student_adapter` and `training_objective` sort after them, so files saved before these were
    # layers still load.
    def _build_adapter(self) -> None:
        """The adapter named by `adapter` (`kdistill.adapters.get`), built for the taps' shapes."""
        teacher_shapes, student_shapes = self._shapes()
        position = {layer.name: index for index, layer in enumerate(self.student.layers)}
        depth = {t: position[s.split(taps_module.NESTED)[0]] for t, s in self.taps.items()}
        self.student_adapter = adapters.get(
            self.adapter,
            teacher_shapes,
            student_shapes,
            student_depth=depth,
            student_layers=self.taps,
            alignment=self.alignment,
            review_channels=self.review_channels,
        )
        self.projections = self.student_adapter.tap_layers

    def _build_objective(self, tap_weights) -> None:
        """The objective (`kdistill.losses.objective.Objective`): its losses with weights get built for the teacher's shapes."""
        teacher_shapes, _ = self._shapes()
        self.training_objective = Objective(
            self.taps,
            self.feature_loss,
            self.logits_loss,
            teacher_shapes,
            classes=self.teacher.outputs[0].shape[-1],
            alpha=self.alpha,
            tap_weights=tap_weights,
            logits_weight=self.logits_weight,
            ignore_label=self.ignore_label,
        )
        self.tap_weights = self.training_objective.tap_weights
        self.tap_losses = self.training_objective.tap_losses

    # ----------------------------------------------------------------- forward
    def teacher_outputs(self, inputs):
        """Teacher logits and tapped maps, `{"logits": ..., teacher_layer: ...}`, without gradient."""
        outputs = self._teacher_forward.model(inputs, training=False)
        return tree.map_structure(ops.stop_gradient, outputs)

    def student_inputs(self, images):
        """The batch at the student's own input size: the teacher's images resized (bilinear) when the two differ.

        One pipeline at the teacher's resolution feeds both; the resizing lives
        here, not in the student, so the exported student takes its own size.
        """
        height, width = self.student.input_shape[1:3]
        if height is None or (images.shape[1], images.shape[2]) == (height, width):
            return images
        return ops.image.resize(images, (height, width), interpolation="bilinear", antialias=images.shape[1] > height)

    def student_outputs(self, inputs, training=None):
        """Student logits and projected features, keyed like `teacher_outputs` (`inputs` at the teacher's size is fine)."""
        outputs = self.student_features(self.student_inputs(inputs), training=training)
        features = {teacher_layer: outputs[student_layer] for teacher_layer, student_layer in self.taps.items()}
        projected = self.student_adapter(features, training=training)
        return {taps_module.LOGITS: outputs[taps_module.LOGITS], **projected}

    def split_inputs(self, inputs):
        """Images and teacher outputs: cached ones when the batch carries them (see `kdistill.run.teacher_cache`)."""
        if isinstance(inputs, Mapping) and "teacher" in inputs:
            cached = {key: ops.stop_gradient(inputs["teacher"][key]) for key in [taps_module.LOGITS, *self.taps]}
            return inputs["images"], cached
        return inputs, None

    def call(self, inputs, training=None):
        """Returns `{"teacher": teacher_outputs, "student": student_outputs}`.

        `inputs` are images, or `{"images": ..., "teacher": {...}}` batches from
        a teacher cache, whose outputs are used instead of running the teacher.
        For predictions use `distiller.student`; this output is what the
        distillation losses read.
        """
        images, cached = self.split_inputs(inputs)
        teacher = cached if cached is not None else self.teacher_outputs(images)
        return {"teacher": teacher, "student": self.student_outputs(images, training=training)}

    # ------------------------------------------------------------------ losses
    def loss_terms(self, labels, teacher_outputs, student_outputs, sample_weight=None) -> dict:
        """Every loss term as a scalar (mean over this batch), and their weighted `loss`: the `training_objective`'s call."""
        return self.training_objective(teacher_outputs, student_outputs, labels=labels, sample_weight=sample_weight)

    def update_loss_trackers(self, terms, batch_size):
        for key, tracker in self.loss_trackers.items():
            tracker.update_state(terms[key], sample_weight=batch_size)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Distillation loss from `call`'s outputs; also updates the per-term metrics."""
        terms = self.loss_terms(y, y_pred["teacher"], y_pred["student"], sample_weight)
        self.update_loss_trackers(terms, ops.shape(tree.flatten(x)[0])[0])
        return terms["loss"]

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Compiled metrics on the student's logits, over the labelled samples only."""
        logits = y_pred["student"][taps_module.LOGITS]
        if self.dense:  # metrics at the size the losses read: the teacher's map
            logits = dense.match_size(logits, self.teacher.outputs[0].shape[1:3])
        y, sample_weight = metric_inputs(y, logits, sample_weight, self.ignore_label)
        return super().compute_metrics(x, y, logits, sample_weight)

    @property
    def metrics(self):
        own = list(self.loss_trackers.values())
        # Keras' own total-loss tracker is replaced by ours, which is updated in every backend.
        rest = [m for m in super().metrics if m.name != "loss" and all(m is not o for o in own)]
        return own + rest

    if keras.backend.backend() == "tensorflow":

        def train_step(self, data):
            """One step on TensorFlow: teacher outside the tape, student once inside it (see `kdistill.tf_train_step`)."""
            from kdistill import tf_train_step

            return tf_train_step.train_step(self, data)

    # -------------------------------------------------------------------- fit
    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, refusing training data without a single batch (Keras would return an empty history, silently)."""
        checks.check_not_empty(x, "training data")
        checks.check_fit_data(
            self.teacher,
            x,
            y,
            kwargs.get("validation_data"),
            ignore_label=self.ignore_label,
            sparse_labels=getattr(self.training_objective.label_loss, "sparse", None),
        )
        self._teacher_checked = (
            getattr(self, "_teacher_checked", False)
            or checks.warn_if_chance_level(self.teacher, kwargs.get("validation_data")) is not None
        )
        build_before_fit(self, x, y)  # TensorFlow then traces the first step once, not twice
        history = super().fit(x, y, *args, **kwargs)
        if not history.history and kwargs.get("epochs", 1) and kwargs.get("initial_epoch", 0) < kwargs.get("epochs", 1):
            raise ValueError(
                "fit ran no training step: the training data gave no batch (an empty dataset, or a generator that "
                "stopped at once). Check where the data come from (limits, filters, the folder's contents)."
            )
        return history

    def projection_summary(self) -> list[dict]:
        """One row per tap: teacher layer, student layer, shapes, and how the adapter maps them."""
        teacher_shapes, student_shapes = self._shapes()
        return [
            {
                "teacher_layer": teacher_layer,
                "student_layer": student_layer,
                "teacher_shape": tuple(teacher_shapes[teacher_layer][1:]),
                "student_shape": tuple(student_shapes[teacher_layer][1:]),
                "projection": self.student_adapter.describe(teacher_layer),
                "weight": self.tap_weights[teacher_layer],
            }
            for teacher_layer, student_layer in self.taps.items()
        ]

    def summary(self, *args, **kwargs) -> None:
        """Keras' summary with each model, adapter and loss once (not the views sharing their weights: feature models, projections)."""
        with model_summary.listing(self, super().layers):
            return super().summary(*args, **kwargs)

    @property
    def layers(self) -> list:
        return model_summary.listed(self) or super().layers  # whole outside summary(): saving walks it
