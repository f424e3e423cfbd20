"""The distiller's objective: every loss term of one batch and their weighted total (keras.ops only).

    loss = alpha * (logits_weight * KD + Σ_tap tap_weight * feature term) + (1 - alpha) * CE

`Objective` is built once from a distiller's options (its losses, the taps and
their weights, alpha, the ignore label) and the teacher's tap shapes, owns the
losses with weights (a built copy per tap, a discriminator) so they train and
save with the distiller, and is called on every backend with the teacher's and
the student's outputs, the labels and the sample weights. Terms are computed in
float32 whatever the compute dtype (mixed precision). Images labelled
`UNLABELED` (a transfer set) get no cross-entropy, and the label-reading losses
(DKD) see the teacher's top class for them. Segmenters' logit maps take the
per-pixel path of `kdistill.losses.dense`.

Example:
    >>> import numpy as np
    >>> from kdistill import losses
    >>> objective = Objective({"t1": "s1"}, losses.get("mse"), losses.get("kl"), {"t1": (None, 2, 2, 3)}, alpha=0.5)
    >>> objective.term_names
    ['loss', 'ce_loss', 'kd_loss', 'feat_t1']
    >>> teacher = {"logits": np.zeros((4, 10), "float32"), "t1": np.ones((4, 2, 2, 3), "float32")}
    >>> student = {"logits": np.zeros((4, 10), "float32"), "t1": np.zeros((4, 2, 2, 3), "float32")}
    >>> terms = objective(teacher, student, labels=np.arange(4))
    >>> round(float(terms["feat_t1"]), 4), round(float(terms["loss"]), 4)  # 0.5 * MSE + 0.5 * CE (log 10)
    (1.0, 1.6513)
"""

from __future__ import annotations

from typing import Any, Mapping

import keras
from keras import ops

from kdistill.losses import base, dense
from kdistill.losses.labels import LabelLoss, check_alpha, label_mask, masked_mean, weighted_mean

__all__ = ["LOGITS", "Objective", "metric_inputs"]

#: the logits' key in teacher and student outputs (`kdistill.models.taps.LOGITS`; the losses wing imports no models)
LOGITS = "logits"


