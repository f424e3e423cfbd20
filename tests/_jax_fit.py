"""Run by test_distiller.py with KERAS_BACKEND=jax: a few epochs of distillation through `fit`, and one of a segmenter pair."""

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

# A segmenter pair (logit maps, masks with ignored pixels): the dense path of the same fit, one short epoch.
from test_dense import masks, tiny_segmenter  # noqa: E402

segmenters = kdistill.FeatureDistiller(
    tiny_segmenter("teacher", seed=1), tiny_segmenter("student", width=4, stride=2, seed=2), taps={}
)
segmenters.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
dense_history = segmenters.fit(images(8, 1, size=16), masks(8), batch_size=4, epochs=1, verbose=0)
print(
    json.dumps(
        {
            "backend": keras.backend.backend(),
            "history": history.history,
            "teacher_unchanged": unchanged,
            "dense_history": dense_history.history,
        }
    )
)
