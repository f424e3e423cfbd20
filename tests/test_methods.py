"""Each distillation method against a NumPy reference, its gradient, and a few steps inside FeatureDistiller."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill.losses import features as feature_losses, logits as logit_losses
from kdistill import losses
from conftest import assert_gradient_step_lowers, images, labels, small_cnn

RNG = np.random.default_rng(7)
T_LOGITS = RNG.normal(size=(6, 5)).astype("float32") * 3
S_LOGITS = RNG.normal(size=(6, 5)).astype("float32") * 2
TARGETS = np.array([0, 1, 2, 3, 4, 0])
T_MAP = RNG.normal(size=(6, 4, 4, 3)).astype("float32")
S_MAP = RNG.normal(size=(6, 4, 4, 5)).astype("float32")


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(p, q):
    return (p * (np.log(p) - np.log(q))).sum(-1)


def np_dkd(t, s, y, alpha, beta, T):
    pt, ps = softmax(t / T), softmax(s / T)
    rows = np.arange(len(y))
    bt = np.stack([pt[rows, y], 1 - pt[rows, y]], -1)
    bs = np.stack([ps[rows, y], 1 - ps[rows, y]], -1)
    tckd = np_kl(bt, bs)
    nckd = []
    for i in range(len(y)):
        keep = [c for c in range(t.shape[1]) if c != y[i]]
        nckd.append(np_kl(softmax(t[i, keep] / T), softmax(s[i, keep] / T)))
    return (alpha * tckd + beta * np.array(nckd)) * T * T


def np_at(t, s):
    def attention(f):
        a = (f**2).mean(-1).reshape(len(f), -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return ((attention(t) - attention(s)) ** 2).mean(-1)


def np_sp(t, s):
    def gram(f):
        f = f.reshape(len(f), -1)
        g = f @ f.T
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    return ((gram(t) - gram(s)) ** 2).sum() / len(t) ** 2


def huber(x):
    return np.where(np.abs(x) < 1, 0.5 * x * x, np.abs(x) - 0.5)


def np_rkd(t, s, wd, wa):
    t, s = t.mean((1, 2)), s.mean((1, 2))

    def dist(f):
        d = np.linalg.norm(f[:, None] - f[None], axis=-1)
        return d / d[d > 0].mean()

    def angle(f):
        b = len(f)
        out = np.zeros((b, b, b))
        for i in range(b):
            for j in range(b):
                for k in range(b):
                    if i == j or k == j:
                        continue  # zero vectors: the implementation's e = 0 there as well
                    eij = (f[i] - f[j]) / np.linalg.norm(f[i] - f[j])
                    ekj = (f[k] - f[j]) / np.linalg.norm(f[k] - f[j])
                    out[i, j, k] = eij @ ekj
        return out

    return wd * huber(dist(t) - dist(s)).mean() + wa * huber(angle(t) - angle(s)).mean()


def np_pkt(t, s, eps=1e-7):
    # Transcribes passalis/probabilistic_kt, nn/pkt.py (also RepDistiller, distiller_zoo/PKT.py),
    # cosine_similarity_loss: rows L2-normalised (norm + eps), cosine kernel shifted to [0, 1], rows normalised to
    # probabilities, then torch.mean(target * log((target + eps) / (model + eps))): the mean over all b x b entries, not
    # a sum per row.
    def probabilities(f):
        f = f.reshape(len(f), -1).astype("float64")
        f = f / (np.sqrt((f**2).sum(1, keepdims=True)) + eps)
        k = (f @ f.T + 1.0) / 2.0
        return k / k.sum(1, keepdims=True)

    target, model = probabilities(t), probabilities(s)
    return np.mean(target * np.log((target + eps) / (model + eps)))


def np_hcl(t, s, levels=(4, 2, 1)):
    def pool(f, size):  # PyTorch's adaptive_avg_pool2d bins
        h, w = f.shape[1:3]
        out = np.zeros((len(f), size, size, f.shape[-1]))
        for i in range(size):
            for j in range(size):
                rows = slice(int(np.floor(i * h / size)), int(np.ceil((i + 1) * h / size)))
                cols = slice(int(np.floor(j * w / size)), int(np.ceil((j + 1) * w / size)))
                out[:, i, j] = f[:, rows, cols].mean(axis=(1, 2))
        return out

    def per_sample_mse(d):
        return (d**2).reshape(len(d), -1).mean(1)

    loss, weight, total = per_sample_mse(t - s), 1.0, 1.0
    for level in levels:
        if level >= t.shape[1]:
            continue
        weight /= 2
        loss = loss + weight * per_sample_mse(pool(t, level) - pool(s, level))
        total += weight
    return loss / total


def np_normalize(logit):
    # Transcribes sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py, normalize():
    # (logit - mean) / (1e-7 + std), where torch's std divides by C - 1 (unbiased).
    return (logit - logit.mean(-1, keepdims=True)) / (1e-7 + logit.std(-1, ddof=1, keepdims=True))


def np_standardized_kd(t, s, T):
    # Same file, kd_loss(..., logit_stand=True): KL(softmax(z_t / T) || softmax(z_s / T)) summed over classes, times T².
    t, s = np_normalize(t.astype("float64")), np_normalize(s.astype("float64"))
    return np_kl(softmax(t / T), softmax(s / T)) * T * T


def test_dkd_matches_numpy_and_reads_one_hot_labels():
    expected = np_dkd(T_LOGITS, S_LOGITS, TARGETS, 1.0, 8.0, 4.0)
    got = logit_losses.dkd(T_LOGITS, S_LOGITS, TARGETS, alpha=1.0, beta=8.0, temperature=4.0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5)
    one_hot = np.eye(5, dtype="float32")[TARGETS]
    np.testing.assert_allclose(
        np.asarray(logit_losses.dkd(T_LOGITS, S_LOGITS, one_hot, 1.0, 8.0, 4.0)), expected, rtol=1e-4, atol=1e-5
    )


def test_dkd_with_alpha_beta_one_and_confident_teacher_is_close_to_kd():
    # KD = TCKD + (1 - p_t(target)) NCKD: equal to DKD(1, 1) up to the (1 - p) factor.
    t = T_LOGITS.copy()
    t[np.arange(6), TARGETS] += 0.0
    kd = np.asarray(losses.kd_kl_divergence(t, S_LOGITS, 4.0))
    pt = softmax(t / 4.0)[np.arange(6), TARGETS]
    tckd = np.asarray(logit_losses.dkd(t, S_LOGITS, TARGETS, 1.0, 0.0, 4.0))
    nckd = np.asarray(logit_losses.dkd(t, S_LOGITS, TARGETS, 0.0, 1.0, 4.0))
    np.testing.assert_allclose(kd, tckd + (1 - pt) * nckd, rtol=1e-4, atol=1e-5)


def test_standardized_kd_matches_numpy_and_ignores_logit_scale():
    np.testing.assert_allclose(
        np.asarray(logit_losses.standardized_kd(T_LOGITS, S_LOGITS, 2.0)),
        np_standardized_kd(T_LOGITS, S_LOGITS, 2.0),
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        np.asarray(logit_losses.standardized_kd(T_LOGITS, 5 * T_LOGITS + 3, 2.0)), 0.0, atol=1e-5
    )


@pytest.mark.parametrize(
    "name, function, reference",
    [
        ("at", feature_losses.attention_transfer, np_at),
        ("sp", feature_losses.similarity_preserving, np_sp),
        (
            "rkd",
            lambda t, s: 25 * feature_losses.rkd_distance(t, s) + 50 * feature_losses.rkd_angle(t, s),
            lambda t, s: np_rkd(t, s, 25, 50),
        ),
        ("pkt", feature_losses.pkt, np_pkt),
    ],
)
def test_feature_methods_match_numpy(name, function, reference):
    got = np.asarray(function(T_MAP, S_MAP))
    assert got.shape == (6,)
    np.testing.assert_allclose(got, reference(T_MAP, S_MAP), rtol=1e-4, atol=1e-6)
    # zero when the student equals the teacher
    assert float(np.asarray(losses.get(name).call(T_MAP, T_MAP)).max()) < 1e-6


@pytest.mark.parametrize("size", [4, 6])
def test_hcl_matches_numpy_on_even_and_uneven_pyramids(size):
    # 4x4 maps use the 2x2 and 1x1 levels; 6x6 maps also the 4x4 level, whose bins overlap (6 / 4 is not whole).
    rng = np.random.default_rng(size)
    teacher = rng.normal(size=(3, size, size, 2)).astype("float32")
    student = rng.normal(size=(3, size, size, 2)).astype("float32")
    got = np.asarray(feature_losses.hierarchical_context(teacher, student))
    np.testing.assert_allclose(got, np_hcl(teacher, student), rtol=1e-5, atol=1e-6)
    # A constant offset is seen at every level: the loss is exactly its square.
    np.testing.assert_allclose(np.asarray(losses.get("hcl").call(teacher, teacher + 0.5)), 0.25, rtol=1e-5)
    with pytest.raises(ValueError, match="HCL needs"):
        feature_losses.hierarchical_context(teacher, student[:, :2])


@pytest.mark.parametrize("name", ["at", "sp", "rkd", "pkt", "hcl", "dkd", "standardized_kd"])
def test_gradient_descends_the_loss(name):
    loss = losses.get(name)
    teacher, start = (
        (T_LOGITS, S_LOGITS) if name in ("dkd", "standardized_kd") else (T_MAP, T_MAP + 0.5 * S_MAP[..., :3])
    )
    assert_gradient_step_lowers(loss, teacher, start, step=1e-3)


def test_dkd_gradient_on_the_target_logit_has_the_right_sign():
    # A student less confident than the teacher in the target class is pushed up on that logit.
    teacher = np.array([[6.0, 0.0, 0.0]], "float32")
    student = tf.Variable(np.array([[0.0, 0.0, 0.0]], "float32"))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(logit_losses.dkd(teacher, student, np.array([0]), 1.0, 8.0, 1.0))
    assert tape.gradient(value, student).numpy()[0, 0] < 0


def test_weighted_list_of_losses():
    combined = losses.get([("at", 1000.0), {"name": "rkd", "weight": 2.0, "angle_weight": 0.0}], kind="feature")
    expected = 1000 * np_at(T_MAP, S_MAP) + 2 * np_rkd(T_MAP, S_MAP, 25, 0)
    np.testing.assert_allclose(np.asarray(combined.call(T_MAP, S_MAP)), expected, rtol=1e-4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(combined))
    np.testing.assert_allclose(np.asarray(restored.call(T_MAP, S_MAP)), expected, rtol=1e-4)
    with pytest.raises(ValueError, match="Did you mean 'dkd'"):
        losses.get("dkdd", kind="logits")


@pytest.mark.parametrize(
    "feature_loss, logits_loss",
    [
        ("at", "dkd"),
        ("sp", "standardized_kd"),
        ("rkd", "kl"),
        ("pkt", "kl"),
        ("hcl", "kl"),
        ([("at", 1000.0), ("mse", 1.0)], "dkd"),
        ("crd", "kl"),
    ],
)
@pytest.mark.eager
def test_each_method_trains_inside_the_distiller_without_nan(feature_loss, logits_loss):
    teacher = small_cnn("teacher", widths=(8, 16), seed=1)
    student = small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps={"teacher_stage2": "student_stage2"}, feature_loss=feature_loss, logits_loss=logits_loss
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    history = distiller.fit(images(64), labels(64), batch_size=16, epochs=2, verbose=0).history
    for key in ("loss", "kd_loss", "feat_teacher_stage2"):
        assert np.isfinite(history[key]).all(), (key, history[key])
    assert history["loss"][-1] < history["loss"][0] * 1.5


def test_linear_cka_matches_its_definition_and_invariances():
    from kdistill.models.tap_suggest import linear_cka

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 6)), rng.normal(size=(20, 4))
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-9)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    # rotation, scale and shift invariant
    assert linear_cka(x, 2.5 * x @ rotation + 1.0) == pytest.approx(1.0, abs=1e-9)


def test_taps_suggest_command_prints_pairs_and_saves_a_cka_heatmap(tmp_path, capsys):
    from kdistill import cli
    from test_data import make_fashion_mnist

    make_fashion_mnist(tmp_path / "data", train=40, test=40)
    heatmap = tmp_path / "cka.png"
    assert (
        cli.main(
            [
                "taps",
                "suggest",
                "--teacher",
                "resnet50",
                "--student",
                "resnet8x4",
                "--data-dir",
                str(tmp_path / "data"),
                "--cka-images",
                "32",
                "--heatmap",
                str(heatmap),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "conv4_block6_out" in out and "stage3_out" in out and "best by CKA" in out
    assert "taps={'conv3_block4_out': 'stage2_out', 'conv4_block6_out': 'stage3_out'}" in out
    assert heatmap.read_bytes()[:4] == b"\x89PNG"
    suggestion = kdistill.tap_suggest.suggest(
        small_cnn("teacher", widths=(8, 16)), small_cnn("student", widths=(4, 8)), images(32)
    )
    assert suggestion.cka.shape == (2, 2) and ((0 <= suggestion.cka) & (suggestion.cka <= 1 + 1e-9)).all()
    assert suggestion.pairs == {"teacher_stage1": "student_stage1", "teacher_stage2": "student_stage2"}
