"""Run by test_distribute.py as one of two workers: distils a few steps under MultiWorkerMirroredStrategy."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
index, ports, output = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
os.environ["TF_CONFIG"] = json.dumps(
    {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kdistill  # noqa: E402
from kdistill.run import distribute  # noqa: E402
from conftest import images, labels, small_cnn  # noqa: E402

strategy = distribute.get_strategy("auto")
keras.utils.set_random_seed(0)
with strategy.scope():
    teacher = small_cnn("teacher", seed=1, batch_norm=False)
    student = small_cnn("student", seed=2, batch_norm=False)
    distiller = kdistill.FeatureDistiller(teacher, student, taps={"teacher_pool": "student_pool"}, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"])
start = [w.numpy().copy() for w in student.weights]
dataset = tf.data.Dataset.from_tensor_slices((images(64, 0), labels(64, 0))).batch(16)
history = distribute.fit(distiller, dataset, epochs=2, steps_per_epoch=2, verbose=0)
np.savez(output, *[w.numpy() for w in student.weights])
print(
    json.dumps(
        {
            "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
            "replicas": strategy.num_replicas_in_sync,
            "history": history,
            "moved": float(max(np.abs(a - w.numpy()).max() for a, w in zip(start, student.weights))),
        }
    )
)
