"""DIST (Huang et al., NeurIPS 2022) against the authors' code transcribed into NumPy, and inside FeatureDistiller."""

import keras
import numpy as np
import pytest

import kdistill
from kdistill.losses import dist_relation
from conftest import images, labels, small_cnn

RNG = np.random.default_rng(3)
T_LOGITS = (RNG.normal(size=(8, 10)) * 3).astype("float32")
S_LOGITS = (RNG.normal(size=(8, 10)) * 2).astype("float32")


def np_dist(z_s, z_t, beta=1.0, gamma=1.0, tau=1.0):
    # Transcribes hunto/image_classification_sota, lib/models/losses/dist_kd.py (the loss of hunto/DIST_KD):
    #   cosine_similarity(a, b, eps=1e-8) = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
    #   pearson_correlation(a, b) = cosine_similarity(a - a.mean(1), b - b.mean(1))
    #   inter_class_relation(y_s, y_t) = 1 - pearson_correlation(y_s, y_t).mean()
    #   intra_class_relation(y_s, y_t) = inter_class_relation(y_s.T, y_t.T)
    #   DIST.forward: y = softmax(z / tau); tau² · inter, tau² · intra; beta · inter + gamma · intra
    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def cosine(a, b, eps=1e-8):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + eps)

    def pearson(a, b):
        return cosine(a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True))

    def inter(y_s, y_t):
        return 1 - pearson(y_s, y_t).mean()

    y_s, y_t = softmax(z_s.astype("float64") / tau), softmax(z_t.astype("float64") / tau)
    return beta * tau**2 * inter(y_s, y_t) + gamma * tau**2 * inter(y_s.T, y_t.T)


@pytest.mark.parametrize("beta, gamma, tau", [(1.0, 1.0, 1.0), (2.0, 2.0, 4.0), (1.0, 0.0, 2.0)])
def test_dist_matches_the_authors_code(beta, gamma, tau):
    got = np.asarray(dist_relation.dist_loss(T_LOGITS, S_LOGITS, beta=beta, gamma=gamma, temperature=tau))
    assert got.shape == (8,)  # the batch value, once per sample
    np.testing.assert_allclose(got, np_dist(S_LOGITS, T_LOGITS, beta, gamma, tau), rtol=1e-5, atol=1e-6)


def test_dist_by_name_round_trips_and_has_a_gradient():
    loss = kdistill.losses.get({"name": "dist", "beta": 2.0, "gamma": 2.0}, kind="logits", temperature=4.0)
    assert (loss.beta, loss.gamma, loss.temperature) == (2.0, 2.0, 4.0)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, dist_relation.DIST) and again.get_config() == loss.get_config()
    import tensorflow as tf

    student = tf.Variable(S_LOGITS)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(loss.call(T_LOGITS, student))
    gradient = tape.gradient(value, student).numpy()
    assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0


def test_dist_trains_a_student_in_the_distiller_without_touching_the_distiller():
    teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps={}, logits_loss={"name": "dist", "beta": 2.0, "gamma": 2.0}, temperature=4.0, alpha=0.9
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = images(32), labels(32)
    history = distiller.fit(x, y, batch_size=16, epochs=4, verbose=0).history
    assert history["kd_loss"][-1] < history["kd_loss"][0]
