"""IRG (Liu et al., CVPR 2019) against the Knowledge-Distillation-Zoo code transcribed into NumPy, and inside FeatureDistiller."""

import keras
import numpy as np
import pytest

import kdistill
from kdistill.losses import base
from kdistill.losses import irg as irg_module
from conftest import real_images, small_cnn

RNG = np.random.default_rng(7)


def _taps(rng, noise=None, like=None):
    """Two NHWC maps, the later map's pooled vector (the Zoo's `feat`), and logits; `like` + noise for a student."""
    if like is not None:
        return {key: (value + noise * rng.normal(size=value.shape)).astype("float32") for key, value in like.items()}
    stage1 = rng.normal(size=(6, 8, 8, 4)).astype("float32")
    stage2 = np.maximum(rng.normal(size=(6, 4, 4, 8)), 0).astype("float32")
    return {
        "stage1": stage1,
        "stage2": stage2,
        "pool": stage2.mean(axis=(1, 2)),
        "logits": (3 * rng.normal(size=(6, 10))).astype("float32"),
    }


TEACHER = _taps(RNG)
STUDENT = _taps(RNG, noise=0.7, like=TEACHER)


# --- Transcription of AberHu/Knowledge-Distillation-Zoo, kd_losses/irg.py (IRG.forward, euclidean_dist_fms,
# euclidean_dist_fm, euclidean_dist_feat), NCHW float64; train_kd.py calls it with [rb2, rb3, feat, out]. ---