class Objective(keras.layers.Layer):
    """The weighted sum of the label, logits and feature terms that a `FeatureDistiller` trains.

    Args:
        taps: `{teacher_layer: student_layer}`; the outputs it is called with are keyed by teacher layer.
        feature_loss: a loss object (see `kdistill.losses.get`), or None for no feature terms.
        logits_loss: a loss object, or None for no logits term.
        teacher_shapes: `{teacher_layer: shape with the batch axis}`, which builds the losses with weights.
        classes: the number of logits, which builds a logits loss with weights (a discriminator).
        alpha: weight of the distillation terms in [0, 1].
        tap_weights: one weight for every tap, or `{teacher_layer: weight}` (taps it leaves out weigh 1).
        logits_weight: weight of the logits term inside the distillation part.
        ignore_label: for logit maps, the mask value of pixels to skip (see `kdistill.losses.dense`).
        label_loss: the cross-entropy with labels (see `kdistill.losses.labels.LabelLoss`); `FeatureDistiller.compile` sets it.
        **kwargs: base `Layer` arguments.

    Call arguments:
        teacher_outputs, student_outputs: `{"logits": logits, teacher_layer: map, ...}`, the student's after its adapter.
        labels: the batch's labels (None: a transfer set without labels, distillation terms only).
        sample_weight: per-sample weights, or None.

    Returns:
        `{"ce_loss", "kd_loss", "feat_<teacher layer>", ..., "loss"}`: each term as a scalar (the batch's mean), and their weighted total.

    Raises:
        ValueError: for taps without a feature loss, nothing to distil, or tap weights naming unknown taps.
    """

    def __init__(
        self,
        taps: Mapping[str, str],
        feature_loss: Any,
        logits_loss: Any,
        teacher_shapes: Mapping[str, tuple],
        classes: int | None = None,
        alpha: float = 0.5,
        tap_weights: float | Mapping[str, float] = 1.0,
        logits_weight: float = 1.0,
        ignore_label: int | None = dense.IGNORE_LABEL,
        label_loss: Any = None,
        **kwargs,
    ):
        # float32 whatever the global policy: Keras casts floating inputs to it, as the terms need anyway
        super().__init__(**{"name": "objective", "dtype": "float32", **kwargs})
        self.alpha = check_alpha(alpha)
        _check_terms(taps, feature_loss, logits_loss, self.alpha)
        self.taps = {str(t): str(s) for t, s in taps.items()}
        self.feature_loss, self.logits_loss = feature_loss, logits_loss
        self.tap_weights = _tap_weights(tap_weights, self.taps, feature_loss)
        self.logits_weight = float(logits_weight)
        self.ignore_label = dense.check_ignore_label(ignore_label)
        self.label_loss = label_loss if isinstance(label_loss, LabelLoss) else LabelLoss(label_loss)
        self.tap_losses = _tap_losses(feature_loss, teacher_shapes)
        if base.is_stateful(logits_loss) and not logits_loss.built and classes is not None:
            logits_loss.build((None, classes), (None, classes))
        self.built = True

    @property
    def term_names(self) -> list[str]:
        """The names of the terms `call` returns (each a metric of the distiller): `loss`, `ce_loss`, `kd_loss`, `feat_...`."""
        return [
            "loss",
            "ce_loss",
            *(["kd_loss"] if self.logits_loss is not None else []),
            *_feature_term_names(self.feature_loss, self.taps),
        ]

    def call(self, teacher_outputs: Mapping, student_outputs: Mapping, labels=None, sample_weight=None) -> dict:
        terms = {}
        student_logits = ops.cast(student_outputs[LOGITS], "float32")
        teacher_outputs = {key: ops.cast(value, "float32") for key, value in teacher_outputs.items()}
        valid = None  # the valid pixels of dense logits (None: class vectors, or every pixel of a batch without labels)
        if dense.is_dense(student_logits):
            student_logits = dense.match_size(student_logits, teacher_outputs[LOGITS].shape[1:3])
            terms["ce_loss"], labels, valid = self._dense_cross_entropy(labels, student_logits, sample_weight)
        else:
            terms["ce_loss"], labels = self._cross_entropy(
                labels, teacher_outputs[LOGITS], student_logits, sample_weight
            )
        distillation = ops.zeros((), "float32")
        if self.logits_loss is not None:
            if dense.is_dense(student_logits):
                kd = dense.dense_logits_loss(self.logits_loss, teacher_outputs[LOGITS], student_logits, labels, valid)
            else:
                kd = base.per_sample_loss(self.logits_loss, teacher_outputs[LOGITS], student_logits, labels)
            terms["kd_loss"] = weighted_mean(ops.cast(kd, "float32"), sample_weight)
            distillation = distillation + self.logits_weight * terms["kd_loss"]
        for term, value, weight in self._feature_terms(teacher_outputs, student_outputs, labels):
            terms[term] = weighted_mean(ops.cast(value, "float32"), sample_weight)
            distillation = distillation + weight * terms[term]
        terms["loss"] = self.alpha * distillation + (1.0 - self.alpha) * terms["ce_loss"]
        return terms

    def _cross_entropy(self, labels, teacher_logits, student_logits, sample_weight) -> tuple[Any, Any]:
        """`(ce_loss, labels)` for class vectors: the labelled samples' mean; unlabelled ones get the teacher's top class for label-reading losses."""
        mask = label_mask(labels)
        if labels is None:
            return ops.zeros((), "float32"), labels
        if mask is None:
            return weighted_mean(self.label_loss(labels, student_logits), sample_weight), labels
        teacher_top = ops.reshape(ops.cast(ops.argmax(teacher_logits, axis=-1), labels.dtype), ops.shape(labels))
        labels = ops.where(labels >= 0, labels, teacher_top)  # what label-reading losses see
        return masked_mean(self.label_loss(labels, student_logits), mask, sample_weight), labels

    def _dense_cross_entropy(self, labels, student_logits, sample_weight) -> tuple[Any, Any, Any]:
        """`(ce_loss, pixel labels, valid pixels)` for logit maps (see `kdistill.losses.dense`); without labels `(0, None, None)`."""
        if labels is None:
            return ops.zeros((), "float32"), None, None
        cross_entropy, labelled, labels, valid = dense.dense_label_terms(
            self.label_loss, labels, student_logits, self.ignore_label
        )
        return masked_mean(cross_entropy, labelled, sample_weight), labels, valid

    def _feature_terms(
        self, teacher_outputs: Mapping, student_outputs: Mapping, labels
    ) -> list[tuple[str, Any, float]]:
        """`(metric name, per-sample values, weight)` of each feature term: one per tap, or one for a loss reading every tap."""
        student_outputs = {key: ops.cast(value, "float32") for key, value in student_outputs.items()}
        taps = self.taps
        if base.reads_all_taps(self.feature_loss):
            if not taps:
                return []
            keys = [*taps, LOGITS]
            teacher = {key: teacher_outputs[key] for key in keys}
            student = {key: student_outputs[key] for key in keys}
            value = base.per_sample_loss(self.feature_loss, teacher, student, labels)
            return [(_feature_term_names(self.feature_loss, taps)[0], value, next(iter(self.tap_weights.values())))]
        return [
            (
                f"feat_{teacher_layer}",
                base.per_sample_loss(
                    self.tap_losses[teacher_layer],
                    teacher_outputs[teacher_layer],
                    student_outputs[teacher_layer],
                    labels,
                ),
                self.tap_weights[teacher_layer],
            )
            for teacher_layer in taps
        ]


