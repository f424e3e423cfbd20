"""Logit standardisation applied to DKD (Sun et al., CVPR 2024) against the authors' code transcribed into NumPy."""

import keras
import numpy as np

import kdistill
from kdistill.losses import standardized_dkd as module
from conftest import images, labels, small_cnn

RNG = np.random.default_rng(11)
T_LOGITS = (RNG.normal(size=(6, 10)) * 3).astype("float32")
S_LOGITS = (RNG.normal(size=(6, 10)) * 2).astype("float32")
TARGETS = np.array([0, 3, 9, 2, 2, 7])


def np_normalize(logit):
    # sunshangquan/logit-standardization-KD, mdistiller/distillers/DKD.py, normalize(): std with divisor C - 1, plus
    # 1e-7
    return (logit - logit.mean(-1, keepdims=True)) / (1e-7 + logit.std(-1, ddof=1, keepdims=True))


def np_dkd_loss(logits_student_in, logits_teacher_in, target, alpha, beta, temperature):
    # Same file, dkd_loss(..., logit_stand=True), with F.kl_div(log q, p, reduction='none').sum(1) per sample
    # (the authors then average over the batch; kdistill keeps per-sample values and the distiller averages).
    s, t = np_normalize(logits_student_in.astype("float64")), np_normalize(logits_teacher_in.astype("float64"))
    gt = np.eye(s.shape[1])[target]
    other = 1 - gt

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p_s, p_t = softmax(s / temperature), softmax(t / temperature)
    b_s = np.stack([(p_s * gt).sum(1), (p_s * other).sum(1)], 1)
    b_t = np.stack([(p_t * gt).sum(1), (p_t * other).sum(1)], 1)
    tckd = (b_t * (np.log(b_t) - np.log(b_s))).sum(1) * temperature**2

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    log_p_s2 = log_softmax(s / temperature - 1000.0 * gt)
    p_t2 = softmax(t / temperature - 1000.0 * gt)
    # F.kl_div(input, target) = target * (log target - input), with 0 where target is 0
    nckd = np.where(p_t2 > 0, p_t2 * (np.log(np.where(p_t2 > 0, p_t2, 1.0)) - log_p_s2), 0.0).sum(1) * temperature**2
    return alpha * tckd + beta * nckd


def test_standardized_dkd_matches_the_authors_code():
    got = np.asarray(module.standardized_dkd(T_LOGITS, S_LOGITS, TARGETS, alpha=1.0, beta=8.0, temperature=2.0))
    np.testing.assert_allclose(got, np_dkd_loss(S_LOGITS, T_LOGITS, TARGETS, 1.0, 8.0, 2.0), rtol=1e-4, atol=1e-5)


def test_standardized_dkd_by_name_reads_labels_and_round_trips():
    loss = kdistill.losses.get({"name": "standardized_dkd", "beta": 2.0}, kind="logits", temperature=2.0)
    assert loss.uses_labels and (loss.beta, loss.temperature) == (2.0, 2.0)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert again.get_config() == loss.get_config()
    # invariant to the student's logit scale and shift (the point of standardisation)
    np.testing.assert_allclose(
        np.asarray(loss.call(T_LOGITS, 3 * S_LOGITS + 1, labels=TARGETS)),
        np.asarray(loss.call(T_LOGITS, S_LOGITS, labels=TARGETS)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_standardized_dkd_trains_in_the_distiller():
    teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps={}, logits_loss="standardized_dkd", temperature=2.0, alpha=0.5
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = distiller.fit(images(32), labels(32), batch_size=16, epochs=4, verbose=0).history
    assert history["kd_loss"][-1] < history["kd_loss"][0]
