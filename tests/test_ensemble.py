"""Several teachers: averaged soft targets, taps from each teacher, different sizes, teachers untouched, save/load, cache."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill.models import ensemble as ensemble_module
from kdistill.run import teacher_cache
from conftest import real_images, small_cnn

TAPS = {"teacher_a/teacher_a_stage2": "student_stage2", "teacher_b/teacher_b_stage1": "student_stage1"}


def _teachers():
    """Two teachers of different widths and input sizes (32x32 and 24x24)."""
    teacher_a = small_cnn("teacher_a", widths=(8, 16), seed=1)
    teacher_b = small_cnn("teacher_b", widths=(12, 6), input_shape=(24, 24, 3), seed=3)
    return teacher_a, teacher_b


def _softmax(z, temperature):
    e = np.exp((z - z.max(-1, keepdims=True)) / temperature)
    return e / e.sum(-1, keepdims=True)


def test_ensemble_logits_soften_to_the_weighted_average_of_the_teachers_probabilities():
    teacher_a, teacher_b = _teachers()
    x, _ = real_images(6)
    teacher = kdistill.teachers.ensemble([teacher_a, teacher_b], weights=[3.0, 1.0], temperature=4.0)
    assert teacher.input_shape == (None, 32, 32, 3) and not teacher.trainable
    z_a = np.asarray(teacher_a(x), "float64")
    z_b = np.asarray(teacher_b(keras.ops.image.resize(x, (24, 24), interpolation="bilinear")), "float64")
    expected = 0.75 * _softmax(z_a, 4.0) + 0.25 * _softmax(z_b, 4.0)
    np.testing.assert_allclose(_softmax(np.asarray(teacher(x), "float64"), 4.0), expected, rtol=1e-4, atol=1e-6)
    assert ensemble_module.members(teacher) == [teacher_a, teacher_b]


@pytest.mark.eager
def test_two_different_teachers_with_taps_from_both_train_and_stay_untouched():
    teacher_a, teacher_b = _teachers()
    before = [w.numpy().copy() for w in teacher_a.weights + teacher_b.weights]
    student = small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(
        [teacher_a, teacher_b], student, taps=TAPS, teacher_weights=[1.0, 1.0], alpha=0.7
    )
    assert [row["teacher_shape"] for row in distiller.projection_summary()] == [(8, 8, 16), (12, 12, 12)]
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    x, y = real_images(64)
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    for key in ("loss", "kd_loss", "feat_teacher_a/teacher_a_stage2", "feat_teacher_b/teacher_b_stage1"):
        assert np.isfinite(history[key]).all(), key
    assert history["feat_teacher_b/teacher_b_stage1"][-1] < history["feat_teacher_b/teacher_b_stage1"][0]
    for old, new in zip(before, teacher_a.weights + teacher_b.weights):
        np.testing.assert_array_equal(old, new.numpy())
    trainable = {id(v) for v in distiller.trainable_variables}
    assert not any(id(v) in trainable for v in teacher_a.weights + teacher_b.weights)


@pytest.mark.eager
def test_an_ensemble_distiller_saves_and_loads_with_the_same_outputs(tmp_path):
    teacher_a, teacher_b = _teachers()
    student = small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller([teacher_a, teacher_b], student, taps=TAPS, temperature=2.0)
    distiller.compile(optimizer="adam")
    x, y = real_images(16)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "ensemble.keras")
    distiller.save(path)
    restored = keras.saving.load_model(path)
    original, loaded = distiller(x[:4]), restored(x[:4])
    for key in ("logits", *TAPS):
        np.testing.assert_allclose(
            np.asarray(loaded["teacher"][key]), np.asarray(original["teacher"][key]), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            np.asarray(loaded["student"][key]), np.asarray(original["student"][key]), rtol=1e-5, atol=1e-5
        )
    assert restored.get_layer("ensemble").get_layer("ensemble_logits").temperature == 2.0


@pytest.mark.eager
def test_the_teacher_cache_stores_the_ensembles_outputs(tmp_path):
    teacher_a, teacher_b = _teachers()
    teacher = kdistill.teachers.ensemble([teacher_a, teacher_b], temperature=4.0)
    x, y = real_images(32)
    x = np.round(x)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    cache = teacher_cache.build(teacher, list(TAPS), dataset, str(tmp_path / "cache"), verbose=0)
    assert set(cache.outputs) == {*TAPS, "logits"}
    batch, _ = next(iter(cache.dataset(8, shuffle=False)))
    live = kdistill.taps.feature_model(teacher, list(TAPS))(batch["images"], training=False)
    for key in ("logits", *TAPS):
        np.testing.assert_allclose(batch["teacher"][key], live[key], rtol=1e-5, atol=1e-5)
    student = small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(teacher, student, taps=TAPS).compile(optimizer="adam")
    history = distiller.fit(cache.dataset(16), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()


def test_ensemble_mistakes_are_explained():
    teacher_a, _ = _teachers()
    twin = small_cnn("teacher_a", widths=(4, 4), seed=5)
    with pytest.raises(ValueError, match="names must differ.*'teacher_a', 'teacher_a'"):
        kdistill.teachers.ensemble([teacher_a, twin])
    with pytest.raises(ValueError, match="two or more"):
        kdistill.teachers.ensemble([teacher_a])
    other = small_cnn("teacher_c", num_classes=5)
    with pytest.raises(ValueError, match="same classes"):
        kdistill.teachers.ensemble([teacher_a, other])
    student = small_cnn("student", widths=(4, 8))
    with pytest.raises(ValueError, match="Unknown teacher_b layer 'teacher_b_stage9'. Did you mean"):
        kdistill.FeatureDistiller(
            [teacher_a, small_cnn("teacher_b")], student, taps={"teacher_b/teacher_b_stage9": "student_stage1"}
        )
    with pytest.raises(ValueError, match="teacher_weights weighs several teachers"):
        kdistill.FeatureDistiller(teacher_a, student, teacher_weights=[1.0])