# === Building the terms ===
def _check_terms(taps: Mapping[str, str], feature_loss: Any, logits_loss: Any, alpha: float) -> None:
    """Refuses taps without a feature loss, and a distillation part with no term at all."""
    if taps and feature_loss is None:
        raise ValueError(f"taps {dict(taps)} were given but feature_loss=None; pass feature_loss='mse' or taps={{}}.")
    if not taps and logits_loss is None and alpha > 0:
        raise ValueError("Nothing to distil: no taps and logits_loss=None. Give taps, a logits_loss, or alpha=0.")


def _tap_weights(weights: float | Mapping[str, float], taps: Mapping[str, str], feature_loss: Any) -> dict[str, float]:
    """`{teacher_layer: weight}` from one weight for every tap, or from a mapping (taps it leaves out weigh 1)."""
    if not isinstance(weights, Mapping):
        return {teacher_layer: float(weights) for teacher_layer in taps}
    unknown = sorted(set(weights) - set(taps))
    if unknown:
        raise ValueError(f"tap_weights names {unknown}, which are not teacher layers of the taps {sorted(taps)}.")
    if base.reads_all_taps(feature_loss) and len(set(weights.values())) > 1:
        raise ValueError(
            f"{feature_loss.name} reads every tap at once, so one weight applies to it; "
            "pass tap_weights as a number (set the loss's own weights in feature_loss={'name': ..., ...})."
        )
    return {teacher_layer: float(weights.get(teacher_layer, 1.0)) for teacher_layer in taps}


def _tap_losses(feature_loss: Any, teacher_shapes: Mapping[str, tuple]) -> dict:
    """`{teacher_layer: loss}`: one shared stateless loss, or a built copy per tap of a loss with weights (none for a loss reading every tap)."""
    losses = {}
    if base.reads_all_taps(feature_loss):
        return losses
    for index, (teacher_layer, shape) in enumerate(teacher_shapes.items()):
        loss = feature_loss
        if base.is_stateful(loss):
            if index:
                loss = type(loss).from_config(
                    dict(loss.get_config(), name=f"{loss.name}_{teacher_layer.replace('/', '__')}")
                )
            if not loss.built:
                loss.build(shape, shape)
        losses[teacher_layer] = loss
    return losses


def _feature_term_names(feature_loss: Any, taps: Mapping[str, str]) -> list[str]:
    """The metric names of the feature terms: `feat_<teacher layer>` per tap, or `feat_<loss name>` for a loss reading every tap."""
    if base.reads_all_taps(feature_loss) and taps:
        return [f"feat_{feature_loss.name}"]
    return [f"feat_{teacher_layer}" for teacher_layer in taps]


# === The compiled metrics' inputs ===
def metric_inputs(labels, logits, sample_weight=None, ignore_label: int | None = dense.IGNORE_LABEL) -> tuple[Any, Any]:
    """`(labels, sample_weight)` for the compiled metrics, counting the labelled samples only (`UNLABELED` ones weigh 0).

    For logit maps the labels are masks at the logits' size and the weights count the valid pixels (`kdistill.losses.dense`).
    """
    if dense.is_dense(logits):
        return _dense_metric_inputs(labels, logits, sample_weight, ignore_label)
    if labels is None:  # images without labels (a transfer set): metrics count nothing, but are built as usual
        labels = ops.zeros(ops.shape(logits)[:1], "int32")
        sample_weight = ops.zeros(ops.shape(logits)[:1], "float32")
    mask = label_mask(labels)
    if mask is not None:
        labels = ops.where(labels >= 0, labels, ops.zeros_like(labels))
        sample_weight = (
            mask if sample_weight is None else mask * ops.cast(ops.reshape(sample_weight, ops.shape(mask)), "float32")
        )
    return labels, sample_weight


def _dense_metric_inputs(labels, logits, sample_weight, ignore_label):
    """Pixel labels and per-pixel weights (valid pixels, times each sample's weight) for metrics on logit maps."""
    if labels is None:
        zeros = ops.zeros(ops.shape(logits)[:3], "int32")
        return zeros, ops.cast(zeros, "float32")
    labels, valid = dense.pixel_labels(labels, tuple(logits.shape[1:3]), ignore_label)
    if sample_weight is not None:
        valid = valid * ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1, 1))
    return labels, valid
