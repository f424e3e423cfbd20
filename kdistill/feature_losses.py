"""Feature distillation beyond FitNets: AT, SP, RKD, PKT, HCL (keras.ops only).

Convention as in `kdistill.losses`: `y_true` is the teacher's feature,
`y_pred` the (projected) student feature of the same shape, and `call`
returns one value per sample. SP, RKD and PKT compare samples *within* a
batch; their batch-level value is repeated for every sample so the
distiller's mean over the batch returns it unchanged.

Example:
    >>> import numpy as np
    >>> t = np.random.rand(4, 8, 8, 16).astype("float32")
    >>> float(AttentionTransfer()(t, t))
    0.0
"""

from __future__ import annotations

import keras
from keras import ops

from kdistill._loss_utils import EPSILON, flatten_per_sample, l2_normalize_rows, per_sample, pool_to_vectors, same_batch

__all__ = [
    "attention_transfer", "similarity_preserving", "rkd_distance", "rkd_angle", "pkt", "hierarchical_context",
    "AttentionTransfer", "SimilarityPreserving", "RKD", "PKT", "HierarchicalContextLoss",
]


def _attention_map(features, p: float):
    """`normalize(mean_c |f|^p)` over spatial positions: `(batch, H*W)`."""
    features = ops.cast(features, "float32")
    if len(features.shape) != 4:
        raise ValueError(f"Attention transfer needs (batch, H, W, C) feature maps, received shape {tuple(features.shape)}.")
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
        raise ValueError(f"Attention transfer needs equal spatial sizes: teacher {tuple(teacher_features.shape)}, student {tuple(student_features.shape)}.")
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
    return per_sample(ops.sum(ops.square(difference)) / (batch * batch), teacher_features)


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
    return per_sample(ops.mean(_huber(_normalized_distances(teacher) - _normalized_distances(student))), teacher_features)


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
    return per_sample(ops.mean(_huber(_angles(teacher) - _angles(student))), teacher_features)


def _cosine_probabilities(x):
    x = l2_normalize_rows(flatten_per_sample(ops.cast(x, "float32")))
    similarity = (ops.matmul(x, ops.transpose(x)) + 1.0) / 2.0
    return similarity / ops.sum(similarity, axis=1, keepdims=True)


def pkt(teacher_features, student_features):
    """Probabilistic Knowledge Transfer: KL between cosine-similarity distributions.

    `p_{j|i} = K(f_i, f_j) / Σ_k K(f_i, f_k)` with the cosine kernel shifted to
    [0, 1], `K = (cos + 1) / 2`; `loss = mean_i Σ_j p^t_{j|i} log(p^t_{j|i} / p^s_{j|i})`.
    Passalis & Tefas, "Learning Deep Representations with Probabilistic
    Knowledge Transfer", ECCV 2018. Shapes may differ between teacher and student.
    """
    same_batch(teacher_features, student_features, "PKT")
    teacher, student = _cosine_probabilities(teacher_features), _cosine_probabilities(student_features)
    kl = ops.sum(teacher * (ops.log(teacher + EPSILON) - ops.log(student + EPSILON)), axis=1)
    return per_sample(ops.mean(kl), teacher_features)


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
    Knowledge via Knowledge Review", CVPR 2021. Here it compares each tap
    through kdistill's projection; ReviewKD's attention-based fusion of student
    stages (ABF) is not implemented, so this is HCL alone, not full ReviewKD.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    teacher, student = ops.cast(teacher_features, "float32"), ops.cast(student_features, "float32")
    if len(teacher.shape) != 4 or tuple(teacher.shape[1:]) != tuple(student.shape[1:]):
        raise ValueError(f"HCL needs (batch, H, W, C) maps of one shape: teacher {tuple(teacher.shape)}, student {tuple(student.shape)}.")
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


@keras.saving.register_keras_serializable(package="kdistill")
class AttentionTransfer(keras.losses.Loss):
    """Attention Transfer (see `attention_transfer`). Config name: `"at"`.

    Example:
        >>> AttentionTransfer(p=2.0).get_config()["p"]
        2.0
    """

    def __init__(self, p: float = 2.0, reduction="sum_over_batch_size", name="attention_transfer"):
        super().__init__(name=name, reduction=reduction)
        self.p = float(p)

    def call(self, y_true, y_pred):
        return attention_transfer(y_true, y_pred, self.p)

    def get_config(self):
        return dict(super().get_config(), p=self.p)


@keras.saving.register_keras_serializable(package="kdistill")
class SimilarityPreserving(keras.losses.Loss):
    """Similarity-Preserving KD (see `similarity_preserving`). Config name: `"sp"`."""

    def __init__(self, reduction="sum_over_batch_size", name="similarity_preserving"):
        super().__init__(name=name, reduction=reduction)

    def call(self, y_true, y_pred):
        return similarity_preserving(y_true, y_pred)


@keras.saving.register_keras_serializable(package="kdistill")
class RKD(keras.losses.Loss):
    """Relational KD: `distance_weight · distance + angle_weight · angle`. Config name: `"rkd"`.

    Args:
        distance_weight: weight of the distance term (25 in the paper).
        angle_weight: weight of the angle term (50 in the paper).
    """

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0, reduction="sum_over_batch_size", name="rkd"):
        super().__init__(name=name, reduction=reduction)
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    def call(self, y_true, y_pred):
        total = self.distance_weight * rkd_distance(y_true, y_pred)
        if self.angle_weight:
            total = total + self.angle_weight * rkd_angle(y_true, y_pred)
        return total

    def get_config(self):
        return dict(super().get_config(), distance_weight=self.distance_weight, angle_weight=self.angle_weight)


@keras.saving.register_keras_serializable(package="kdistill")
class PKT(keras.losses.Loss):
    """Probabilistic Knowledge Transfer (see `pkt`). Config name: `"pkt"`."""

    def __init__(self, reduction="sum_over_batch_size", name="pkt"):
        super().__init__(name=name, reduction=reduction)

    def call(self, y_true, y_pred):
        return pkt(y_true, y_pred)


@keras.saving.register_keras_serializable(package="kdistill")
class HierarchicalContextLoss(keras.losses.Loss):
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
        super().__init__(name=name, reduction=reduction)
        self.levels = tuple(int(level) for level in levels)

    def call(self, y_true, y_pred):
        return hierarchical_context(y_true, y_pred, self.levels)

    def get_config(self):
        return dict(super().get_config(), levels=list(self.levels))
