"""Distillation losses, written with `keras.ops` so they run on every backend.

Each loss is two things, as in Keras itself: a plain function that does the
math and returns one value per sample, and a small `keras.losses.Loss`
subclass that wraps it and round-trips through `get_config`.

Convention: `y_true` is the teacher's output, `y_pred` the student's.

Example:
    >>> import numpy as np, kdistill
    >>> teacher = np.array([[2.0, 0.5, -1.0]], dtype="float32")
    >>> student = np.array([[1.0, 1.0, 0.0]], dtype="float32")
    >>> loss = kdistill.losses.get("kl", temperature=2.0)
    >>> float(loss(teacher, student)) > 0
    True
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

import keras
from keras import ops

from kdistill._loss_utils import EPSILON as _EPSILON
from kdistill._loss_utils import check_temperature as _check_temperature
from kdistill._loss_utils import flatten_per_sample as _flatten_per_sample

__all__ = [
    "feature_mse",
    "kd_kl_divergence",
    "FeatureMSE",
    "LogitsKL",
    "Combined",
    "get",
    "available",
]

def _l2_normalize_per_channel(x):
    """L2-normalises each channel over its spatial positions (or the whole vector)."""
    if len(x.shape) > 2:
        channels = ops.shape(x)[-1]
        flat = ops.reshape(x, (ops.shape(x)[0], -1, channels))
        norm = ops.sqrt(ops.sum(ops.square(flat), axis=1, keepdims=True) + _EPSILON)
        return ops.reshape(flat / norm, ops.shape(x))
    norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + _EPSILON)
    return x / norm


def feature_mse(teacher_features, student_features, normalize: bool = False):
    """FitNets feature loss: mean squared error between feature tensors.

    `loss_i = mean_j (t_ij - s_ij)^2` over every non-batch element `j` of
    sample `i` (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015).

    Args:
        teacher_features: teacher tensor, `(batch, ...)`.
        student_features: projected student tensor of the same shape.
        normalize: if True, each channel is L2-normalised over its spatial
            positions first (for a vector, the whole vector is normalised), so
            the loss compares patterns rather than magnitudes.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:
        >>> import numpy as np
        >>> t = np.ones((2, 4, 4, 3), "float32"); s = np.zeros((2, 4, 4, 3), "float32")
        >>> [float(v) for v in feature_mse(t, s)]
        [1.0, 1.0]
    """
    teacher_features = ops.cast(teacher_features, "float32")
    student_features = ops.cast(student_features, "float32")
    if tuple(teacher_features.shape[1:]) != tuple(student_features.shape[1:]):
        raise ValueError(
            "feature_mse needs teacher and student features of the same shape, "
            f"received teacher {tuple(teacher_features.shape)} and student "
            f"{tuple(student_features.shape)}. FeatureDistiller inserts a "
            "projection that maps the student feature to the teacher's shape."
        )
    if normalize:
        teacher_features = _l2_normalize_per_channel(teacher_features)
        student_features = _l2_normalize_per_channel(student_features)
    squared = ops.square(teacher_features - student_features)
    return ops.mean(_flatten_per_sample(squared), axis=-1)


def kd_kl_divergence(teacher_logits, student_logits, temperature: float = 4.0):
    """Hinton knowledge-distillation loss: KL of softened distributions times T².

    `loss_i = T² · Σ_c p_t(c) · (log p_t(c) − log p_s(c))` with
    `p = softmax(logits / T)` (Hinton et al., "Distilling the Knowledge in a
    Neural Network", 2015). The T² factor keeps gradient magnitudes comparable
    across temperatures.

    Args:
        teacher_logits: `(batch, classes)` teacher logits.
        student_logits: `(batch, classes)` student logits.
        temperature: softening temperature, > 0.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:
        >>> import numpy as np
        >>> z = np.array([[1.0, 2.0, 3.0]], "float32")
        >>> abs(float(kd_kl_divergence(z, z, 2.0)[0])) < 1e-6
        True
    """
    _check_temperature(temperature)
    teacher_logits = ops.cast(teacher_logits, "float32") / temperature
    student_logits = ops.cast(student_logits, "float32") / temperature
    teacher_log_probs = ops.log_softmax(teacher_logits, axis=-1)
    student_log_probs = ops.log_softmax(student_logits, axis=-1)
    teacher_probs = ops.exp(teacher_log_probs)
    kl = ops.sum(teacher_probs * (teacher_log_probs - student_log_probs), axis=-1)
    return kl * (temperature**2)


@keras.saving.register_keras_serializable(package="kdistill")
class FeatureMSE(keras.losses.Loss):
    """FitNets MSE between teacher and (projected) student features.

    Args:
        normalize: L2-normalise each channel before comparing (see `feature_mse`).
        reduction: Keras reduction for `__call__`.
        name: loss name.

    Example:
        >>> import numpy as np
        >>> loss = FeatureMSE()
        >>> float(loss(np.ones((2, 3), "float32"), np.zeros((2, 3), "float32")))
        1.0
    """

    def __init__(self, normalize: bool = False, reduction="sum_over_batch_size", name="feature_mse"):
        super().__init__(name=name, reduction=reduction)
        self.normalize = bool(normalize)

    def call(self, y_true, y_pred):
        return feature_mse(y_true, y_pred, normalize=self.normalize)

    def get_config(self):
        config = super().get_config()
        config.update({"normalize": self.normalize})
        return config


@keras.saving.register_keras_serializable(package="kdistill")
class LogitsKL(keras.losses.Loss):
    """Hinton KD: temperature-softened KL divergence, scaled by T².

    Args:
        temperature: softening temperature, > 0.
        reduction: Keras reduction for `__call__`.
        name: loss name.

    Example:
        >>> import numpy as np
        >>> loss = LogitsKL(temperature=4.0)
        >>> z = np.array([[0.0, 1.0]], "float32")
        >>> abs(float(loss(z, z))) < 1e-6
        True
    """

    def __init__(self, temperature: float = 4.0, reduction="sum_over_batch_size", name="kd_kl"):
        super().__init__(name=name, reduction=reduction)
        _check_temperature(temperature)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        return kd_kl_divergence(y_true, y_pred, temperature=self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config


@keras.saving.register_keras_serializable(package="kdistill")
class Combined(keras.losses.Loss):
    """A weighted sum of distillation losses on the same pair of tensors.

    Built by `get` from a list: `[("at", 1000.0), ("sp", 3000.0)]`, or
    `[{"name": "rkd", "weight": 1.0, "angle_weight": 0.0}, "mse"]`.

    Example:
        >>> import numpy as np
        >>> loss = get([("mse", 2.0), ("normalized_mse", 1.0)], kind="feature")
        >>> round(float(loss(np.ones((2, 3), "float32"), np.zeros((2, 3), "float32"))), 4)  # 2 * 1 + 1 * 1/3
        2.3333
    """

    def __init__(self, losses, weights=None, reduction="sum_over_batch_size", name="combined"):
        super().__init__(name=name, reduction=reduction)
        self.losses = [get(loss) for loss in losses]
        self.weights = [float(w) for w in (weights if weights is not None else [1.0] * len(self.losses))]
        if len(self.weights) != len(self.losses):
            raise ValueError(f"Combined: {len(self.losses)} losses but {len(self.weights)} weights.")
        self.uses_labels = any(getattr(loss, "uses_labels", False) for loss in self.losses)

    def _part(self, loss, y_true, y_pred, labels):
        if labels is not None and getattr(loss, "uses_labels", False):
            return loss.call_with_labels(y_true, y_pred, labels)
        return loss.call(y_true, y_pred)

    def call(self, y_true, y_pred):
        return self.call_with_labels(y_true, y_pred, None)

    def call_with_labels(self, y_true, y_pred, labels):
        total = 0.0
        for weight, loss in zip(self.weights, self.losses):
            total = total + weight * ops.cast(self._part(loss, y_true, y_pred, labels), "float32")
        return total

    def get_config(self):
        config = super().get_config()
        config.update({"losses": [keras.saving.serialize_keras_object(loss) for loss in self.losses], "weights": list(self.weights)})
        return config


from kdistill import crd, feature_losses, logit_losses  # noqa: E402 - registered below, after the shared helpers above

# name -> (class, kind, the keyword arguments a name implies)
_REGISTRY: dict[str, tuple[type, str, dict[str, Any]]] = {
    "mse": (FeatureMSE, "feature", {}),
    "fitnets": (FeatureMSE, "feature", {}),
    "normalized_mse": (FeatureMSE, "feature", {"normalize": True}),
    "at": (feature_losses.AttentionTransfer, "feature", {}),
    "sp": (feature_losses.SimilarityPreserving, "feature", {}),
    "rkd": (feature_losses.RKD, "feature", {}),
    "pkt": (feature_losses.PKT, "feature", {}),
    "hcl": (feature_losses.HierarchicalContextLoss, "feature", {}),
    "crd": (crd.ContrastiveRepresentationLoss, "feature", {}),
    "kl": (LogitsKL, "logits", {}),
    "kd": (LogitsKL, "logits", {}),
    "dkd": (logit_losses.DKD, "logits", {}),
    "standardized_kd": (logit_losses.StandardizedKD, "logits", {}),
}

_ACCEPTS_TEMPERATURE = (LogitsKL, logit_losses.DKD, logit_losses.StandardizedKD)


def available(kind: str | None = None) -> list[str]:
    """Names `get` accepts, optionally only `"feature"` or `"logits"` losses."""
    return sorted(name for name, (_, k, _) in _REGISTRY.items() if kind in (None, k))


def get(identifier: str | keras.losses.Loss | Callable | dict, kind: str | None = None, **kwargs) -> keras.losses.Loss | Callable:
    """Returns a distillation loss from a name, a config dict or an instance.

    Args:
        identifier: a registered name (see `available()`), `{"name": ...,
            option: value}`, a list of names / `(name, weight)` pairs /
            such dicts with a `"weight"` (a `Combined` weighted sum), a
            serialized loss config, a `keras.losses.Loss` or a callable
            `fn(teacher, student) -> per-sample loss`.
        kind: `"feature"` or `"logits"` to restrict names to that kind.
        **kwargs: options for a named loss, e.g. `temperature=4.0`; options a
            loss does not take (temperature for a feature loss) are ignored.

    Returns:
        A loss object whose `call(teacher, student)` returns per-sample values.

    Raises:
        ValueError: for an unknown name, listing the known ones.

    Example:
        >>> get("kl", temperature=2.0).temperature
        2.0
    """
    if isinstance(identifier, (keras.losses.Loss, keras.layers.Layer)) or (callable(identifier) and not isinstance(identifier, str)):
        return identifier
    if isinstance(identifier, (list, tuple)) and not (len(identifier) == 2 and isinstance(identifier[0], str) and isinstance(identifier[1], (int, float))):
        parts, weights = [], []
        for entry in identifier:
            if isinstance(entry, (list, tuple)) and len(entry) == 2:
                entry, weight = entry
            elif isinstance(entry, dict) and "name" in entry:
                entry = dict(entry)
                weight = entry.pop("weight", 1.0)
            else:
                weight = 1.0
            parts.append(get(entry, kind=kind, **kwargs))
            weights.append(weight)
        if not parts:
            raise ValueError("An empty list of losses was given; name at least one, e.g. ['mse'].")
        return Combined(parts, weights)
    if isinstance(identifier, (list, tuple)):
        return get([identifier], kind=kind, **kwargs)
    if isinstance(identifier, dict) and "name" in identifier and "class_name" not in identifier:
        options = dict(identifier)
        name = options.pop("name")
        if "weight" in options:
            return get([dict(identifier)], kind=kind, **kwargs)
        return get(name, kind=kind, **{**kwargs, **options})
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if not isinstance(identifier, str):
        raise TypeError(
            f"A distillation loss must be a name, a config dict, a keras.losses.Loss or a callable; "
            f"received {type(identifier).__name__}: {identifier!r}."
        )
    key = identifier.lower()
    known = available(kind)
    if key not in known:
        close = difflib.get_close_matches(key, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        label = f"{kind} loss" if kind else "distillation loss"
        raise ValueError(f"Unknown {label} {identifier!r}.{hint} Known: {', '.join(known)}.")
    cls, _, implied = _REGISTRY[key]
    options = dict(implied)
    for option, value in kwargs.items():
        if option == "temperature" and cls not in _ACCEPTS_TEMPERATURE:
            continue
        options[option] = value
    return cls(**options)
