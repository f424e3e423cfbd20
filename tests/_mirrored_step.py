"""Run by test_distiller.py: one step under MirroredStrategy on 2 logical CPUs vs one device, for classifiers and for segmenters."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kdistill  # noqa: E402
from conftest import images, labels, small_cnn  # noqa: E402

x, y = images(16, 0), labels(16, 0)


def one_step(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        # No BatchNorm: it normalises with per-replica statistics, which differ from the global batch's by design.
        teacher = small_cnn("teacher", seed=1, batch_norm=False)
        student = small_cnn("student", seed=2, batch_norm=False)
        # A vector tap gets a Dense projection (a map tap's projection has BatchNorm).
        distiller = kdistill.FeatureDistiller(teacher, student, taps={"teacher_pool": "student_pool"}, alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    start = [w.numpy().copy() for w in distiller.trainable_weights]
    history = distiller.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return [w.numpy() for w in distiller.trainable_weights], start, history.history["loss"][0]


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
weights_mirrored, start, loss_mirrored = one_step(mirrored)
weights_single, _, loss_single = one_step(tf.distribute.get_strategy())


def one_dense_step(strategy):
    """The same for a segmenter pair (logit maps, masks with ignored pixels, the student's map at half the teacher's size)."""
    from test_dense import masks, tiny_segmenter

    keras.utils.set_random_seed(0)
    with strategy.scope():
        distiller = kdistill.FeatureDistiller(
            tiny_segmenter("teacher", seed=1), tiny_segmenter("student", width=4, stride=2, seed=2), taps={}
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    distiller.fit(images(16, 0, size=16), masks(16), batch_size=16, epochs=1, shuffle=False, verbose=0)
    return [w.numpy() for w in distiller.trainable_weights]


dense_difference = max(
    np.abs(a - b).max() for a, b in zip(one_dense_step(mirrored), one_dense_step(tf.distribute.get_strategy()))
)
print(
    json.dumps(
        {
            "replicas": mirrored.num_replicas_in_sync,
            "max_weight_difference": float(max(np.abs(a - b).max() for a, b in zip(weights_mirrored, weights_single))),
            "weights_moved": float(max(np.abs(a - b).max() for a, b in zip(weights_single, start))),
            "loss_mirrored": float(loss_mirrored),
            "loss_single": float(loss_single),
            "dense_max_weight_difference": float(dense_difference),
        }
    )
)
