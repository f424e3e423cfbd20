"""Checks every registered loss gets without new test code: per-sample values, gradients, config round trip.

Parametrised over `kdistill.losses.available(kind)`, as timm's tests run over `list_models()`: a new method
registered by name is covered here the moment it exists; its own test file holds its reference test.
"""

import numpy as np
import pytest
import tensorflow as tf

from kdistill import losses
from harness import run_config_round_trip

RNG = np.random.default_rng(11)
BATCH = 6
TEACHER_MAPS = {
    "tap1": RNG.normal(size=(BATCH, 8, 8, 4)).astype("float32"),
    "tap2": RNG.normal(size=(BATCH, 4, 4, 8)).astype("float32"),
    "logits": (3 * RNG.normal(size=(BATCH, 10))).astype("float32"),
}
STUDENT_MAPS = {key: (value + RNG.normal(size=value.shape)).astype("float32") for key, value in TEACHER_MAPS.items()}
LABELS = RNG.integers(0, 10, BATCH)

CASES = [("feature", name) for name in losses.available("feature")] + [
    ("logits", name) for name in losses.available("logits")
]


def _inputs(kind: str, loss):
    """Teacher and student inputs of the loss's kind: every tap for a loss that reads them all, else one tensor."""
    if losses.base.reads_all_taps(loss):
        return TEACHER_MAPS, STUDENT_MAPS
    key = "logits" if kind == "logits" else "tap1"
    return TEACHER_MAPS[key], STUDENT_MAPS[key]


def _built(kind: str, name: str):
    loss = losses.get(name, kind=kind, temperature=2.0)
    teacher, student = _inputs(kind, loss)
    if losses.base.is_stateful(loss) and not loss.built:
        loss.build(teacher.shape, student.shape)
    return loss, teacher, student


@pytest.mark.parametrize("kind, name", CASES)
def test_every_loss_gives_finite_per_sample_values_and_a_gradient(kind, name):
    loss, teacher, student = _built(kind, name)
    variables = tf.nest.map_structure(tf.Variable, student)
    with tf.GradientTape() as tape:
        values = losses.per_sample_loss(loss, teacher, variables, LABELS)
        total = tf.reduce_mean(values)
    assert tuple(values.shape) == (BATCH,), (name, values.shape)
    assert np.isfinite(np.asarray(values)).all(), name
    gradients = [g for g in tf.nest.flatten(tape.gradient(total, variables)) if g is not None]
    assert gradients, f"{name}: no gradient reaches the student"
    assert all(np.isfinite(g.numpy()).all() for g in gradients), name
    assert sum(float(np.abs(g.numpy()).sum()) for g in gradients) > 0, f"{name}: the gradient is zero everywhere"


@pytest.mark.parametrize("kind, name", CASES)
def test_every_loss_round_trips_through_its_config(kind, name):
    loss, teacher, student = _built(kind, name)
    restored = run_config_round_trip(loss)
    if not losses.base.is_stateful(loss):  # a loss with weights draws new ones when rebuilt from its config
        np.testing.assert_allclose(
            np.asarray(losses.per_sample_loss(restored, teacher, student, LABELS)),
            np.asarray(losses.per_sample_loss(loss, teacher, student, LABELS)),
            rtol=1e-6,
            err_msg=name,
        )


@pytest.mark.parametrize("kind, name", CASES)
def test_every_loss_name_is_found_with_its_kind_and_unknown_names_list_them(kind, name):
    assert name in losses.available(kind)
    with pytest.raises(ValueError, match=f"Known: .*{name}"):
        losses.get(name + "_typo_", kind=kind)
