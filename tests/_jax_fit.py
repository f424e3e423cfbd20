"""Run by test_distiller.py with KERAS_BACKEND=jax: a few epochs of distillation through `fit`."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import keras
import numpy as np

import kdistill
from conftest import images, labels, small_cnn

keras.utils.set_random_seed(0)
teacher, student = small_cnn("teacher", widths=(16, 32), seed=1), small_cnn("student", seed=2)
before = [np.array(w) for w in teacher.weights]
distiller = kdistill.FeatureDistiller(teacher, student, taps={"teacher_stage2": "student_stage2"}, alpha=0.7)
distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
x, y = images(128, 0), labels(128, 0)
history = distiller.fit(x, y, validation_data=(x[:32], y[:32]), batch_size=32, epochs=4, verbose=0)
unchanged = all(np.array_equal(b, np.array(w)) for b, w in zip(before, teacher.weights))
print(json.dumps({"backend": keras.backend.backend(), "history": history.history, "teacher_unchanged": unchanged}))
