"""Mixed precision: a step runs with finite losses under each policy, float32 losses, loss scaling for float16."""

import keras
import numpy as np
import pytest

import kdistill
from kdistill.run import precision
from conftest import images, labels, small_cnn


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.eager
def test_a_step_under_each_policy_has_finite_float32_losses(policy):
    teacher_float32 = small_cnn("teacher", widths=(8, 16), seed=1)
    with precision.policy_scope(policy):
        teacher = precision.cast_model(teacher_float32, policy)
        student = small_cnn("student", widths=(4, 8), seed=2)
        distiller = kdistill.FeatureDistiller(
            teacher, student, taps={"teacher_stage2": "student_stage2"}, feature_loss="mse"
        )
        distiller.compile(optimizer="adam", metrics=["accuracy"])
    assert keras.config.dtype_policy().name == "float32"  # the scope restored the global policy
    compute = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[policy]
    assert student.get_layer("student_conv1").compute_dtype == compute
    assert teacher.get_layer("teacher_conv1").compute_dtype == compute  # the teacher runs in the compute dtype too
    np.testing.assert_array_equal(teacher.get_weights()[0], teacher_float32.get_weights()[0])
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    terms = distiller.loss_terms(
        labels(8), distiller.teacher_outputs(images(8)), distiller.student_outputs(images(8), training=True)
    )
    assert all(keras.backend.standardize_dtype(value.dtype) == "float32" for value in terms.values())
    history = distiller.fit(images(32), labels(32), batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["feat_teacher_stage2"]).all()


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="mixed_bfloat16"):
        with precision.policy_scope("float8"):
            pass
