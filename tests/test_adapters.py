"""Checks every registered adapter gets without new test code: its config, one distillation step, errors by name.

Parametrised over `kdistill.adapters.available()`, as the loss and student tests run over their registries; each
adapter's own file (test_projections.py, test_review.py) holds its shape and reference tests.
"""

import keras
import numpy as np
import pytest

import kdistill
from conftest import images, labels, small_cnn
from harness import run_config_round_trip, run_training_step

TAPS = {"teacher_stage1": "student_stage1", "teacher_stage2": "student_stage2"}
TEACHER_SHAPES = {"teacher_stage1": (None, 16, 16, 8), "teacher_stage2": (None, 8, 8, 16)}
STUDENT_SHAPES = {"teacher_stage1": (None, 16, 16, 4), "teacher_stage2": (None, 8, 8, 8)}


@pytest.mark.parametrize("name", kdistill.adapters.available())
def test_every_adapter_maps_each_tap_to_the_teacher_shape_and_round_trips_through_its_config(name):
    options = {"student_depth": {"teacher_stage1": 4, "teacher_stage2": 7}, "review_channels": 4, "alignment": "auto"}
    adapter = kdistill.adapters.get(name, TEACHER_SHAPES, STUDENT_SHAPES, **options)
    assert isinstance(adapter, kdistill.adapters.Adapter) and sorted(adapter.order) == sorted(TAPS)
    features = {
        tap: np.random.default_rng(0).normal(size=(2, *shape[1:])).astype("float32")
        for tap, shape in STUDENT_SHAPES.items()
    }
    outputs = adapter(features, training=False)
    assert {tap: tuple(value.shape[1:]) for tap, value in outputs.items()} == {
        tap: shape[1:] for tap, shape in TEACHER_SHAPES.items()
    }
    assert all(adapter.describe(tap).endswith("x".join(map(str, TEACHER_SHAPES[tap][1:]))) for tap in TAPS)
    restored = run_config_round_trip(adapter)
    assert restored.order == adapter.order
    restored.set_weights(adapter.get_weights())
    for tap in TAPS:  # the same layers in the same order: the same maps from the same weights
        np.testing.assert_allclose(
            np.asarray(restored(features, training=False)[tap]), np.asarray(outputs[tap]), rtol=1e-6
        )


@pytest.mark.parametrize("name", kdistill.adapters.available())
def test_every_adapter_trains_with_the_student_in_one_distillation_step(name):
    teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(teacher, student, taps=TAPS, adapter=name, review_channels=4).compile(
        optimizer=keras.optimizers.SGD(0.1)
    )
    assert isinstance(distiller.student_adapter, kdistill.adapters.Adapter)
    metrics = run_training_step(distiller, images(8, 0), labels(8, 0))
    assert {"feat_teacher_stage1", "feat_teacher_stage2"} <= set(metrics)


def test_an_unknown_adapter_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="Unknown adapter 'reveiw'. Did you mean 'review'.*projection, review"):
        kdistill.adapters.get("reveiw", TEACHER_SHAPES, STUDENT_SHAPES)
