import keras
import numpy as np
import pytest

from kdistill import losses


def _numpy_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _numpy_kd(teacher, student, temperature):
    log_p_teacher = _numpy_log_softmax(teacher / temperature)
    log_p_student = _numpy_log_softmax(student / temperature)
    return (np.exp(log_p_teacher) * (log_p_teacher - log_p_student)).sum(-1) * temperature**2


RNG = np.random.default_rng(7)
TEACHER_LOGITS = RNG.normal(size=(4, 5)).astype("float32") * 3
STUDENT_LOGITS = RNG.normal(size=(4, 5)).astype("float32") * 3
TEACHER_MAP = RNG.normal(size=(3, 4, 4, 6)).astype("float32")
STUDENT_MAP = RNG.normal(size=(3, 4, 4, 6)).astype("float32")


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_kl_matches_numpy_reference(temperature):
    got = keras.ops.convert_to_numpy(losses.kd_kl_divergence(TEACHER_LOGITS, STUDENT_LOGITS, temperature))
    np.testing.assert_allclose(got, _numpy_kd(TEACHER_LOGITS, STUDENT_LOGITS, temperature), rtol=1e-5, atol=1e-6)
    assert (got > 0).all()


def test_kd_kl_is_zero_for_identical_logits_and_reduces_to_batch_mean():
    assert np.allclose(
        keras.ops.convert_to_numpy(losses.kd_kl_divergence(TEACHER_LOGITS, TEACHER_LOGITS, 4.0)), 0, atol=1e-5
    )
    loss = losses.LogitsKL(temperature=2.0)
    np.testing.assert_allclose(
        float(loss(TEACHER_LOGITS, STUDENT_LOGITS)), _numpy_kd(TEACHER_LOGITS, STUDENT_LOGITS, 2.0).mean(), rtol=1e-5
    )


def test_feature_mse_matches_numpy_reference():
    got = keras.ops.convert_to_numpy(losses.feature_mse(TEACHER_MAP, STUDENT_MAP))
    np.testing.assert_allclose(got, ((TEACHER_MAP - STUDENT_MAP) ** 2).reshape(3, -1).mean(-1), rtol=1e-5)


def test_normalized_feature_mse_normalises_each_channel_over_space():
    def normalise(x):
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        return flat / np.sqrt((flat**2).sum(axis=1, keepdims=True) + 1e-12)

    expected = ((normalise(TEACHER_MAP) - normalise(STUDENT_MAP)) ** 2).reshape(3, -1).mean(-1)
    got = keras.ops.convert_to_numpy(losses.feature_mse(TEACHER_MAP, STUDENT_MAP, normalize=True))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Scaling a feature map does not change the normalised loss.
    scaled = keras.ops.convert_to_numpy(losses.feature_mse(TEACHER_MAP * 10, STUDENT_MAP, normalize=True))
    np.testing.assert_allclose(scaled, expected, rtol=1e-4)


def test_feature_mse_gradient_points_from_student_to_teacher():
    import tensorflow as tf

    student = tf.Variable(STUDENT_MAP)
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(losses.feature_mse(TEACHER_MAP, student))
    gradient = tape.gradient(loss, student).numpy()
    np.testing.assert_allclose(gradient, 2 * (STUDENT_MAP - TEACHER_MAP) / STUDENT_MAP.size, rtol=1e-4, atol=1e-8)


def test_feature_mse_explains_shape_mismatch():
    with pytest.raises(ValueError, match="projection"):
        losses.feature_mse(np.zeros((2, 4, 4, 8), "float32"), np.zeros((2, 4, 4, 6), "float32"))


@pytest.mark.parametrize("temperature", [0, -1.0])
def test_non_positive_temperature_is_refused(temperature):
    with pytest.raises(ValueError, match="temperature must be positive"):
        losses.LogitsKL(temperature=temperature)
    with pytest.raises(ValueError, match="temperature must be positive"):
        losses.kd_kl_divergence(TEACHER_LOGITS, STUDENT_LOGITS, temperature)


