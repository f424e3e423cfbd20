"""The distiller's objective: the loss terms of a fixed batch, and one training step, stay what they were.

The numbers below were computed by the code before the objective became an object (kdistill 0.3, commit 9b38d54):
the same seeds, models and batch must give the same terms, the same step and the same trained weights, so the
demo's and the studies' numbers do not move when the objective's code does.
"""

import keras
import numpy as np
import pytest

import kdistill
from conftest import images, labels, small_cnn

TAPS = {"teacher_stage1": "student_stage1", "teacher_stage2": "student_stage2"}
CASES = {
    "mse_kl": dict(
        feature_loss="mse",
        logits_loss="kl",
        alpha=0.9,
        temperature=4.0,
        tap_weights={"teacher_stage1": 2.0},
        logits_weight=0.5,
    ),
    "review_hcl": dict(feature_loss="hcl", adapter="review", review_channels=8, logits_loss="kd"),
    "at_sp_dkd": dict(feature_loss=[("at", 1000.0), ("sp", 3000.0)], logits_loss="dkd", alpha=0.7),
    "crd_adversarial": dict(feature_loss={"name": "crd", "memory_size": 16}, logits_loss="adversarial"),
    "irg_pool": dict(feature_loss="irg", logits_loss=None, alignment="pool", alpha=1.0),
}


def _run(case: str) -> tuple[dict, dict, float]:
    """`(terms of a fixed batch, the metrics of one training step on it, Σ|w| over the trained weights after that step)`."""
    keras.utils.set_random_seed(0)
    teacher = small_cnn("teacher", widths=(8, 16), seed=1)
    student = small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(teacher, student, taps=TAPS, **CASES[case]).compile(optimizer="sgd")
    x, y = images(8, 3), labels(8, 3)
    y[1] = kdistill.UNLABELED  # one image of a transfer set: no cross-entropy, DKD reads the teacher's top class
    weights = np.linspace(0.5, 1.5, 8).astype("float32")
    terms = distiller.loss_terms(
        keras.ops.convert_to_tensor(y),
        distiller.teacher_outputs(x),
        distiller.student_outputs(x, training=True),
        weights,
    )
    step = distiller.train_on_batch(x, y, sample_weight=weights, return_dict=True)
    trained = sum(float(np.abs(keras.ops.convert_to_numpy(v)).sum()) for v in distiller.trainable_variables)
    return {k: float(v) for k, v in terms.items()}, {k: float(v) for k, v in step.items()}, trained


GOLDEN = {  # case: (terms of the fixed batch, the training step's metrics, Σ|w| after the step), computed at commit 9b38d54
    "mse_kl": (
        {
            "ce_loss": 2.7206492,
            "kd_loss": 0.051532727,
            "feat_teacher_stage1": 1.0164418,
            "feat_teacher_stage2": 1.0076349,
            "loss": 3.0317214,
        },
        {
            "ce_loss": 2.7206492,
            "feat_teacher_stage1": 1.0164418,
            "feat_teacher_stage2": 1.0076348,
            "kd_loss": 0.05153276,
            "loss": 3.0317211,
        },
        143.74656601149357,
    ),
    "review_hcl": (
        {
            "ce_loss": 2.7206492,
            "kd_loss": 0.051532727,
            "feat_teacher_stage1": 0.61016011,
            "feat_teacher_stage2": 0.61103284,
            "loss": 1.9966874,
        },
        {
            "ce_loss": 2.7206492,
            "feat_teacher_stage1": 0.61016011,
            "feat_teacher_stage2": 0.6110329,
            "kd_loss": 0.05153276,
            "loss": 1.9966875,
        },
        314.3998746103109,
    ),
    "at_sp_dkd": (
        {
            "ce_loss": 2.7206492,
            "kd_loss": 0.37942082,
            "feat_teacher_stage1": 297.78436,
            "feat_teacher_stage2": 328.00952,
            "loss": 439.13751,
        },
        {
            "ce_loss": 2.7206492,
            "feat_teacher_stage1": 297.78436,
            "feat_teacher_stage2": 328.00952,
            "kd_loss": 0.37942222,
            "loss": 439.13751,
        },
        210.1041497398911,
    ),
    "crd_adversarial": (
        {
            "ce_loss": 2.7206492,
            "kd_loss": 0.71518928,
            "feat_teacher_stage1": 4.1203804,
            "feat_teacher_stage2": 3.8260713,
            "loss": 5.6911449,
        },
        {
            "ce_loss": 2.7206492,
            "feat_teacher_stage1": 3.8450959,
            "feat_teacher_stage2": 3.4034843,
            "kd_loss": 0.71518928,
            "loss": 5.3422093,
        },
        796.3321314479037,
    ),
    "irg_pool": (
        {"ce_loss": 2.7206492, "feat_irg": 0.21627077, "loss": 0.21627077},
        {"ce_loss": 2.7206492, "feat_irg": 0.21627094, "loss": 0.21627094},
        143.82791647443548,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_terms_and_one_step_match_the_numbers_before_the_objective_was_an_object(case):
    terms, step, trained = _run(case)
    expected_terms, expected_step, expected_trained = GOLDEN[case]
    assert list(terms) == list(expected_terms)  # the same terms, in the same order
    np.testing.assert_allclose([terms[k] for k in expected_terms], list(expected_terms.values()), rtol=1e-5)
    np.testing.assert_allclose([step[k] for k in expected_step], list(expected_step.values()), rtol=1e-5)
    np.testing.assert_allclose(trained, expected_trained, rtol=1e-6)
