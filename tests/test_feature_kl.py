"""Feature KL (the textbook's softened KL between a teacher feature and the projected student feature) against
PyTorch's F.kl_div transcribed into NumPy, the per-kind registry that lets "kl" name it, and the three-step recipe."""

import keras
import numpy as np
import pytest

import kdistill
from kdistill.losses import registry
from kdistill.losses.feature_kl import FeatureKL, feature_kl
from kdistill.losses.logits import LogitsKL
from conftest import assert_gradient_step_lowers, real_images, small_cnn

RNG = np.random.default_rng(11)
# NCHW as the PyTorch recipe has them; H != W so that a transposition mistake shows.
TEACHER_NCHW = (RNG.normal(size=(5, 6, 3, 4)) * 2).astype("float32")
STUDENT_NCHW = (RNG.normal(size=(5, 6, 3, 4)) * 1.5).astype("float32")
TEACHER_VECTORS = (RNG.normal(size=(7, 10)) * 3).astype("float32")
STUDENT_VECTORS = (RNG.normal(size=(7, 10)) * 2).astype("float32")


def nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def np_log_softmax(z, axis):
    z = z - z.max(axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis, keepdims=True))


def np_kl_div_batchmean(log_input, target):
    # torch.nn.functional.kl_div(input, target, reduction="batchmean"): sum(target * (log(target) - input)) /
    # input.size(0)
    return (target * (np.log(target) - log_input)).sum() / log_input.shape[0]


def np_textbook_feature_kl(teacher, projected, T):
    # Transcribes the textbook's PyTorch lines (quoted in the issue), on NCHW maps or (N, C) vectors:
    #   F.kl_div(F.log_softmax(projected / T, dim=1), F.softmax(teacher / T, dim=1), reduction="batchmean") * T**2
    teacher, projected = teacher.astype("float64"), projected.astype("float64")
    return (
        np_kl_div_batchmean(np_log_softmax(projected / T, axis=1), np.exp(np_log_softmax(teacher / T, axis=1))) * T**2
    )


def per_sample_reference(teacher, projected, T):
    return np.array([np_textbook_feature_kl(teacher[i : i + 1], projected[i : i + 1], T) for i in range(len(teacher))])


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0])
def test_feature_kl_on_vectors_matches_pytorch_kl_div_batchmean(temperature):
    got = np.asarray(feature_kl(TEACHER_VECTORS, STUDENT_VECTORS, temperature=temperature))
    assert got.shape == (7,)
    np.testing.assert_allclose(
        got, per_sample_reference(TEACHER_VECTORS, STUDENT_VECTORS, temperature), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        got.mean(), np_textbook_feature_kl(TEACHER_VECTORS, STUDENT_VECTORS, temperature), rtol=1e-5
    )
    # spatial does not apply to vectors
    np.testing.assert_allclose(
        np.asarray(feature_kl(TEACHER_VECTORS, STUDENT_VECTORS, temperature, spatial="mean")), got, rtol=1e-6
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0])
@pytest.mark.parametrize("spatial", ["sum", "mean"])
def test_feature_kl_on_maps_matches_pytorch_kl_div_batchmean_on_nchw(temperature, spatial):
    positions = 3 * 4
    scale = 1.0 if spatial == "sum" else 1.0 / positions  # "mean" averages the positions batchmean sums
    got = np.asarray(feature_kl(nhwc(TEACHER_NCHW), nhwc(STUDENT_NCHW), temperature=temperature, spatial=spatial))
    assert got.shape == (5,)
    np.testing.assert_allclose(
        got, scale * per_sample_reference(TEACHER_NCHW, STUDENT_NCHW, temperature), rtol=1e-5, atol=1e-6
    )
    # the batch mean (what the distiller reports) is the textbook's batchmean value
    np.testing.assert_allclose(
        got.mean(), scale * np_textbook_feature_kl(TEACHER_NCHW, STUDENT_NCHW, temperature), rtol=1e-5
    )
    loss = FeatureKL(temperature=temperature, spatial=spatial)
    np.testing.assert_allclose(float(loss(nhwc(TEACHER_NCHW), nhwc(STUDENT_NCHW))), got.mean(), rtol=1e-5)


@pytest.mark.parametrize("spatial", ["sum", "mean"])
def test_feature_kl_is_zero_when_the_student_equals_the_teacher(spatial):
    for feature in (TEACHER_VECTORS, nhwc(TEACHER_NCHW)):
        values = np.asarray(FeatureKL(temperature=2.0, spatial=spatial).call(feature, feature))
        np.testing.assert_allclose(values, 0.0, atol=1e-6)
    assert float(np.asarray(feature_kl(TEACHER_VECTORS, STUDENT_VECTORS)).min()) > 0


