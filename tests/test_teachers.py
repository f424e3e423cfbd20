import os
import time

import keras
import numpy as np
import pytest

import kdistill
from harness import run_config_round_trip, run_model_saving
from kdistill.models import cifar_resnets, stages


def test_resnet50_teacher_outputs_logits_and_has_stage_layers(resnet50_teacher):
    assert resnet50_teacher.output.shape == (None, 10)
    assert resnet50_teacher.layers[-1].activation is keras.activations.linear
    for name in ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"):
        resnet50_teacher.get_layer(name)


def test_imagenet_weights_fail_fast_offline_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        kdistill.teachers.resnet50(num_classes=10, weights="imagenet")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path) in message and "--weights" in message


def test_imagenet_weights_load_from_the_keras_cache(tmp_path, monkeypatch):
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    reference = backbone.get_layer("conv4_block6_3_conv").get_weights()[0]
    path = kdistill.teachers.imagenet_cache_path("resnet50")
    os.makedirs(os.path.dirname(path))
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, backbone)
    teacher = kdistill.teachers.resnet50(num_classes=7, input_shape=(32, 32, 3), weights="imagenet")
    np.testing.assert_array_equal(teacher.get_layer("conv4_block6_3_conv").get_weights()[0], reference)
    assert teacher.output.shape == (None, 7)


@pytest.mark.eager
def test_teacher_from_a_saved_file_and_clear_errors_for_bad_files(tmp_path, resnet50_teacher):
    path = str(tmp_path / "teacher.keras")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    run_model_saving(
        resnet50_teacher,
        path,
        x,
        load=lambda saved: kdistill.teachers.resnet50(num_classes=10, weights=saved),
        atol=1e-5,
    )

    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(open(path, "rb").read()[:5000])
    with pytest.raises(ValueError, match="truncated.keras. is truncated: .* Copy or save the model again"):
        kdistill.teachers.load(str(truncated))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kdistill.teachers.resnet50(num_classes=10, weights=str(tmp_path / "missing.keras"))


def test_unknown_teacher_name_lists_known():
    with pytest.raises(ValueError, match="Did you mean .*'resnet50'"):
        kdistill.teachers.get("resnet5", num_classes=10)


def test_teacher_preprocessing_layer_equals_keras_resnet50_preprocess_input(resnet50_teacher):
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    ours = resnet50_teacher.get_layer("preprocessing")(x)
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), expected, rtol=1e-5, atol=1e-4)


def test_student_preprocessing_maps_pixels_to_minus_one_one():
    student = kdistill.students.get("mobilenet_v2", num_classes=10)
    x = np.array([[[[0.0, 127.5, 255.0]]]], "float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(student.get_layer("preprocessing")(x)), [[[[-1.0, 0.0, 1.0]]]], atol=1e-6
    )


def test_teacher_can_upsample_its_input_inside():
    teacher = kdistill.teachers.get("resnet50", num_classes=10, input_shape=(32, 32, 3), resize_to=64)
    assert teacher.input_shape == (None, 32, 32, 3)
    assert teacher.get_layer("conv4_block6_out").output.shape == (None, 4, 4, 1024)  # 2x2 at 32x32
    with pytest.raises(ValueError, match="resize_to must be an image size of at least 32"):
        kdistill.teachers.get("resnet50", num_classes=10, resize_to=16)


class _Scripted(keras.callbacks.Callback):
    """Reports scripted validation accuracies, snapshots the weights, and scrambles them in the last epoch (a collapse)."""

    def __init__(self, accuracies):
        super().__init__()
        self.accuracies, self.snapshots = accuracies, []

    def on_epoch_end(self, epoch, logs=None):
        if epoch == len(self.accuracies) - 1:
            for variable in self.model.trainable_weights:
                variable.assign(keras.ops.ones_like(variable) * 50.0)
        self.snapshots.append([w.copy() for w in self.model.get_weights()])
        logs["val_accuracy"] = self.accuracies[epoch]


def test_keep_best_epoch_restores_the_best_weights_and_refuses_chance_level(caplog):
    from kdistill.run import callbacks
    from conftest import small_cnn

    model = small_cnn("m", widths=(4, 8))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = np.arange(16) % 2
    script, keep = _Scripted([0.6, 0.8, 0.1]), callbacks.KeepBestEpoch()
    with caplog.at_level("WARNING", logger="kdistill"):
        model.fit(x, y, validation_data=(x, y), epochs=3, verbose=0, callbacks=[script, keep])
    assert keep.best_epoch == 1 and "fell 70.0 points below" in caplog.text
    for restored, best in zip(model.get_weights(), script.snapshots[1]):
        np.testing.assert_array_equal(restored, best)
    chance = callbacks.KeepBestEpoch(chance_level=0.5)
    with pytest.raises(callbacks.ChanceLevelError, match="no better than chance"):
        model.fit(x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[_Scripted([0.5, 0.52]), chance])


