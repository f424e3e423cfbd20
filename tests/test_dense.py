"""Dense logits in FeatureDistiller (segmenters): per-pixel CE and KD over the valid pixels, CWD on the logit map, sizes, refusals,
fit and saving. NumPy references for the math."""

import keras
import numpy as np
import pytest

import kdistill
from kdistill.errors import UserError
from kdistill.losses import dense
from test_cwd import np_channel_wise_divergence

CLASSES = 4
RNG = np.random.default_rng(3)


def tiny_segmenter(
    name: str, width: int = 8, size: int = 16, stride: int = 1, seed: int = 0, classes: int = CLASSES
) -> keras.Model:
    """Two convolutions and a 1x1 classifier: logits `(batch, size/stride, size/stride, classes)`, a `<name>_stage1` tap."""
    initializer = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(
        width,
        3,
        strides=stride,
        padding="same",
        activation="relu",
        kernel_initializer=initializer,
        name=f"{name}_stage1",
    )(x)
    x = keras.layers.Conv2D(
        width, 3, padding="same", activation="relu", kernel_initializer=initializer, name=f"{name}_stage2"
    )(x)
    return keras.Model(
        inputs, keras.layers.Conv2D(classes, 1, kernel_initializer=initializer, name=f"{name}_logits")(x), name=name
    )


def masks(count: int, size: int = 16, ignored: float = 0.2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, CLASSES, (count, size, size)).astype("uint8")
    values[rng.uniform(size=values.shape) < ignored] = 255
    return values


def np_log_softmax(z, axis=-1):
    z = z - z.max(axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis, keepdims=True))


def np_pixel_mean(values, valid):
    """Per-sample mean over valid pixels (the loss protocol for dense predictors)."""
    return (values * valid).reshape(len(values), -1).sum(1) / valid.reshape(len(values), -1).sum(1)


def _terms(distiller, labels, teacher_logits, student_logits):
    terms = distiller.loss_terms(labels, {"logits": teacher_logits}, {"logits": student_logits})
    return {key: float(value) for key, value in terms.items()}


def _pair(**options):
    teacher, student = tiny_segmenter("teacher", width=8, seed=1), tiny_segmenter("student", width=4, seed=2)
    return kdistill.FeatureDistiller(teacher, student, **{"taps": {}, **options})


def test_cross_entropy_and_kd_are_per_pixel_means_over_the_valid_pixels_of_each_sample():
    distiller = _pair(temperature=2.0, alpha=0.5).compile()
    teacher = (2 * RNG.normal(size=(3, 16, 16, CLASSES))).astype("float32")
    student = RNG.normal(size=(3, 16, 16, CLASSES)).astype("float32")
    labels = masks(3, seed=1)
    labels[2] = 255  # a sample without labelled pixels: no CE, KD over every pixel
    valid = (labels != 255).astype("float64")
    log_student = np_log_softmax(student.astype("float64"))
    ce_pixels = -np.take_along_axis(log_student, np.where(labels == 255, 0, labels)[..., None].astype(int), -1)[..., 0]
    ce = np_pixel_mean(ce_pixels[:2], valid[:2]).sum() / 2  # the mean over the two samples with labelled pixels
    log_teacher_t, log_student_t = np_log_softmax(teacher / 2.0), np_log_softmax(student / 2.0)
    kd_pixels = (np.exp(log_teacher_t) * (log_teacher_t - log_student_t)).sum(-1) * 4.0
    kd = np.concatenate([np_pixel_mean(kd_pixels[:2], valid[:2]), [kd_pixels[2].mean()]]).mean()
    terms = _terms(distiller, labels, teacher, student)
    np.testing.assert_allclose([terms["ce_loss"], terms["kd_loss"]], [ce, kd], rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], 0.5 * kd + 0.5 * ce, rtol=1e-5)
    # the student's logits at the ignored pixels of labelled samples change nothing
    changed = student + 50.0 * ((labels == 255) & (np.arange(3) < 2)[:, None, None])[..., None] * RNG.normal(
        size=student.shape
    )
    assert _terms(distiller, labels, teacher, changed.astype("float32")) == pytest.approx(terms, rel=1e-5)


