"""Contrastive Representation Distillation: embedding heads and a memory of negatives.

Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020.

Example:
    >>> import numpy as np
    >>> crd = ContrastiveRepresentationLoss(embedding_dim=8, memory_size=32)
    >>> t = np.random.rand(4, 16).astype("float32"); s = np.random.rand(4, 12).astype("float32")
    >>> tuple(crd(t, s).shape)
    (4,)
"""

from __future__ import annotations

import keras
from keras import ops

from kdistill.losses._utils import l2_normalize_rows, pool_to_vectors, same_batch
from kdistill.losses.registry import register

__all__ = ["ContrastiveRepresentationLoss"]


@register("crd", kind="feature")
@keras.saving.register_keras_serializable(package="kdistill")
class ContrastiveRepresentationLoss(keras.layers.Layer):
    """CRD as a loss with state: two embedding heads and a memory of teacher embeddings.

    Teacher and student features (maps are global-average-pooled) go through
    a linear head each and are L2-normalised, `e_t` and `e_s`. For sample
    `i`, the positive is the teacher embedding of the same image and the
    negatives are the other images' teacher embeddings in the batch plus the
    `memory_size` most recent teacher embeddings of earlier batches:

        loss_i = −log( exp(e_s,i·e_t,i / τ) / Σ_{k ∈ batch ∪ memory} exp(e_s,i·e_k / τ) )

    This is the InfoNCE form of the CRD bound (τ = 0.07, 128-d embeddings, as
    in the paper). The paper keeps one memory slot per training image, indexed
    by the image's position in the dataset and updated with momentum; here the
    memory is a first-in-first-out queue of recent batches (as in MoCo), so the
    pipeline needs no sample indices. The heads are trained with the student,
    and the heads and the memory are weights of the distiller, saved with it.
    The memory is updated on the TensorFlow backend; on other backends it
    keeps its initial random embeddings (still valid negatives).

    Args:
        embedding_dim: size of both embeddings.
        memory_size: number of past teacher embeddings used as negatives.
        nce_temperature: τ of the contrastive softmax.

    Returns (when called):
        The per-sample loss `(batch,)`.
    """

    uses_labels = False

    def __init__(self, embedding_dim: int = 128, memory_size: int = 4096, nce_temperature: float = 0.07, **kwargs):
        super().__init__(**kwargs)
        if nce_temperature <= 0:
            raise ValueError(f"nce_temperature must be positive, received {nce_temperature}.")
        self.embedding_dim, self.memory_size, self.nce_temperature = (
            int(embedding_dim),
            int(memory_size),
            float(nce_temperature),
        )
        self.teacher_head = keras.layers.Dense(self.embedding_dim, name="crd_teacher_head")
        self.student_head = keras.layers.Dense(self.embedding_dim, name="crd_student_head")

    def build(self, teacher_features_shape, student_features_shape=None):
        teacher_channels = teacher_features_shape[-1]
        student_channels = (student_features_shape or teacher_features_shape)[-1]
        self.teacher_head.build((None, teacher_channels))
        self.student_head.build((None, student_channels))
        initial = keras.random.normal((self.memory_size, self.embedding_dim), seed=0)
        self.memory = self.add_weight(
            shape=(self.memory_size, self.embedding_dim),
            name="memory",
            trainable=False,
            initializer=lambda shape, dtype=None: l2_normalize_rows(initial),
        )
        self.built = True

    def call(self, teacher_features, student_features, labels=None):
        same_batch(teacher_features, student_features, "CRD")
        teacher = l2_normalize_rows(self.teacher_head(pool_to_vectors(teacher_features)))
        student = l2_normalize_rows(self.student_head(pool_to_vectors(student_features)))
        candidates = ops.concatenate([teacher, ops.cast(self.memory, teacher.dtype)], axis=0)
        logits = ops.matmul(student, ops.transpose(candidates)) / self.nce_temperature
        batch = ops.shape(student)[0]
        loss = -ops.take_along_axis(ops.log_softmax(logits, axis=-1), ops.reshape(ops.arange(batch), (-1, 1)), axis=-1)[
            :, 0
        ]
        if keras.backend.backend() == "tensorflow":
            updated = ops.concatenate([ops.stop_gradient(teacher), self.memory], axis=0)[: self.memory_size]
            self.memory.assign(updated)
        return loss

    def compute_output_shape(self, teacher_features_shape, student_features_shape=None, labels_shape=None):
        return (teacher_features_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embedding_dim": self.embedding_dim,
                "memory_size": self.memory_size,
                "nce_temperature": self.nce_temperature,
            }
        )
        return config
