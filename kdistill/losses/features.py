"""Feature distillation losses: FitNets (MSE), AT, SP, RKD, PKT, HCL (keras.ops only).

Convention (see `kdistill.losses.base`): `y_true` is the teacher's feature,
`y_pred` the (projected) student feature, and `call` returns one value per
sample. SP, RKD and PKT compare samples *within* a batch; their batch-level
value is repeated for every sample so the distiller's mean over the batch
returns it unchanged.

Example:
    >>> import numpy as np
    >>> t = np.random.rand(4, 8, 8, 16).astype("float32")
    >>> float(AttentionTransfer()(t, t))
    0.0
"""

from __future__ import annotations

import keras
from keras import ops

from kdistill.losses._utils import (
    EPSILON,
    broadcast_to_batch,
    flatten_per_sample,
    l2_normalize_rows,
    pool_to_vectors,
    same_batch,
)
from kdistill.losses.base import DistillationLoss
from kdistill.losses.registry import register

__all__ = [
    "feature_mse",
    "attention_transfer",
    "similarity_preserving",
    "rkd_distance",
    "rkd_angle",
    "rkd",
    "pkt",
    "hierarchical_context",
    "FeatureMSE",
    "AttentionTransfer",
    "SimilarityPreserving",
    "RKD",
    "PKT",
    "HierarchicalContextLoss",
]


def _l2_normalize_per_channel(x):
    """L2-normalises each channel over its spatial positions (or the whole vector)."""
    if len(x.shape) > 2:
        channels = ops.shape(x)[-1]
        flat = ops.reshape(x, (ops.shape(x)[0], -1, channels))
        norm = ops.sqrt(ops.sum(ops.square(flat), axis=1, keepdims=True) + EPSILON)
        return ops.reshape(flat / norm, ops.shape(x))
    norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + EPSILON)
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
    return ops.mean(flatten_per_sample(squared), axis=-1)


def _attention_map(features, p: float):
    """`normalize(mean_c |f|^p)` over spatial positions: `(batch, H*W)`."""
    features = ops.cast(features, "float32")
    if len(features.shape) != 4:
        raise ValueError(
            f"Attention transfer needs (batch, H, W, C) feature maps, received shape {tuple(features.shape)}."
        )
    attention = ops.mean(ops.power(ops.abs(features), p), axis=-1)
    return l2_normalize_rows(flatten_per_sample(attention))


