"""IRG: distillation of the instance relationship graph (vertices, edges, transformations).

Liu, Cao, Li, Yuan, Hu, Li & Duan, "Knowledge Distillation via Instance
Relationship Graph", CVPR 2019. The graph of a batch has the images as vertices
(their logits), edges weighted by the distance between two images' features at
a tap, and a transformation from one tap to the next (each image's distance
between its features at consecutive taps). The student matches the teacher's
graph: `loss = vertex_weight · MSE(z_s, z_t) + edge_weight · mean_taps MSE(E_s, E_t)
+ transformation_weight · mean_pairs MSE(T_s, T_t)`, with each distance matrix
or vector divided by its largest entry.

This transcribes the PyTorch port in AberHu/Knowledge-Distillation-Zoo,
`kd_losses/irg.py` (`IRG.forward`, `euclidean_dist_fm`, `euclidean_dist_feat`,
`euclidean_dist_fms`), whose `train_kd.py` passes `[rb2, rb3, feat, out]` (two
residual stages, the pooled features, the logits) with `--w_irg_vert 0.1
--w_irg_edge 5.0 --w_irg_tran 5.0` by default. The authors' own code is Caffe
(yufanLIU/IRG). Where kdistill differs:

* Taps: the Zoo's fixed `(fm1, fm2, feat)` become every tap, in tap order. The
  edge term is the mean over all taps (the Zoo averages its three); the
  transformation term is the mean over consecutive *feature-map* taps (rank 4;
  the Zoo has the one pair `fm1 -> fm2`); vector taps (a pooling layer, the
  Zoo's `feat`) add edge terms only. With a single map tap there is no
  transformation term.
* Transformation alignment: the Zoo pools the earlier map to the later one's
  size when it is larger and, when the later map has more channels, averages
  channel pairs `(fm2[:, 0::2] + fm2[:, 1::2]) / 2` (ratio 2 only; other shapes
  fail there). Here whichever map is larger is adaptive-average-pooled to the
  smaller size, spatially and over channels (PyTorch's adaptive bins), which is
  the Zoo's rule for its shapes and groups `k` neighbouring channels for a
  ratio `k`; for ratios that are not whole numbers the bins overlap as in
  `adaptive_avg_pool`.
* Student maps: in kdistill the student's features arrive projected to the
  teacher's shapes, so the student's transformation is measured between its
  projected maps; the Zoo measures it between the student's own maps.
* The Zoo divides by the maximum directly; here by `max(maximum, 1e-12)`, the
  same for any batch of two or more, and 0 rather than NaN for a batch of one.

The loss relates the images of a batch: its batch-level value is repeated once
per sample. It reads every tap at once (`reads_all_taps = True`), so use it as a
`FeatureDistiller` `feature_loss`. Typical setting (the Zoo's CIFAR-100 recipe):
`feature_loss="irg"` with two or three taps (late stages, optionally the pooled
features) and the default weights, beside `logits_loss="kl"`.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> teacher = {"stage1": rng.normal(size=(4, 8, 8, 4)).astype("float32"),
    ...            "stage2": rng.normal(size=(4, 4, 4, 8)).astype("float32"),
    ...            "logits": rng.normal(size=(4, 10)).astype("float32")}
    >>> student = {key: value + 0.5 * rng.normal(size=value.shape).astype("float32") for key, value in teacher.items()}
    >>> loss = IRG()
    >>> values = loss.call(teacher, student)  # one value per sample, all equal
    >>> tuple(values.shape), bool(float(values[0]) > 0)
    ((4,), True)
    >>> float(loss(teacher, teacher))
    0.0
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kdistill.losses._utils import EPSILON, broadcast_to_batch, flatten_per_sample
from kdistill.losses.base import DistillationLoss
from kdistill.losses.registry import register

__all__ = ["irg", "irg_terms", "edge_distances", "transformation_distances", "IRG"]

LOGITS = "logits"


def _divide_by_max(distances):
    return distances / ops.maximum(ops.max(distances), EPSILON)


def edge_distances(features, squared: bool = True):
    """IRG edges at one tap: the batch's pairwise distance matrix, diagonal zeroed, divided by its maximum.

    The Zoo's `euclidean_dist_fm` / `euclidean_dist_feat`: features flattened
    per sample, `d_ij = ‖f_i − f_j‖²` (clamped at 1e-12; its square root when
    `squared=False`), `d_ii = 0`, then `d / max(d)`.

    Returns:
        A float32 `(batch, batch)` matrix.
    """
    flat = flatten_per_sample(ops.cast(features, "float32"))
    norms = ops.sum(ops.square(flat), axis=1)
    distances = ops.maximum(norms[None, :] + norms[:, None] - 2.0 * ops.matmul(flat, ops.transpose(flat)), EPSILON)
    if not squared:
        distances = ops.sqrt(distances)
    distances = distances * (1.0 - ops.eye(ops.shape(flat)[0], dtype="float32"))
    return _divide_by_max(distances)


def _adaptive_mean(x, axis: int, size: int):
    """Averages `x` along `axis` into `size` bins, as PyTorch's adaptive pooling: bin i covers floor(i·n/size) to ceil((i+1)·n/size)."""
    length = x.shape[axis]
    if length == size:
        return x
    if length % size == 0:  # equal bins: one reshape
        grouped = [-1] + list(x.shape[1:axis]) + [size, length // size] + list(x.shape[axis + 1 :])
        return ops.mean(ops.reshape(x, grouped), axis=axis + 1)
    bins = []
    for i in range(size):
        start, stop = (i * length) // size, -(-((i + 1) * length) // size)
        bins.append(ops.mean(ops.take(x, list(range(start, stop)), axis=axis), axis=axis))
    return ops.stack(bins, axis=axis)


def _align(earlier, later):
    """Pools whichever map is larger (height, width, channels) to the smaller one's size, as the Zoo's `euclidean_dist_fms`."""
    for axis in (1, 2, 3):
        size = min(earlier.shape[axis], later.shape[axis])
        earlier, later = _adaptive_mean(earlier, axis, size), _adaptive_mean(later, axis, size)
    return earlier, later


def transformation_distances(earlier, later, squared: bool = True):
    """IRG transformation between two `(batch, H, W, C)` maps: each image's distance from one tap to the next.

    The Zoo's `euclidean_dist_fms`: the maps are brought to one shape (see
    `_align`), `d_i = ‖f_i^earlier − f_i^later‖²` (clamped at 1e-12; its square
    root when `squared=False`), then `d / max(d)`.

    Returns:
        A float32 `(batch,)` vector.
    """
    earlier, later = ops.cast(earlier, "float32"), ops.cast(later, "float32")
    if len(earlier.shape) != 4 or len(later.shape) != 4:
        raise ValueError(
            f"The IRG transformation needs (batch, H, W, C) maps, received shapes {tuple(earlier.shape)} and {tuple(later.shape)}."
        )
    earlier, later = _align(earlier, later)
    distances = ops.maximum(ops.sum(ops.square(flatten_per_sample(earlier - later)), axis=-1), EPSILON)
    if not squared:
        distances = ops.sqrt(distances)
    return _divide_by_max(distances)


def _check_dicts(teacher: Any, student: Any) -> list:
    """The tap names (every key but "logits", in order); raises unless both sides are dicts with the same keys."""
    if not isinstance(teacher, dict) or not isinstance(student, dict):
        raise ValueError(
            "IRG reads every tap at once: it needs teacher and student as dicts {teacher_layer: feature, ..., 'logits': logits}, "
            f"received {type(teacher).__name__} and {type(student).__name__}. Use it as a FeatureDistiller feature_loss "
            "(feature_loss='irg' with taps={...}), which passes those dicts; it cannot be a per-tap or logits loss."
        )
    if list(teacher) != list(student):
        raise ValueError(
            f"IRG needs the same keys on both sides, in the same order: teacher {list(teacher)}, student {list(student)}."
        )
    return [key for key in teacher if key != LOGITS]


def irg_terms(teacher: dict, student: dict, squared: bool = True) -> dict:
    """The three unweighted IRG terms of a batch, as float32 scalars.

    Args:
        teacher, student: `{teacher_layer: feature, ..., "logits": logits}`
            (student features projected to the teacher's shapes).
        squared: squared Euclidean distances, as the Zoo calls them (True).

    Returns:
        `{"vertex": MSE of the logits (0 without "logits"), "edge": mean over
        taps of the MSE of edge matrices, "transformation": mean over
        consecutive map taps of the MSE of transformation vectors (0 with fewer
        than two map taps)}`.
    """
    taps = _check_dicts(teacher, student)
    zero = ops.zeros((), "float32")
    vertex = zero
    if LOGITS in teacher:
        vertex = ops.mean(ops.square(ops.cast(student[LOGITS], "float32") - ops.cast(teacher[LOGITS], "float32")))
    edges = [
        ops.mean(ops.square(edge_distances(student[tap], squared) - edge_distances(teacher[tap], squared)))
        for tap in taps
    ]
    maps = [tap for tap in taps if len(teacher[tap].shape) == 4]
    transformations = [
        ops.mean(
            ops.square(
                transformation_distances(student[a], student[b], squared)
                - transformation_distances(teacher[a], teacher[b], squared)
            )
        )
        for a, b in zip(maps, maps[1:])
    ]
    edge = sum(edges[1:], edges[0]) / len(edges) if edges else zero
    transformation = sum(transformations[1:], transformations[0]) / len(transformations) if transformations else zero
    return {"vertex": vertex, "edge": edge, "transformation": transformation}


def irg(
    teacher: dict,
    student: dict,
    vertex_weight: float = 0.1,
    edge_weight: float = 5.0,
    transformation_weight: float = 5.0,
    squared: bool = True,
):
    """IRG loss: `vertex_weight · vertex + edge_weight · edge + transformation_weight · transformation` (see `irg_terms`).

    Args:
        teacher, student: `{teacher_layer: feature, ..., "logits": logits}`.
        vertex_weight, edge_weight, transformation_weight: the Zoo's
            `w_irg_vert`, `w_irg_edge`, `w_irg_tran` (0.1, 5, 5).
        squared: squared Euclidean distances (the Zoo's choice).

    Returns:
        `(batch,)` float32: the batch-level value repeated per sample.

    Raises:
        ValueError: for inputs that are not dicts of taps, or dicts with
            different keys, or no logits while `vertex_weight` is not 0.
    """
    taps = _check_dicts(teacher, student)
    if vertex_weight and LOGITS not in teacher:
        raise ValueError(
            f"IRG's vertex term compares logits, but the dicts hold only {taps}; add 'logits' or set vertex_weight=0."
        )
    if not taps and LOGITS not in teacher:
        raise ValueError("IRG received empty dicts; it needs at least one tap or the logits.")
    terms = irg_terms(teacher, student, squared=squared)
    total = (
        vertex_weight * terms["vertex"] + edge_weight * terms["edge"] + transformation_weight * terms["transformation"]
    )
    return broadcast_to_batch(total, teacher[LOGITS] if LOGITS in teacher else teacher[taps[0]])


@register("irg", kind="feature")
@keras.saving.register_keras_serializable(package="kdistill")
class IRG(DistillationLoss):
    """Instance Relationship Graph distillation (see `irg` and the module docstring). Config name: `"irg"`.

    Called once per step with every tap (`reads_all_taps = True`): use it as
    `FeatureDistiller(..., feature_loss="irg")`; the distiller reports it as the
    one metric `feat_irg`.

    Args:
        vertex_weight: weight of the logits MSE (the Zoo's `w_irg_vert`, 0.1).
        edge_weight: weight of the edge term (`w_irg_edge`, 5.0).
        transformation_weight: weight of the transformation term (`w_irg_tran`, 5.0).
        squared: squared Euclidean distances (True, as the Zoo).

    Example:
        >>> IRG(edge_weight=2.0).get_config()["edge_weight"]
        2.0
    """

    reads_all_taps = True

    def __init__(
        self,
        vertex_weight: float = 0.1,
        edge_weight: float = 5.0,
        transformation_weight: float = 5.0,
        squared: bool = True,
        reduction="sum_over_batch_size",
        name="irg",
    ):
        super().__init__(
            irg,
            reduction=reduction,
            name=name,
            vertex_weight=float(vertex_weight),
            edge_weight=float(edge_weight),
            transformation_weight=float(transformation_weight),
            squared=bool(squared),
        )