def test_feature_kl_round_trips_and_kl_names_the_right_loss_for_each_kind():
    loss = kdistill.losses.get({"name": "kl", "temperature": 2, "spatial": "mean"}, kind="feature")
    assert isinstance(loss, FeatureKL) and (loss.temperature, loss.spatial) == (2.0, "mean")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is FeatureKL and again.get_config() == loss.get_config()
    np.testing.assert_allclose(
        np.asarray(again.call(TEACHER_VECTORS, STUDENT_VECTORS)),
        np.asarray(loss.call(TEACHER_VECTORS, STUDENT_VECTORS)),
    )
    assert isinstance(kdistill.losses.get("kl", kind="feature"), FeatureKL)
    assert isinstance(kdistill.losses.get("feature_kl"), FeatureKL)
    # a feature loss that takes a temperature gets it
    assert kdistill.losses.get("kl", kind="feature", temperature=3.0).temperature == 3.0
    # "kl" without a kind is the logits KD loss, as in 0.2
    assert type(kdistill.losses.get("kl")) is LogitsKL and type(kdistill.losses.get("kl", kind="logits")) is LogitsKL
    assert registry.lookup("kl") == (LogitsKL, "logits", {}) and registry.lookup("kl", "feature")[0] is FeatureKL
    assert "kl" in registry.available("feature") and "kl" in registry.available("logits")
    assert "feature_kl" not in registry.available("logits")
    names = registry.available()
    assert names == sorted(set(names)) and names.count("kl") == 1
    with pytest.raises(ValueError, match="Unknown logits loss 'feature_kl'"):
        kdistill.losses.get("feature_kl", kind="logits")


def test_names_are_unique_per_kind_not_overall():
    from kdistill.losses import DistillationLoss

    first, second = type("First", (DistillationLoss,), {}), type("Second", (DistillationLoss,), {})
    try:
        registry.register("test_shared", kind="feature")(first)
        registry.register("test_shared", kind="logits")(second)  # the same name under the other kind is allowed
        assert registry.lookup("test_shared", "feature")[0] is first and registry.lookup("test_shared")[0] is second
        with pytest.raises(ValueError, match="feature loss name 'test_shared' is already registered to First"):
            registry.register("test_shared", kind="feature")(second)
        registry.unregister("test_shared", kind="logits")
        assert registry.lookup("test_shared")[0] is first
    finally:
        registry.unregister("test_shared")
    with pytest.raises(KeyError):
        registry.lookup("test_shared")
    with pytest.raises(ValueError, match="kind must be one of"):
        registry.available("features")


@pytest.mark.parametrize(
    "teacher, start", [(TEACHER_VECTORS, STUDENT_VECTORS), (nhwc(TEACHER_NCHW), nhwc(STUDENT_NCHW))]
)
def test_a_gradient_step_lowers_the_feature_kl(teacher, start):
    loss = FeatureKL(temperature=4.0)
    assert_gradient_step_lowers(loss, teacher, start)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: FeatureKL(temperature=0.0), "temperature must be positive"),
        (lambda: FeatureKL(temperature="4"), "without quotes"),
        (lambda: FeatureKL(spatial="max"), "spatial must be 'sum'.*received spatial='max'"),
        (lambda: feature_kl(TEACHER_VECTORS, STUDENT_VECTORS, spatial="avg"), "spatial must be"),
        (
            lambda: feature_kl(nhwc(TEACHER_NCHW), nhwc(TEACHER_NCHW)[..., :3]),
            r"teacher \(5, 3, 4, 6\) and student \(5, 3, 4, 3\).*projection maps the student",
        ),
        (lambda: feature_kl(TEACHER_VECTORS[0], STUDENT_VECTORS[0]), r"\(batch, channels\)"),
        (lambda: kdistill.losses.get({"name": "kl", "spatial": "max"}, kind="feature"), "spatial must be"),
    ],
)
def test_invalid_options_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _train(feature_loss, epochs=2, **options):
    teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps={"teacher_stage2": "student_stage2"}, feature_loss=feature_loss, **options
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    before = [np.array(w) for w in teacher.get_weights()]
    x, y = real_images(64)
    history = distiller.fit(x, y, batch_size=16, epochs=epochs, verbose=0).history
    for old, new in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(old, new)  # the teacher is frozen
    return distiller, history


@pytest.mark.eager
def test_feature_kl_trains_a_student_in_the_distiller():
    distiller, history = _train({"name": "kl", "temperature": 4.0}, logits_loss="kl", alpha=0.9)
    assert isinstance(distiller.feature_loss, FeatureKL) and distiller.feature_loss.temperature == 4.0
    assert isinstance(distiller.logits_loss, LogitsKL)
    for key in ("loss", "ce_loss", "kd_loss", "feat_teacher_stage2"):
        assert np.isfinite(history[key]).all(), (key, history[key])
    assert history["feat_teacher_stage2"][-1] < history["feat_teacher_stage2"][0]


def test_the_textbook_in_three_calls_feature_kl_and_cross_entropy_without_a_logits_term():
    distiller, history = _train("kl", logits_loss=None, alpha=0.9)
    assert isinstance(distiller.feature_loss, FeatureKL) and distiller.logits_loss is None
    assert "kd_loss" not in history
    feature, ce, total = (np.array(history[key]) for key in ("feat_teacher_stage2", "ce_loss", "loss"))
    assert np.isfinite(total).all() and np.isfinite(feature).all() and feature[-1] < feature[0]
    np.testing.assert_allclose(total, 0.9 * feature + 0.1 * ce, rtol=1e-4)  # alpha * feature KL + (1 - alpha) * CE
    assert set(history) == {"loss", "ce_loss", "feat_teacher_stage2", "accuracy"}