def attention_transfer(teacher_features, student_features, p: float = 2.0):
    """Attention Transfer: compare L2-normalised spatial attention maps.

    `Q = normalize(vec(mean_c |F_c|^p))` for teacher and student;
    `loss_i = mean_j (Q_t,ij − Q_s,ij)²`. Zagoruyko & Komodakis, "Paying More
    Attention to Attention", ICLR 2017 (p = 2; the paper weighs the term
    β = 1000 against cross-entropy). The spatial sizes must match (the
    distiller's projection aligns them); channel counts may differ.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    teacher, student = _attention_map(teacher_features, p), _attention_map(student_features, p)
    if teacher.shape[-1] is not None and student.shape[-1] is not None and teacher.shape[-1] != student.shape[-1]:
        raise ValueError(
            f"Attention transfer needs equal spatial sizes: teacher {tuple(teacher_features.shape)}, student {tuple(student_features.shape)}."
        )
    return ops.mean(ops.square(teacher - student), axis=-1)


def _gram(features):
    flat = flatten_per_sample(ops.cast(features, "float32"))
    return l2_normalize_rows(ops.matmul(flat, ops.transpose(flat)))


def similarity_preserving(teacher_features, student_features):
    """Similarity-Preserving KD: match the batch's row-normalised Gram matrices.

    `G = normalize_rows(F Fᵀ)` with `F` the `(batch, features)` flattened
    activations; `loss = ‖G_t − G_s‖²_F / b²`. Tung & Mori, "Similarity-Preserving
    Knowledge Distillation", ICCV 2019 (weight γ = 3000 on CIFAR). Shapes of
    teacher and student may differ: only the b×b similarities are compared.

    Returns:
        The batch value, repeated per sample: `(batch,)`.
    """
    same_batch(teacher_features, student_features, "Similarity-preserving KD")
    difference = _gram(teacher_features) - _gram(student_features)
    batch = ops.cast(ops.shape(difference)[0], "float32")
    return broadcast_to_batch(ops.sum(ops.square(difference)) / (batch * batch), teacher_features)


def _huber(x):
    """Smooth L1 (Huber with delta 1), elementwise."""
    absolute = ops.abs(x)
    return ops.where(absolute < 1.0, 0.5 * ops.square(x), absolute - 0.5)


def _pairwise_distances(x):
    squared = ops.sum(ops.square(x), axis=-1)
    product = ops.matmul(x, ops.transpose(x))
    distances = ops.sqrt(ops.maximum(squared[:, None] + squared[None, :] - 2.0 * product, EPSILON))
    eye = ops.eye(ops.shape(x)[0], dtype="float32")
    return distances * (1.0 - eye)


def _normalized_distances(x):
    distances = _pairwise_distances(x)
    count = ops.cast(ops.shape(x)[0], "float32")
    mean = ops.sum(distances) / ops.maximum(count * (count - 1.0), 1.0)
    return distances / (mean + EPSILON)


def rkd_distance(teacher_features, student_features):
    """RKD distance term: smooth-L1 between mean-normalised pairwise distances.

    `ψ_D(i, j) = ‖f_i − f_j‖ / μ` with μ the mean distance over the batch's
    pairs; `loss = mean_{i≠j} huber(ψ_D^t − ψ_D^s)` over all b² entries
    (the diagonal is 0 for both). Maps are global-average-pooled to vectors
    first. Park et al., "Relational Knowledge Distillation", CVPR 2019.
    """
    same_batch(teacher_features, student_features, "RKD")
    teacher, student = pool_to_vectors(teacher_features), pool_to_vectors(student_features)
    return broadcast_to_batch(
        ops.mean(_huber(_normalized_distances(teacher) - _normalized_distances(student))), teacher_features
    )


def _angles(x):
    """`<e_ij, e_kj>` for all triplets, with `e_ij = normalize(f_i − f_j)`: `(b, b, b)`."""
    differences = x[:, None, :] - x[None, :, :]  # (i, j, feature) = f_i - f_j
    norms = ops.sqrt(ops.sum(ops.square(differences), axis=-1, keepdims=True) + EPSILON)
    unit = differences / norms
    # angle[j, i, k] = <e_ij, e_kj>; the unit vectors towards j are unit[:, j].
    towards = ops.transpose(unit, (1, 0, 2))  # (j, i, feature)
    return ops.matmul(towards, ops.transpose(towards, (0, 2, 1)))


def rkd_angle(teacher_features, student_features):
    """RKD angle term: smooth-L1 between the cosines of every triplet's angle.

    `ψ_A(i, j, k) = <e_ij, e_kj>` with `e_ij = (f_i − f_j)/‖f_i − f_j‖`;
    `loss = mean huber(ψ_A^t − ψ_A^s)` over all b³ triplets (costs b³·d; maps
    are pooled to vectors first). Park et al., CVPR 2019.
    """
    same_batch(teacher_features, student_features, "RKD")
    teacher, student = pool_to_vectors(teacher_features), pool_to_vectors(student_features)
    return broadcast_to_batch(ops.mean(_huber(_angles(teacher) - _angles(student))), teacher_features)


def _cosine_probabilities(x):
    x = l2_normalize_rows(flatten_per_sample(ops.cast(x, "float32")))
    similarity = (ops.matmul(x, ops.transpose(x)) + 1.0) / 2.0
    return similarity / ops.sum(similarity, axis=1, keepdims=True)


def pkt(teacher_features, student_features):
    """Probabilistic Knowledge Transfer: KL between cosine-similarity distributions.

    `p_{j|i} = K(f_i, f_j) / Σ_k K(f_i, f_k)` with the cosine kernel shifted to
    [0, 1], `K = (cos + 1) / 2`; `loss = mean_{i,j} p^t_{j|i} log(p^t_{j|i} / p^s_{j|i})`,
    the mean over all b² entries as in the authors' `cosine_similarity_loss`
    (so the value, and the weight that suits it, do not grow with the batch).
    Passalis & Tefas, "Learning Deep Representations with Probabilistic
    Knowledge Transfer", ECCV 2018. Shapes may differ between teacher and student.
    """
    same_batch(teacher_features, student_features, "PKT")
    teacher, student = _cosine_probabilities(teacher_features), _cosine_probabilities(student_features)
    entries = teacher * (ops.log(teacher + 1e-7) - ops.log(student + 1e-7))
    return broadcast_to_batch(ops.mean(entries), teacher_features)


def _adaptive_average_pool(features, size: int):
    """`(batch, H, W, C)` -> `(batch, size, size, C)`, bins as PyTorch's adaptive_avg_pool2d: rows floor(iH/size) to ceil((i+1)H/size)."""
    height, width = features.shape[1], features.shape[2]
    rows = []
    for i in range(size):
        top, bottom = (i * height) // size, -(-((i + 1) * height) // size)
        cells = []
        for j in range(size):
            left, right = (j * width) // size, -(-((j + 1) * width) // size)
            cells.append(ops.mean(features[:, top:bottom, left:right, :], axis=(1, 2)))
        rows.append(ops.stack(cells, axis=1))
    return ops.stack(rows, axis=1)


