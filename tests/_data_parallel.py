"""Run by test_backends.py on JAX with two host devices: one step under DataParallel over 1 and over 2 devices."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import keras
import numpy as np

import kdistill
from kdistill.run import jax_distribution
from conftest import images, labels, small_cnn


def one_step(devices):
    jax_distribution.data_parallel(devices)
    keras.utils.set_random_seed(0)
    teacher, student = (
        small_cnn("teacher", widths=(8, 16), seed=1, batch_norm=False),
        small_cnn("student", widths=(4, 8), seed=2, batch_norm=False),
    )
    distiller = kdistill.FeatureDistiller(teacher, student, taps={"teacher_stage2": "student_stage2"}, alpha=0.7)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    distiller.fit(images(16), labels(16), batch_size=16, epochs=1, verbose=0, shuffle=False)
    weights = [np.asarray(w) for w in student.weights]
    keras.distribution.set_distribution(None)
    return weights


devices = keras.distribution.list_devices()
single, double = one_step(devices[:1]), one_step(devices[:2])
print(
    json.dumps(
        {
            "devices": len(devices),
            "max_difference": max(float(np.abs(a - b).max()) for a, b in zip(single, double)),
            "moved": max(float(np.abs(a).max()) for a in single),
        }
    )
)
