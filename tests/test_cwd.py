"""Channel-wise distillation (Shu et al., ICCV 2021) against the reference code transcribed into NumPy, and inside
FeatureDistiller."""

import keras
import numpy as np
import pytest

import kdistill
from kdistill.losses.cwd import ChannelWiseDivergence, channel_wise_divergence
from conftest import assert_gradient_step_lowers, real_images, small_cnn

RNG = np.random.default_rng(5)
# NCHW as the reference has them; H != W so that a transposition mistake shows.
TEACHER_NCHW = (RNG.normal(size=(4, 6, 3, 5)) * 2).astype("float32")
STUDENT_NCHW = (RNG.normal(size=(4, 6, 3, 5)) * 1.5).astype("float32")


def nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def np_log_softmax(z, axis):
    z = z - z.max(axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis, keepdims=True))


def np_channel_wise_divergence(preds_S, preds_T, tau=1.0, loss_weight=1.0):
    # Transcribes open-mmlab/mmrazor, mmrazor/models/losses/cwd.py, ChannelWiseDivergence.forward (NCHW):
    #   N, C, H, W = preds_S.shape
    #   softmax_pred_T = F.softmax(preds_T.view(-1, W * H) / self.tau, dim=1)
    #   logsoftmax = torch.nn.LogSoftmax(dim=1)
    #   loss = torch.sum(softmax_pred_T * logsoftmax(preds_T.view(-1, W * H) / self.tau) -
    #                    softmax_pred_T * logsoftmax(preds_S.view(-1, W * H) / self.tau)) * (self.tau**2)
    #   loss = self.loss_weight * loss / (C * N)
    preds_S, preds_T = preds_S.astype("float64"), preds_T.astype("float64")
    N, C, H, W = preds_S.shape
    softmax_pred_T = np.exp(np_log_softmax(preds_T.reshape(-1, W * H) / tau, axis=1))
    loss = np.sum(
        softmax_pred_T * np_log_softmax(preds_T.reshape(-1, W * H) / tau, axis=1)
        - softmax_pred_T * np_log_softmax(preds_S.reshape(-1, W * H) / tau, axis=1)
    ) * (tau**2)
    return loss_weight * loss / (C * N)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_cwd_matches_the_reference_code(temperature):
    got = np.asarray(channel_wise_divergence(nhwc(TEACHER_NCHW), nhwc(STUDENT_NCHW), temperature=temperature))
    assert got.shape == (4,)
    # per sample: the reference on a batch of one; the batch mean: the reference's loss
    expected = [
        np_channel_wise_divergence(STUDENT_NCHW[i : i + 1], TEACHER_NCHW[i : i + 1], tau=temperature) for i in range(4)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        got.mean(), np_channel_wise_divergence(STUDENT_NCHW, TEACHER_NCHW, tau=temperature), rtol=1e-5
    )
    loss = ChannelWiseDivergence(temperature=temperature)
    np.testing.assert_allclose(float(loss(nhwc(TEACHER_NCHW), nhwc(STUDENT_NCHW))), got.mean(), rtol=1e-5)


def test_cwd_is_zero_when_the_student_equals_the_teacher_and_ignores_a_per_channel_offset():
    teacher = nhwc(TEACHER_NCHW)
    np.testing.assert_allclose(
        np.asarray(ChannelWiseDivergence(temperature=4.0).call(teacher, teacher)), 0.0, atol=1e-6
    )
    # a softmax over positions does not see a constant added to a whole channel
    offset = RNG.normal(size=(1, 1, 1, 6)).astype("float32") * 3
    np.testing.assert_allclose(np.asarray(channel_wise_divergence(teacher, teacher + offset)), 0.0, atol=1e-5)


def test_cwd_round_trips_and_is_a_feature_loss_by_name():
    loss = kdistill.losses.get({"name": "cwd", "temperature": 4}, kind="feature")
    assert isinstance(loss, ChannelWiseDivergence) and loss.temperature == 4.0
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is ChannelWiseDivergence and again.get_config() == loss.get_config()
    assert isinstance(kdistill.losses.get("channel_wise"), ChannelWiseDivergence)
    assert ChannelWiseDivergence().temperature == 1.0  # the reference's default tau
    assert "cwd" in kdistill.losses.available("feature") and "cwd" not in kdistill.losses.available("logits")


def test_a_gradient_step_lowers_the_cwd():
    loss = ChannelWiseDivergence(temperature=2.0)
    assert_gradient_step_lowers(loss, nhwc(TEACHER_NCHW), nhwc(STUDENT_NCHW))


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: channel_wise_divergence(np.ones((2, 8), "float32"), np.ones((2, 8), "float32")),
            "Tap a feature map.*feature_loss='kl'",
        ),
        (
            lambda: channel_wise_divergence(np.ones((2, 4, 8), "float32"), np.ones((2, 4, 8), "float32")),
            r"\(batch, H, W, channels\)",
        ),
        (
            lambda: channel_wise_divergence(nhwc(TEACHER_NCHW), nhwc(TEACHER_NCHW)[:, :2]),
            "projection maps the student to the teacher's shape",
        ),
        (lambda: ChannelWiseDivergence(temperature=-1.0), "temperature must be positive"),
        (lambda: kdistill.losses.get({"name": "cwd", "temperature": "1"}, kind="feature"), "without quotes"),
    ],
)
def test_invalid_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_cwd_trains_a_student_in_the_distiller():
    teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(
        teacher,
        student,
        taps={"teacher_stage2": "student_stage2"},
        feature_loss={"name": "cwd", "temperature": 1.0},
        alpha=0.9,
    )
    assert isinstance(distiller.feature_loss, ChannelWiseDivergence) and distiller.feature_loss.temperature == 1.0
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    before = [np.array(w) for w in teacher.get_weights()]
    x, y = real_images(64)
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    for key in ("loss", "ce_loss", "kd_loss", "feat_teacher_stage2"):
        assert np.isfinite(history[key]).all(), (key, history[key])
    assert history["feat_teacher_stage2"][-1] < history["feat_teacher_stage2"][0]
    for old, new in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_cwd_on_a_pooled_tap_fails_at_the_first_step_with_the_fix():
    # A tap after global pooling gives vectors: the error names the fix before any training.
    teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps={"teacher_pool": "student_pool"}, feature_loss="cwd", alpha=0.9
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = real_images(16)
    with pytest.raises(ValueError, match="feature_loss='kl'"):
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_cwd_at_the_authors_temperature_from_a_flag():
    """A bare `--feature-loss cwd` runs at the distiller's T = 4; the flag now carries the loss's own options."""
    from kdistill import cli
    from kdistill.run import options
    from kdistill.run.config import DistillConfig

    args = cli.build_parser().parse_args(["distill", "--feature-loss", "cwd:temperature=1", "--temperature", "4"])
    config = DistillConfig.from_dict(options.merge_flags({}, args, DistillConfig), check_files=False)
    distiller = kdistill.FeatureDistiller(
        small_cnn("teacher"),
        small_cnn("student", seed=1),
        taps={"teacher_stage2": "student_stage2"},
        **config.distiller_options(),
    )
    assert isinstance(distiller.feature_loss, ChannelWiseDivergence) and distiller.feature_loss.temperature == 1.0
    assert (
        distiller.temperature == 4.0 and kdistill.losses.get("cwd", kind="feature", temperature=4.0).temperature == 4.0
    )
    with pytest.raises(ValueError, match="name:option=value"):
        kdistill.losses.get("cwd:temperature", kind="feature")