def test_ignore_label_names_the_skipped_value_none_counts_every_pixel_and_both_are_saved():
    teacher, student = (
        RNG.normal(size=(2, 16, 16, CLASSES)).astype("float32"),
        RNG.normal(size=(2, 16, 16, CLASSES)).astype("float32"),
    )
    labels = masks(2, ignored=0.0, seed=3).astype("int32")
    ce_pixels = -np.take_along_axis(np_log_softmax(student.astype("float64")), labels[..., None], -1)[..., 0]
    every_pixel = _pair(ignore_label=None).compile()
    assert _terms(every_pixel, labels, teacher, student)["ce_loss"] == pytest.approx(ce_pixels.mean(), rel=1e-5)
    background_skipped = _pair(ignore_label=0).compile()
    expected = np_pixel_mean(ce_pixels, (labels != 0).astype("float64")).mean()
    assert _terms(background_skipped, labels, teacher, student)["ce_loss"] == pytest.approx(expected, rel=1e-5)
    for distiller, value in ((every_pixel, None), (background_skipped, 0)):
        restored = kdistill.FeatureDistiller.from_config(distiller.get_config())
        assert restored.ignore_label == value and restored.dense
    with pytest.raises(ValueError, match="ignore_label must be a non-negative integer"):
        _pair(ignore_label=-3)


def test_a_smaller_student_map_is_resized_to_the_teachers_and_a_mask_at_the_input_size_by_nearest_neighbour():
    teacher, student = tiny_segmenter("teacher", seed=1), tiny_segmenter("student", width=4, stride=2, seed=2)
    distiller = kdistill.FeatureDistiller(teacher, student, taps={}, temperature=1.0).compile()
    teacher_logits = RNG.normal(size=(2, 16, 16, CLASSES)).astype("float32")
    student_logits = RNG.normal(size=(2, 8, 8, CLASSES)).astype("float32")
    labels = masks(2, size=16, seed=2)
    resized = np.asarray(keras.ops.image.resize(student_logits, (16, 16), interpolation="bilinear"))
    expected = _terms(distiller, labels, teacher_logits, resized)
    assert _terms(distiller, labels, teacher_logits, student_logits) == pytest.approx(expected, rel=1e-5)
    # a mask at twice the logits' size is taken by nearest neighbour: each 2x2 block of one value gives that value
    big = np.repeat(np.repeat(labels, 2, axis=1), 2, axis=2)
    clean, valid = dense.pixel_labels(big, (16, 16))
    np.testing.assert_array_equal(np.asarray(clean), np.where(labels == 255, 0, labels))
    np.testing.assert_array_equal(np.asarray(valid), (labels != 255).astype("float32"))


def test_cwd_on_the_logit_map_matches_the_reference_code():
    distiller = _pair(logits_loss={"name": "cwd", "temperature": 1.0}, alpha=1.0).compile()
    assert (
        isinstance(distiller.logits_loss, kdistill.losses.ChannelWiseDivergence)
        and distiller.logits_loss.temperature == 1.0
    )
    teacher = (2 * RNG.normal(size=(3, 16, 16, CLASSES))).astype("float32")
    student = RNG.normal(size=(3, 16, 16, CLASSES)).astype("float32")
    nchw = (0, 3, 1, 2)
    # mmrazor's batch loss
    expected = np_channel_wise_divergence(student.transpose(nchw), teacher.transpose(nchw), tau=1.0)
    np.testing.assert_allclose(_terms(distiller, masks(3), teacher, student)["kd_loss"], expected, rtol=1e-5)


@pytest.mark.parametrize(
    "name",
    [
        name
        for name in kdistill.losses.available("logits")
        if getattr(kdistill.losses.get(name, kind="logits"), "dense_logits", None) is None
    ],
)
def test_logits_losses_for_class_vectors_are_refused_for_segmenters_in_one_line(name):
    with pytest.raises(ValueError, match=r"does not apply to segmentation logits .*logits_loss='kl'") as error:
        _pair(logits_loss=name)
    assert "\n" not in str(error.value)