@pytest.mark.parametrize("loss", [losses.FeatureMSE(normalize=True), losses.LogitsKL(temperature=3.0)])
def test_losses_round_trip_through_keras_serialization(loss):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()


def test_get_resolves_names_and_lists_known_ones_for_unknown():
    assert losses.get("kl", temperature=2.5).temperature == 2.5
    assert losses.get("normalized_mse").normalize is True
    assert isinstance(losses.get("mse", temperature=4.0), losses.FeatureMSE)
    with pytest.raises(ValueError, match=r"Unknown feature loss 'mes'.*Did you mean 'mse'.*Known:"):
        losses.get("mes", kind="feature")
    with pytest.raises(ValueError, match="Unknown logits loss"):
        losses.get("mse", kind="logits")


@pytest.mark.eager
def test_a_weighted_list_with_a_stateful_loss_builds_and_trains_it():
    """[("crd", 0.8), ("at", 1000.0)] used to leave CRD unbuilt (9 trainable variables instead of 13) and crash in fit."""
    import kdistill
    from conftest import images, labels, small_cnn

    def distiller(feature_loss):
        teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
        return kdistill.FeatureDistiller(
            teacher,
            student,
            taps={"teacher_stage2": "student_stage2"},
            feature_loss=feature_loss,
            alpha=0.9,
            tap_weights=1.0,
        )

    alone, combined = (
        distiller({"name": "crd", "memory_size": 64}),
        distiller([({"name": "crd", "memory_size": 64}, 0.8), ("at", 1000.0)]),
    )
    assert len(combined.trainable_variables) == len(alone.trainable_variables)  # CRD's two heads are trained in both
    combined.compile(optimizer="adam")
    memory = [v for v in combined.non_trainable_variables if "memory" in v.path][0]
    before = keras.ops.convert_to_numpy(memory).copy()
    history = combined.fit(images(32), labels(32), batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert not np.array_equal(before, keras.ops.convert_to_numpy(memory))  # the memory took in teacher embeddings
    config = keras.saving.serialize_keras_object(combined)
    assert keras.saving.deserialize_keras_object(config).tap_losses["teacher_stage2"].parts[0].memory_size == 64


def test_a_user_loss_registered_by_decorator_is_usable_by_name_in_a_config(tmp_path):
    import kdistill
    from kdistill.losses import DistillationLoss, registry

    def l1(teacher, student, scale=1.0):
        return scale * keras.ops.mean(
            keras.ops.abs(keras.ops.reshape(teacher - student, (keras.ops.shape(teacher)[0], -1))), axis=-1
        )

    @registry.register("test_l1", kind="feature")
    @keras.saving.register_keras_serializable(package="kdistill_tests")
    class L1(DistillationLoss):
        def __init__(self, scale=1.0, reduction="sum_over_batch_size", name="test_l1"):
            super().__init__(l1, reduction=reduction, name=name, scale=float(scale))

    try:
        loss = kdistill.losses.get({"name": "test_l1", "scale": 3.0}, kind="feature")
        assert isinstance(loss, L1) and loss.get_config()["scale"] == 3.0
        assert float(loss(np.ones((2, 4), "float32"), np.zeros((2, 4), "float32"))) == 3.0
        from kdistill.run.config import DistillConfig

        config = DistillConfig.from_dict({"feature_loss": {"name": "test_l1", "scale": 2.0}})
        assert config.feature_loss == {"name": "test_l1", "scale": 2.0}
        with pytest.raises(ValueError, match="already registered"):
            registry.register("test_l1", kind="feature")(type("Other", (DistillationLoss,), {}))
    finally:
        registry.unregister("test_l1")
    with pytest.raises(ValueError, match="Unknown feature loss 'test_l1'"):
        kdistill.losses.get("test_l1", kind="feature")