def hierarchical_context(teacher_features, student_features, levels=(4, 2, 1)):
    """Hierarchical context loss (HCL) of ReviewKD: MSE of the maps and of their spatial pyramid.

    `loss_i = (MSE(F_t, F_s) + Σ_k 2^-k · MSE(pool_lk(F_t), pool_lk(F_s))) / (1 + Σ_k 2^-k)`
    over the levels `l_k` (4, 2, 1 cells a side) smaller than the map, where
    `pool_l` is adaptive average pooling to `l × l`. Chen et al., "Distilling
    Knowledge via Knowledge Review", CVPR 2021. It compares each tap after the
    student's adapter: with the default projections this is HCL alone; full
    ReviewKD pairs it with the attention-based fusion of student stages (ABF,
    `adapter="review"`, `kdistill.adapters.review`).

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    teacher, student = ops.cast(teacher_features, "float32"), ops.cast(student_features, "float32")
    if len(teacher.shape) != 4 or tuple(teacher.shape[1:]) != tuple(student.shape[1:]):
        raise ValueError(
            f"HCL needs (batch, H, W, C) maps of one shape: teacher {tuple(teacher.shape)}, student {tuple(student.shape)}."
        )
    total = ops.mean(ops.square(flatten_per_sample(teacher - student)), axis=-1)
    weight, weights = 1.0, 1.0
    for level in levels:
        if level >= teacher.shape[1]:
            continue
        weight /= 2.0
        pooled = _adaptive_average_pool(teacher, level) - _adaptive_average_pool(student, level)
        total = total + weight * ops.mean(ops.square(flatten_per_sample(pooled)), axis=-1)
        weights += weight
    return total / weights


def rkd(teacher_features, student_features, distance_weight: float = 25.0, angle_weight: float = 50.0):
    """Relational KD: `distance_weight · distance + angle_weight · angle` (see `rkd_distance`, `rkd_angle`)."""
    total = distance_weight * rkd_distance(teacher_features, student_features)
    if angle_weight:
        total = total + angle_weight * rkd_angle(teacher_features, student_features)
    return total


@register("mse", "fitnets", kind="feature")
@register("normalized_mse", kind="feature", normalize=True)
@keras.saving.register_keras_serializable(package="kdistill")
class FeatureMSE(DistillationLoss):
    """FitNets MSE between teacher and (projected) student features. Config names: `"mse"`, `"fitnets"`, `"normalized_mse"`.

    Args:
        normalize: L2-normalise each channel before comparing (see `feature_mse`).

    Example:
        >>> import numpy as np
        >>> loss = FeatureMSE()
        >>> float(loss(np.ones((2, 3), "float32"), np.zeros((2, 3), "float32")))
        1.0
    """

    def __init__(self, normalize: bool = False, reduction="sum_over_batch_size", name="feature_mse"):
        super().__init__(feature_mse, reduction=reduction, name=name, normalize=bool(normalize))


@register("at", kind="feature")
@keras.saving.register_keras_serializable(package="kdistill")
class AttentionTransfer(DistillationLoss):
    """Attention Transfer (see `attention_transfer`). Config name: `"at"`.

    Example:
        >>> AttentionTransfer(p=2.0).get_config()["p"]
        2.0
    """

    def __init__(self, p: float = 2.0, reduction="sum_over_batch_size", name="attention_transfer"):
        super().__init__(attention_transfer, reduction=reduction, name=name, p=float(p))


@register("sp", kind="feature")
@keras.saving.register_keras_serializable(package="kdistill")
class SimilarityPreserving(DistillationLoss):
    """Similarity-Preserving KD (see `similarity_preserving`). Config name: `"sp"`."""

    def __init__(self, reduction="sum_over_batch_size", name="similarity_preserving"):
        super().__init__(similarity_preserving, reduction=reduction, name=name)


@register("rkd", kind="feature")
@keras.saving.register_keras_serializable(package="kdistill")
class RKD(DistillationLoss):
    """Relational KD (see `rkd`). Config name: `"rkd"`.

    Args:
        distance_weight: weight of the distance term (25 in the paper).
        angle_weight: weight of the angle term (50 in the paper).
    """

    def __init__(
        self, distance_weight: float = 25.0, angle_weight: float = 50.0, reduction="sum_over_batch_size", name="rkd"
    ):
        super().__init__(
            rkd,
            reduction=reduction,
            name=name,
            distance_weight=float(distance_weight),
            angle_weight=float(angle_weight),
        )


@register("pkt", kind="feature")
@keras.saving.register_keras_serializable(package="kdistill")
class PKT(DistillationLoss):
    """Probabilistic Knowledge Transfer (see `pkt`). Config name: `"pkt"`."""

    def __init__(self, reduction="sum_over_batch_size", name="pkt"):
        super().__init__(pkt, reduction=reduction, name=name)


@register("hcl", kind="feature")
@keras.saving.register_keras_serializable(package="kdistill")
class HierarchicalContextLoss(DistillationLoss):
    """ReviewKD's hierarchical context loss (see `hierarchical_context`). Config name: `"hcl"`.

    Args:
        levels: pyramid sizes (cells a side); levels not smaller than the map are skipped.

    Example:
        >>> import numpy as np
        >>> t = np.ones((2, 8, 8, 4), "float32")
        >>> [round(float(v), 4) for v in HierarchicalContextLoss().call(t, 0 * t)]
        [1.0, 1.0]
    """

    def __init__(self, levels=(4, 2, 1), reduction="sum_over_batch_size", name="hierarchical_context"):
        super().__init__(
            hierarchical_context, reduction=reduction, name=name, levels=tuple(int(level) for level in levels)
        )