def test_standardized_kd_is_per_pixel_and_a_weighted_list_is_refused():
    distiller = _pair(logits_loss="standardized_kd", temperature=2.0).compile()
    teacher, student = (
        RNG.normal(size=(2, 4, 4, CLASSES)).astype("float32"),
        RNG.normal(size=(2, 4, 4, CLASSES)).astype("float32"),
    )
    labels = masks(2, size=4, seed=5)
    labels[0, 0, 0] = 255
    pixels = np.asarray(
        kdistill.losses.logits.standardized_kd(teacher.reshape(-1, CLASSES), student.reshape(-1, CLASSES), 2.0)
    ).reshape(2, 4, 4)
    expected = np_pixel_mean(pixels, (labels != 255).astype("float64")).mean()
    assert _terms(distiller, labels, teacher, student)["kd_loss"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="weighted list of logits losses is not supported for segmentation"):
        _pair(logits_loss=[("kl", 1.0), ("standardized_kd", 1.0)])


def test_a_classifier_student_under_a_segmenter_teacher_and_masks_outside_the_classes_are_refused():
    teacher = tiny_segmenter("teacher", seed=1)
    classifier = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(CLASSES)],
        name="classifier",
    )
    with pytest.raises(
        UserError,
        match=r"its teacher is a segmenter: it needs one output, logit maps of shape \(batch, H, W, classes\)",
    ):
        kdistill.FeatureDistiller(teacher, classifier, taps={})
    distiller = _pair().compile()
    bad = masks(4)
    bad[0, 0, 0] = 7
    with pytest.raises(UserError, match=r"masks hold value\(s\) 7 outside the 4 classes"):
        distiller.fit(np.zeros((4, 16, 16, 3), "float32"), bad, epochs=1, verbose=0)


def test_fit_trains_a_segmenter_with_per_pixel_metrics_and_saves_and_loads(tmp_path):
    distiller = _pair(taps={"teacher_stage2": "student_stage2"}, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    x = RNG.uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    y = masks(8, seed=4)
    before = [np.array(w) for w in distiller.teacher.weights]
    history = distiller.fit(x, y, batch_size=4, epochs=2, verbose=0).history
    assert set(history) >= {"loss", "ce_loss", "kd_loss", "feat_teacher_stage2", "accuracy"}
    assert all(np.isfinite(values).all() for values in history.values()) and history["loss"][-1] < history["loss"][0]
    assert 0.0 <= history["accuracy"][-1] <= 1.0
    assert all(np.array_equal(b, np.array(w)) for b, w in zip(before, distiller.teacher.weights))
    path = str(tmp_path / "segmenter_distiller.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.dense and loaded.ignore_label == 255
    np.testing.assert_allclose(np.asarray(loaded.student(x[:2])), np.asarray(distiller.student(x[:2])), atol=1e-5)
    assert np.isfinite(loaded.evaluate(x, y, verbose=0, return_dict=True)["loss"])


def test_an_ensemble_of_segmenters_averages_each_pixels_probabilities_and_trains_a_student():
    members = [tiny_segmenter("teacher_a", seed=1), tiny_segmenter("teacher_b", seed=3)]
    distiller = kdistill.FeatureDistiller(
        members,
        tiny_segmenter("student", width=4, seed=2),
        taps={"teacher_a/teacher_a_stage2": "student_stage2"},
        temperature=2.0,
        teacher_weights=[3.0, 1.0],
    ).compile()
    x = RNG.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    averaged = sum(
        weight * keras.ops.softmax(member(x) / 2.0, axis=-1) for weight, member in zip((0.75, 0.25), members)
    )
    np.testing.assert_allclose(
        np.asarray(keras.ops.softmax(distiller.teacher(x) / 2.0, axis=-1)), np.asarray(averaged), atol=1e-5
    )
    history = distiller.fit(x, masks(4), batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all() and "feat_teacher_a/teacher_a_stage2" in history


def test_classification_logits_keep_their_vector_path():
    from conftest import small_cnn

    teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
    # DKD stays available for classifiers
    distiller = kdistill.FeatureDistiller(teacher, student, taps={}, logits_loss="dkd")
    assert not distiller.dense and dense.logits_loss_kind("cwd") == "feature"
    with pytest.raises(ValueError, match="Unknown logits loss 'cwd'"):
        kdistill.FeatureDistiller(teacher, student, taps={}, logits_loss="cwd")
