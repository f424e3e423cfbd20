import os
import keras
import numpy as np
import pytest

import kdistill
from harness import run_config_round_trip, run_model_saving
from kdistill.models import stages


@pytest.mark.parametrize("name", kdistill.students.available())
def test_every_registered_student_outputs_logits_and_rebuilds_from_its_config(name):
    """Driven by the registry: a newly registered student is checked without new test code."""
    student = kdistill.students.get(name, num_classes=10, input_shape=(32, 32, 3))
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    out = np.asarray(student(x, training=False))
    assert out.shape == (2, 10)
    assert np.isfinite(out).all()
    rebuilt = run_config_round_trip(student)
    rebuilt.set_weights(student.get_weights())
    assert rebuilt.name == student.name
    np.testing.assert_array_equal(np.asarray(rebuilt(x, training=False)), out)


def test_mobilenet_v2_width_multiplier_shrinks_the_model():
    narrow = kdistill.students.get("mobilenet_v2", num_classes=10, width=0.35)
    wide = kdistill.students.get("mobilenet_v2", num_classes=10, width=1.0)
    assert narrow.count_params() < wide.count_params() / 2


def test_student_save_and_reload_gives_identical_predictions(tmp_path):
    student = kdistill.students.get("resnet8x4", num_classes=10)
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    run_model_saving(student, str(tmp_path / "student.keras"), x, load=kdistill.students.load)


def test_unknown_student_lists_registered_ones():
    with pytest.raises(ValueError, match=r"Did you mean 'mobilenet_v2'.*Registered: .*resnet20"):
        kdistill.students.get("mobilenet_v2x", num_classes=10)


def test_batch_norm_momentum_is_set_for_short_schedules():
    from keras.layers import BatchNormalization

    student = kdistill.students.get("mobilenet_v2", num_classes=10)
    momenta = {layer.momentum for layer in student.layers if isinstance(layer, BatchNormalization)}
    assert momenta == {0.9}
    keras_default = kdistill.students.get("mobilenet_v2", num_classes=10, batch_norm_momentum=None)
    assert {layer.momentum for layer in keras_default.layers if isinstance(layer, BatchNormalization)} == {0.999}
    with pytest.raises(ValueError, match="batch_norm_momentum"):
        kdistill.students.get("resnet20", num_classes=10, batch_norm_momentum=1.5)


def test_a_saved_student_loads_with_plain_keras_without_kdistill(tmp_path):
    import subprocess
    import sys

    import kdistill

    path = tmp_path / "student.keras"
    kdistill.students.get("mobilenet_v2", num_classes=10).save(path)
    code = f"import keras, sys; m = keras.models.load_model({str(path)!r}); assert 'kdistill' not in sys.modules; print(m.count_params())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) > 0


def test_imagenet_student_weights_fail_fast_offline_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(
        ValueError, match=r"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5.*--student-weights PATH"
    ):
        kdistill.students.get("mobilenet_v2", num_classes=10, width=0.35, weights="imagenet")
    with pytest.raises(
        ValueError,
        match="no ImageNet weights for the student 'resnet8x4'; it has them for mobilenet_v2, mobilenet_v3_small",
    ):
        kdistill.students.get("resnet8x4", num_classes=10, weights="imagenet")


def test_imagenet_student_weights_without_network_name_the_file_of_the_input_size(tmp_path, monkeypatch):
    """Without KDISTILL_OFFLINE the download was tried and Keras' raw "URL fetch failure" came out, for the 224 file at 128x128."""
    from keras.src.utils import file_utils

    asked = []

    def no_network(fname, origin=None, **options):
        asked.append(fname)
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KDISTILL_OFFLINE", raising=False)
    monkeypatch.setattr(file_utils, "get_file", no_network)
    expected = kdistill.students.imagenet_notop_file("mobilenet_v2", (128, 128, 3), 0.35)
    assert expected.endswith("_0.35_128_no_top.h5")
    with pytest.raises(
        ValueError,
        match=rf"Could not get the ImageNet weights of mobilenet_v2 \(width 0.35\).*copy '{expected}'.*KDISTILL_OFFLINE=1",
    ):
        kdistill.students.get("mobilenet_v2", num_classes=10, input_shape=(128, 128, 3), width=0.35, weights="imagenet")
    assert asked == [expected]  # the file Keras asked for is the one the message names


@pytest.mark.eager
def test_imagenet_student_weights_load_from_the_keras_cache_with_a_new_classifier(tmp_path, monkeypatch):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35, input_shape=(32, 32, 3))
    reference = backbone.get_layer("block_13_expand").get_weights()[0]
    path = tmp_path / "models" / kdistill.students.imagenet_notop_file("mobilenet_v2", (32, 32, 3), 0.35)
    path.parent.mkdir()
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, backbone)
    student = kdistill.students.get("mobilenet_v2", num_classes=7, width=0.35, weights="imagenet")
    np.testing.assert_array_equal(student.get_layer("block_13_expand").get_weights()[0], reference)
    assert student.output.shape == (None, 7)
    teacher = kdistill.teachers.resnet50(num_classes=7)
    assert kdistill.taps.preset(teacher, student)  # the stage taps still resolve


def test_student_weights_from_a_file_and_a_clear_error_when_they_do_not_fit(tmp_path):
    source = kdistill.students.get("resnet8x4", num_classes=10)
    weights = str(tmp_path / "student.weights.h5")
    source.save_weights(weights)
    loaded = kdistill.students.get("resnet8x4", num_classes=10, weights=weights)
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    whole = str(tmp_path / "student.keras")
    source.save(whole)
    assert kdistill.students.get("resnet8x4", num_classes=10, weights=whole).count_params() == source.count_params()
    with pytest.raises(ValueError, match="do not fit the student 'resnet20'"):
        kdistill.students.get("resnet20", num_classes=10, weights=weights)
    with pytest.raises(ValueError, match="predicts 10 classes, not 3"):
        kdistill.students.get("resnet8x4", num_classes=3, weights=whole)


def test_a_registered_student_with_stages_gets_a_tap_preset():
    @kdistill.students.register("test_two_stage_cnn", stages=[("stage_a", 2), ("stage_b", 4), ("stage_c", 8)])
    def two_stage(num_classes, input_shape=(32, 32, 3)):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stage_a")(inputs)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stage_b")(x)
        x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="stage_c")(x)
        return keras.Model(
            inputs, keras.layers.Dense(num_classes)(keras.layers.GlobalAveragePooling2D()(x)), name="test_two_stage_cnn"
        )

    try:
        student = kdistill.students.get("test_two_stage_cnn", num_classes=10)
        assert kdistill.taps.preset("resnet50", student) == {
            "conv3_block4_out": "stage_b",
            "conv4_block6_out": "stage_c",
        }
        assert kdistill.taps.family(student) == "test_two_stage_cnn"  # by its registered name
        with pytest.raises(ValueError, match="must grow"):
            kdistill.students.register("test_bad_student", two_stage, stages=[("deep", 8), ("shallow", 2)])
        assert "test_bad_student" not in kdistill.students.available()
    finally:
        kdistill.students._REGISTRY.pop("test_two_stage_cnn", None)
        stages._TABLES.pop("test_two_stage_cnn", None)


def test_the_default_width_is_said_where_students_are_documented():
    import inspect

    from kdistill.models import students

    default = inspect.signature(students.mobilenet_v2).parameters["width"].default
    assert (
        f"`width`, default {default})" in students.get.__doc__
        and f"(default {default}:" in students.mobilenet_v2.__doc__
    )
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    assert f"width={default} by default" in readme  # beside the README's students.get, whose results use 0.35
