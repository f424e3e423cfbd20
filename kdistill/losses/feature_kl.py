"""Feature KL: the KL divergence of temperature-softened features over their channels.

The textbook recipe for distilling a ResNet's intermediate features, in three
steps (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network",
2015, for the softened KL and its T² factor; Romero et al., "FitNets: Hints for
Thin Deep Nets", ICLR 2015, for matching a projected student feature to the
teacher's):

1. an MSE between the teacher's feature and the student's projected feature
   (`feature_loss="mse"`);
2. a KL divergence between the two after a softmax with temperature over the
   channels, `F.kl_div(F.log_softmax(projected / T, dim=1),
   F.softmax(teacher / T, dim=1), reduction="batchmean") * T**2` in PyTorch
   (this module, `feature_loss="kl"`);
3. `alpha * feature KL + (1 - alpha) * CE`, without a logits term
   (`FeatureDistiller(..., feature_loss="kl", logits_loss=None, alpha=0.9)`).

As a config (YAML):

    feature_loss: {name: kl, temperature: 4.0, spatial: sum}

Example:
    >>> import numpy as np
    >>> feature = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype("float32")
    >>> abs(float(FeatureKL()(feature, feature))) < 1e-6
    True
    >>> float(FeatureKL(temperature=2.0)(feature, -feature)) > 0
    True
"""

from __future__ import annotations

import keras
from keras import ops

from kdistill.losses._utils import check_temperature, flatten_per_sample
from kdistill.losses.base import DistillationLoss
from kdistill.losses.registry import register

__all__ = ["SPATIAL_REDUCTIONS", "check_spatial", "check_same_shape", "feature_kl", "FeatureKL"]

#: how a map's per-position KL values become one per sample
SPATIAL_REDUCTIONS = ("sum", "mean")


def check_spatial(spatial) -> None:
    """Raises a clear error unless `spatial` is one of `SPATIAL_REDUCTIONS`."""
    if spatial not in SPATIAL_REDUCTIONS:
        raise ValueError(
            f"spatial must be 'sum' (PyTorch's kl_div batchmean on NCHW maps) or 'mean' (the average over positions), "
            f"received spatial={spatial!r}."
        )


def check_same_shape(teacher, student, name: str) -> None:
    """Raises a clear error when the teacher's and the (projected) student's features differ in shape."""
    teacher_shape, student_shape = tuple(teacher.shape), tuple(student.shape)
    same = len(teacher_shape) == len(student_shape) and all(
        t is None or s is None or t == s for t, s in zip(teacher_shape, student_shape)
    )
    if not same:
        raise ValueError(
            f"{name} compares features of one shape, received teacher {teacher_shape} and student {student_shape}. "
            "Inside FeatureDistiller the projection maps the student to the teacher's shape; called directly, "
            "project the student's feature to the teacher's shape first (see kdistill.adapters)."
        )


def feature_kl(teacher, student, temperature: float = 4.0, spatial: str = "sum"):
    """Per-sample `T² · KL(softmax(teacher / T) ‖ softmax(student / T))` over the channel (last) axis.

    Convention, against PyTorch: the batch mean of these values equals
    `F.kl_div(F.log_softmax(student / T, dim=1), F.softmax(teacher / T, dim=1),
    reduction="batchmean") * T**2` on the same features (NCHW maps there, NHWC
    here, and with `spatial="sum"`). `batchmean` divides the sum over every
    channel and position by the batch size only, so a map's KL is summed over
    its positions; `spatial="mean"` averages it over them instead, which keeps
    the value independent of the map's size. The T² factor (Hinton et al.,
    2015) keeps gradient magnitudes comparable across temperatures.

    Args:
        teacher: the teacher's feature, `(batch, channels)` or `(batch, H, W, channels)`.
        student: the student's feature projected to the teacher's shape.
        temperature: softening temperature, > 0.
        spatial: for maps, "sum" (PyTorch's batchmean) or "mean" over the H·W positions.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Raises:
        ValueError: for a temperature <= 0, an unknown `spatial`, or features of different shapes.

    Example:
        >>> import numpy as np
        >>> teacher = np.array([[2.0, 0.0]], "float32"); student = np.array([[0.0, 0.0]], "float32")
        >>> p = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()  # softmax(teacher / 2)
        >>> round(float(feature_kl(teacher, student, temperature=2.0)[0]), 5) == round(4 * float((p * np.log(2 * p)).sum()), 5)
        True
    """
    check_temperature(temperature)
    check_spatial(spatial)
    teacher = ops.cast(teacher, "float32")
    student = ops.cast(student, "float32")
    check_same_shape(teacher, student, "feature_kl")
    if len(teacher.shape) < 2:
        raise ValueError(
            f"feature_kl needs features of shape (batch, channels) or (batch, H, W, channels), received {tuple(teacher.shape)}."
        )
    teacher_log_probs = ops.log_softmax(teacher / temperature, axis=-1)
    student_log_probs = ops.log_softmax(student / temperature, axis=-1)
    kl = ops.sum(ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
    if len(kl.shape) > 1:  # one value per position of a map
        kl = flatten_per_sample(kl)
        kl = ops.sum(kl, axis=-1) if spatial == "sum" else ops.mean(kl, axis=-1)
    return kl * (temperature**2)


@register("kl", "feature_kl", kind="feature")
@keras.saving.register_keras_serializable(package="kdistill")
class FeatureKL(DistillationLoss):
    """Feature KL (see `feature_kl`). Config names (feature kind): `"kl"`, `"feature_kl"`.

    `kdistill.losses.get("kl", kind="feature")` builds this loss; `get("kl")`
    and `get("kl", kind="logits")` build Hinton's logits KD (`LogitsKL`).

    Args:
        temperature: softening temperature, > 0.
        spatial: "sum" (PyTorch's `kl_div(..., reduction="batchmean")` on maps) or "mean" over positions.

    Example:
        >>> FeatureKL(temperature=2.0, spatial="mean").get_config()["spatial"]
        'mean'
    """

    def __init__(
        self, temperature: float = 4.0, spatial: str = "sum", reduction="sum_over_batch_size", name="feature_kl"
    ):
        check_temperature(temperature)
        check_spatial(spatial)
        super().__init__(feature_kl, reduction=reduction, name=name, temperature=float(temperature), spatial=spatial)