@pytest.mark.parametrize("name", kdistill.teachers.available())
def test_every_registered_teacher_outputs_logits_has_its_stages_and_rebuilds_from_its_config(name):
    """Driven by the registry: a newly registered teacher is checked without new test code."""
    teacher = kdistill.teachers.get(name, num_classes=7, input_shape=(32, 32, 3))
    assert teacher.name == name and teacher.output.shape == (None, 7)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(teacher(x, training=False))
    assert out.shape == (2, 7) and np.isfinite(out).all()
    assert {layer.momentum for layer in teacher.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}
    # the stage table sits with the builder and is found by the model's registered name, not by its layer names
    table = kdistill.taps.stage_table(name)
    assert stages.by_name(teacher) == table and kdistill.taps.stage_table(teacher) == table
    sides = [teacher.get_layer(layer).output.shape[1] for layer, _ in table]
    assert sides == [max(1, 32 // stride) for _, stride in table]
    assert kdistill.taps.preset(teacher, "mobilenet_v2") == kdistill.taps.preset(name, "mobilenet_v2")
    rebuilt = run_config_round_trip(teacher)
    assert rebuilt.name == name and [layer.name for layer in rebuilt.layers] == [layer.name for layer in teacher.layers]


def test_cifar_resnet_teachers_have_their_blocks():
    for name, blocks in {"resnet20": 3, "resnet32": 5, "resnet56": 9}.items():
        teacher = kdistill.teachers.get(name, num_classes=7, input_shape=(32, 32, 3))
        assert len([layer for layer in teacher.layers if layer.name.endswith("_add")]) == 3 * blocks
        assert [teacher.get_layer(layer).output.shape for layer, _ in cifar_resnets.STAGES] == [
            (None, 32, 32, 16),
            (None, 16, 16, 32),
            (None, 8, 8, 64),
        ]


def test_a_saved_teacher_keeps_its_registered_name_and_so_its_stages(tmp_path):
    teacher = kdistill.teachers.get("resnet20", num_classes=10, input_shape=(32, 32, 3))
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    loaded = run_model_saving(teacher, str(tmp_path / "teacher.keras"), x, load=kdistill.teachers.load)
    assert loaded.name == "resnet20" and stages.by_name(loaded) == cifar_resnets.STAGES
    renamed = kdistill.teachers.load(str(tmp_path / "teacher.keras"))
    renamed.name = (
        "teacher_b"  # an ensemble member named after its file: the layer names are the documented last resort
    )
    assert stages.by_name(renamed) is None and kdistill.taps.family(renamed) in (
        "resnet8x4",
        "resnet20",
        "resnet32",
        "resnet56",
    )
    assert kdistill.taps.preset(renamed, "mobilenet_v2") == kdistill.taps.preset("resnet20", "mobilenet_v2")


def test_a_registered_teacher_is_built_by_name_and_gets_a_tap_preset():
    @kdistill.teachers.register(
        "test_tiny_teacher", stages=[("tiny_stage1", 2), ("tiny_stage2", 4), ("tiny_stage3", 8)]
    )
    def tiny_teacher(num_classes, input_shape, weights=None, include_preprocessing=True, resize_to=None):
        inputs = keras.Input(input_shape)
        x = inputs
        for stage in (1, 2, 3):
            x = keras.layers.Conv2D(
                4 * stage, 3, strides=2, padding="same", activation="relu", name=f"tiny_stage{stage}"
            )(x)
        return keras.Model(
            inputs, keras.layers.Dense(num_classes)(keras.layers.GlobalAveragePooling2D()(x)), name="test_tiny_teacher"
        )

    try:
        assert "test_tiny_teacher" in kdistill.teachers.available()
        teacher = kdistill.teachers.get("test_tiny_teacher", num_classes=10)
        student = kdistill.students.get("resnet8x4", num_classes=10)
        assert kdistill.taps.preset(teacher, student) == {"tiny_stage2": "stage2_out", "tiny_stage3": "stage3_out"}
        with pytest.raises(ValueError, match="must grow"):
            kdistill.teachers.register("test_bad_teacher", tiny_teacher, stages=[("deep", 8), ("shallow", 2)])
        assert "test_bad_teacher" not in kdistill.teachers.available()
    finally:
        kdistill.teachers._REGISTRY.pop("test_tiny_teacher", None)
        stages._TABLES.pop("test_tiny_teacher", None)


def test_cifar_teacher_upsamples_loads_weights_and_refuses_imagenet(tmp_path):
    teacher = kdistill.teachers.get("resnet20", num_classes=10, resize_to=48)
    assert teacher.layers[1].name == "upsample" and teacher.get_layer("stage3_out").output.shape == (None, 12, 12, 64)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    weights = str(tmp_path / "teacher.weights.h5")
    teacher.save_weights(weights)
    again = kdistill.teachers.get("resnet20", num_classes=10, resize_to=48, weights=weights)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(x)), keras.ops.convert_to_numpy(teacher(x)), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="do not fit the teacher 'resnet56'"):
        kdistill.teachers.get("resnet56", num_classes=10, weights=weights)
    with pytest.raises(
        ValueError, match=r"no ImageNet weights for the CIFAR ResNet 'resnet20'.*train-teacher --name resnet20"
    ):
        kdistill.teachers.get("resnet20", num_classes=10, weights="imagenet")
    without = kdistill.teachers.get("resnet20", num_classes=10, include_preprocessing=False)
    assert "preprocessing" not in [layer.name for layer in without.layers]
    with pytest.raises(ValueError, match="Did you mean .*'resnet20'.*Known: .*resnet56"):
        kdistill.teachers.get("resnet21", num_classes=10)


def test_resnet50_takes_the_arguments_the_docs_give_it(monkeypatch):
    """docs/python-api.md documents resnet50(..., resize_to=None); it raised TypeError (only teachers.get took it)."""
    received = {}
    monkeypatch.setattr(kdistill.teachers, "get", lambda *args: received.setdefault("args", args))
    kdistill.teachers.resnet50(
        num_classes=10, input_shape=(32, 32, 3), weights=None, resize_to=64, batch_norm_momentum=None
    )
    assert received["args"] == ("resnet50", 10, (32, 32, 3), None, True, None, 64)