def _adaptive_avg_pool2d(fm, size):
    # F.adaptive_avg_pool2d(fm, (H, W)): bin i spans floor(i*n/H) to ceil((i+1)*n/H)
    n, c, h, w = fm.shape
    out = np.empty((n, c) + size)
    for i in range(size[0]):
        for j in range(size[1]):
            rows = slice(i * h // size[0], -(-(i + 1) * h // size[0]))
            cols = slice(j * w // size[1], -(-(j + 1) * w // size[1]))
            out[:, :, i, j] = fm[:, :, rows, cols].mean(axis=(2, 3))
    return out


def zoo_euclidean_dist_fms(fm1, fm2, squared=False, eps=1e-12):
    if fm1.shape[2] > fm2.shape[2]:
        fm1 = _adaptive_avg_pool2d(fm1, (fm2.shape[2], fm2.shape[3]))
    if fm1.shape[1] < fm2.shape[1]:
        fm2 = (fm2[:, 0::2, :, :] + fm2[:, 1::2, :, :]) / 2.0
    fm1 = fm1.reshape(fm1.shape[0], -1)
    fm2 = fm2.reshape(fm2.shape[0], -1)
    fms_dist = np.clip(np.sum(np.power(fm1 - fm2, 2), axis=-1), eps, None)
    if not squared:
        fms_dist = np.sqrt(fms_dist)
    return fms_dist / fms_dist.max()


def zoo_euclidean_dist_fm(fm, squared=False, eps=1e-12):
    fm = fm.reshape(fm.shape[0], -1)
    fm_square = np.power(fm, 2).sum(axis=1)
    fm_prod = fm @ fm.T
    fm_dist = np.clip(fm_square[None, :] + fm_square[:, None] - 2 * fm_prod, eps, None)
    if not squared:
        fm_dist = np.sqrt(fm_dist)
    fm_dist = fm_dist.copy()
    fm_dist[range(len(fm)), range(len(fm))] = 0
    return fm_dist / fm_dist.max()


zoo_euclidean_dist_feat = zoo_euclidean_dist_fm  # identical code on (batch, features), without the view


def _mse(a, b):
    return np.mean((a - b) ** 2)  # F.mse_loss, reduction="mean"


def zoo_irg(irg_s, irg_t, w_irg_vert=0.1, w_irg_edge=5.0, w_irg_tran=5.0, squared=True):
    fm_s1, fm_s2, feat_s, out_s = irg_s
    fm_t1, fm_t2, feat_t, out_t = irg_t
    loss_irg_vert = _mse(out_s, out_t)
    loss_irg_edge = (
        _mse(zoo_euclidean_dist_feat(feat_s, squared), zoo_euclidean_dist_feat(feat_t, squared))
        + _mse(zoo_euclidean_dist_fm(fm_s1, squared), zoo_euclidean_dist_fm(fm_t1, squared))
        + _mse(zoo_euclidean_dist_fm(fm_s2, squared), zoo_euclidean_dist_fm(fm_t2, squared))
    ) / 3.0
    loss_irg_tran = _mse(zoo_euclidean_dist_fms(fm_s1, fm_s2, squared), zoo_euclidean_dist_fms(fm_t1, fm_t2, squared))
    return w_irg_vert * loss_irg_vert + w_irg_edge * loss_irg_edge + w_irg_tran * loss_irg_tran


def _zoo_inputs(taps):
    nchw = lambda x: np.transpose(x.astype("float64"), (0, 3, 1, 2))  # noqa: E731 - the Zoo's maps are NCHW
    return [
        nchw(taps["stage1"]),
        nchw(taps["stage2"]),
        taps["pool"].astype("float64"),
        taps["logits"].astype("float64"),
    ]


@pytest.mark.parametrize(
    "weights, squared", [((0.1, 5.0, 5.0), True), ((1.0, 2.0, 3.0), True), ((0.1, 5.0, 5.0), False)]
)
def test_irg_matches_the_zoo_code(weights, squared):
    loss = irg_module.IRG(*weights, squared=squared)
    got = np.asarray(base.per_sample_loss(loss, TEACHER, STUDENT))
    expected = zoo_irg(_zoo_inputs(STUDENT), _zoo_inputs(TEACHER), *weights, squared=squared)
    assert got.shape == (6,)  # the batch value, once per sample
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_irg_terms_match_the_zoo_terms_one_by_one():
    terms = {key: float(value) for key, value in irg_module.irg_terms(TEACHER, STUDENT).items()}
    assert terms["vertex"] == pytest.approx(
        zoo_irg(_zoo_inputs(STUDENT), _zoo_inputs(TEACHER), 1.0, 0.0, 0.0), rel=1e-5
    )
    assert terms["edge"] == pytest.approx(zoo_irg(_zoo_inputs(STUDENT), _zoo_inputs(TEACHER), 0.0, 1.0, 0.0), rel=1e-5)
    assert terms["transformation"] == pytest.approx(
        zoo_irg(_zoo_inputs(STUDENT), _zoo_inputs(TEACHER), 0.0, 0.0, 1.0), rel=1e-5
    )


def test_irg_transformation_groups_k_channels_and_pools_whichever_map_is_larger():
    earlier, later = RNG.normal(size=(5, 8, 8, 2)), RNG.normal(size=(5, 4, 4, 8))
    grouped = later.reshape(5, 4, 4, 2, 4).mean(axis=-1)  # ratio 4: four neighbouring channels averaged
    pooled = earlier.reshape(5, 4, 2, 4, 2, 2).mean(axis=(2, 4))
    distances = ((pooled - grouped) ** 2).reshape(5, -1).sum(-1)
    got = np.asarray(irg_module.transformation_distances(earlier.astype("float32"), later.astype("float32")))
    np.testing.assert_allclose(got, distances / distances.max(), rtol=1e-5)
    # the reverse shapes (where the Zoo would fail) and a ratio that is not whole both give finite distances
    for a, b in [(later, earlier), (RNG.normal(size=(5, 4, 4, 6)), RNG.normal(size=(5, 4, 4, 4)))]:
        assert np.isfinite(
            np.asarray(irg_module.transformation_distances(a.astype("float32"), b.astype("float32")))
        ).all()


def test_irg_is_zero_when_student_equals_teacher():
    np.testing.assert_array_equal(np.asarray(irg_module.IRG().call(TEACHER, TEACHER)), np.zeros(6))


def test_irg_with_one_tap_has_no_transformation_term():
    one = {key: TEACHER[key] for key in ("stage1", "logits")}
    other = {key: STUDENT[key] for key in ("stage1", "logits")}
    assert float(irg_module.irg_terms(one, other)["transformation"]) == 0.0


def test_irg_by_name_round_trips_and_reads_all_taps():
    loss = kdistill.losses.get({"name": "irg", "edge_weight": 2.0, "squared": False}, kind="feature")
    assert isinstance(loss, kdistill.losses.IRG) and base.reads_all_taps(loss)
    config = loss.get_config()
    assert (config["vertex_weight"], config["edge_weight"], config["transformation_weight"], config["squared"]) == (
        0.1,
        2.0,
        5.0,
        False,
    )
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, irg_module.IRG) and again.get_config() == config and base.reads_all_taps(again)


def test_irg_gradient_step_lowers_the_loss():
    import tensorflow as tf

    loss = irg_module.IRG()
    student = {key: tf.Variable(value) for key, value in STUDENT.items()}
    with tf.GradientTape() as tape:
        before = tf.reduce_mean(loss.call(TEACHER, student))
    gradients = tape.gradient(before, student)
    assert all(
        np.isfinite(gradients[key].numpy()).all() and np.abs(gradients[key].numpy()).sum() > 0 for key in student
    )
    for key, variable in student.items():
        variable.assign_sub(0.05 * gradients[key])
    after = tf.reduce_mean(loss.call(TEACHER, student))
    assert float(after) < float(before)


@pytest.mark.parametrize(
    "teacher, student", [(TEACHER["stage1"], STUDENT["stage1"]), ([TEACHER["stage1"]], [STUDENT["stage1"]])]
)
def test_irg_on_a_single_tap_says_it_needs_every_tap(teacher, student):
    with pytest.raises(ValueError, match="reads every tap.*FeatureDistiller feature_loss"):
        irg_module.IRG().call(teacher, student)


def test_irg_without_logits_asks_for_them_or_vertex_weight_zero():
    taps = {key: TEACHER[key] for key in ("stage1", "stage2")}
    with pytest.raises(ValueError, match="vertex_weight=0"):
        irg_module.IRG().call(taps, taps)
    assert float(irg_module.IRG(vertex_weight=0.0)(taps, taps)) == 0.0


@pytest.mark.eager
def test_irg_trains_a_student_in_the_distiller_as_one_metric():
    # Passes once FeatureDistiller calls reads_all_taps losses once per step and reports them as feat_<loss name>.
    teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
    before = [w.copy() for w in teacher.get_weights()]
    distiller = kdistill.FeatureDistiller(
        teacher,
        student,
        taps={"teacher_stage1": "student_stage1", "teacher_stage2": "student_stage2"},
        feature_loss="irg",
        logits_loss="kl",
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    x, y = real_images(64)
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert "feat_irg" in history and not any(key.startswith("feat_teacher_stage") for key in history)
    assert all(np.isfinite(history[key]).all() for key in ("loss", "feat_irg", "kd_loss"))
    assert all(np.array_equal(a, b) for a, b in zip(before, teacher.get_weights()))
