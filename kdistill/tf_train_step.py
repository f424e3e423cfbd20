"""FeatureDistiller's training step on the TensorFlow backend.

The teacher runs outside the gradient tape (its outputs need no gradient and
keeping them out of the tape saves memory); the student runs once inside it.
Under `tf.distribute`, gradients are summed over replicas, so each replica's
share of the global-batch mean is its local mean divided by the replica count;
losses are reported through the distiller's `Mean` trackers (a raw loss tensor
returned from `train_step` read 0.0 under MirroredStrategy). Other backends
train through `FeatureDistiller.compute_loss`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import tree

__all__ = ["train_step"]


def train_step(distiller, data) -> dict:
    """One optimizer step of `distiller` on a batch `(x, y, sample_weight)`; returns the metrics."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x, teacher_outputs = distiller.split_inputs(x)
    if teacher_outputs is None:
        teacher_outputs = distiller.teacher_outputs(x)
    with tf.GradientTape() as tape:
        student_outputs = distiller.student_outputs(x, training=True)
        terms = distiller.loss_terms(y, teacher_outputs, student_outputs, sample_weight)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss = distiller.optimizer.scale_loss(terms["loss"] / replicas)
    variables = distiller.trainable_variables
    gradients = tape.gradient(loss, variables)
    distiller.optimizer.apply_gradients(zip(gradients, variables))
    distiller.update_loss_trackers(terms, tf.shape(tree.flatten(x)[0])[0])
    return distiller.compute_metrics(x, y, {"student": student_outputs}, sample_weight)
