"""KerasHub models as teachers and students: tiny ResNet, MobileNet and EfficientNet built from configs (no weights), saved as local presets."""

import os
import shutil
import sys
import time
import types

import keras
import keras_hub
import numpy as np
import pytest

import kdistill
from kdistill import cli, export
from kdistill.models import hub, hub_presets, saving, taps
from kdistill.run import jobs, training
from kdistill.run.config import DistillConfig

from conftest import REAL_SAMPLE, real_images

#: one pytest-xdist worker runs this file (its module fixtures save three presets and distil one: once, not once per
#: worker)
pytestmark = pytest.mark.xdist_group("hub")


def _resnet_classifier():
    """A ResNet with 3 stacks (P2-P4) and an ImageClassifier head whose converter scales pixels to [0, 1]."""
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16, 16],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        use_pre_activation=False,
    )
    converter = keras_hub.layers.ResNetImageConverter(scale=1 / 255.0)
    preprocessor = keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter)
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=10, preprocessor=preprocessor)


def _mobilenet_backbone():
    """KerasHub's MobileNet has no pyramid_outputs: its stages come from the resolutions of its layers."""
    return keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[16, 24], [32, 32]],
        stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[8, 8], [16, 16]],
        stackwise_kernel_size=[[3, 3], [3, 3]],
        stackwise_num_strides=[[2, 1], [2, 1]],
        stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [1, 1]],
        output_num_filters=32,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=32,
        input_num_filters=8,
    )


def _efficientnet_backbone():
    # num_features stays at its default: KerasHub 0.32's get_config leaves it out, so another value does not survive a
    # preset
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * 4,
        stackwise_depth_coefficients=[1.0] * 4,
        stackwise_kernel_sizes=[3] * 4,
        stackwise_num_repeats=[1] * 4,
        stackwise_input_filters=[8, 8, 16, 16],
        stackwise_output_filters=[8, 16, 16, 16],
        stackwise_expansion_ratios=[1, 2, 2, 2],
        stackwise_squeeze_and_excite_ratios=[0.25] * 4,
        stackwise_strides=[1, 2, 2, 2],
        stackwise_block_types=["v1"] * 4,
        stackwise_force_input_filters=[0] * 4,
        stackwise_nores_option=[False] * 4,
    )


@pytest.fixture(scope="session")
def presets(tmp_path_factory):
    """Local preset folders (save_to_preset): a ResNet classifier, a MobileNet and an EfficientNet backbone."""
    root = tmp_path_factory.mktemp("presets")
    keras.utils.set_random_seed(0)
    folders = {
        "resnet": str(root / "resnet_tiny"),
        "mobilenet": str(root / "mobilenet_tiny"),
        "efficientnet": str(root / "efficientnet_tiny"),
    }
    _resnet_classifier().save_to_preset(folders["resnet"])
    _mobilenet_backbone().save_to_preset(folders["mobilenet"])
    _efficientnet_backbone().save_to_preset(folders["efficientnet"])
    return folders


@pytest.fixture(scope="session")
def distilled(presets):
    """A 64x64 ResNet classifier preset distilled into a 32x32 MobileNet preset for 2 epochs on 64 real images."""
    keras.utils.set_random_seed(0)
    teacher = kdistill.teachers.get(f"keras_hub:{presets['resnet']}", num_classes=10, input_shape=(64, 64, 3))
    student = kdistill.students.get(f"keras_hub:{presets['mobilenet']}", num_classes=10, input_shape=(32, 32, 3))
    before = [np.array(w) for w in teacher.get_weights()]
    distiller = kdistill.FeatureDistiller(teacher, student, taps=taps.preset(teacher, student))
    distiller.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    images, labels = real_images(64, size=64)
    history = distiller.fit(images, labels, batch_size=16, epochs=2, verbose=0, shuffle=False).history
    return teacher, distiller, history, before


def test_a_preset_name_offline_fails_at_once_naming_the_cache_folder(presets, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    folder = hub_presets.cache_folder("resnet_18_imagenet")
    assert folder == str(tmp_path / "cache" / "models" / "keras" / "resnetv1" / "keras" / "resnet_18_imagenet" / "3")
    start = time.perf_counter()
    for get in (kdistill.teachers.get, kdistill.students.get):
        with pytest.raises(ValueError) as info:
            get("keras_hub:resnet_18_imagenet", num_classes=10, input_shape=(32, 32, 3))
        message = str(info.value)
        assert (
            folder in message
            and "KDISTILL_OFFLINE" in message
            and "save_to_preset" in message
            and "keras_hub:/path/to/" in message
        )
    assert time.perf_counter() - start < 5
    with pytest.raises(ValueError, match="Unknown KerasHub preset 'no_such_preset'"):
        kdistill.students.get("keras_hub:no_such_preset", num_classes=10)
    # the same name loads offline once the preset is in the cache folder
    shutil.copytree(presets["resnet"], folder)
    model = kdistill.teachers.get("keras_hub:resnet_18_imagenet", num_classes=10, input_shape=(32, 32, 3))
    assert model.name == "resnet_18_imagenet" and model.output.shape == (None, 10)


@pytest.mark.eager
def test_models_take_pixels_and_return_logits_and_keep_the_classifiers_own_head_and_preprocessing(presets):
    classifier = keras_hub.models.ImageClassifier.from_preset(presets["resnet"])
    teacher = kdistill.teachers.get(
        f"keras_hub:{presets['resnet']}", num_classes=10, input_shape=(32, 32, 3), batch_norm_momentum=None
    )
    assert [layer.name for layer in teacher.layers] == [
        "image",
        "preprocessing",
        "backbone",
        "pooler",
        "output_dropout",
        "predictions",
    ]
    # the preset's converter, inside the model
    assert teacher.get_layer("preprocessing").get_config()["scale"] == pytest.approx(1 / 255.0)
    images = real_images(4)[0]
    # its predict runs its preprocessor
    np.testing.assert_allclose(teacher.predict(images, verbose=0), classifier.predict(images, verbose=0), atol=1e-5)
    student = kdistill.students.get(f"keras_hub:{presets['efficientnet']}", num_classes=7, input_shape=(48, 48, 3))
    assert student.input_shape == (None, 48, 48, 3) and student.output.shape == (None, 7)
    assert student.get_layer("predictions").activation.__name__ == "linear"
    with pytest.raises(ValueError, match="backbone preset without a classifier"):
        kdistill.teachers.load(f"keras_hub:{presets['mobilenet']}")


def test_taps_come_from_the_backbones_pyramid_outputs(presets, tmp_path, capsys):
    teacher = kdistill.teachers.get(f"keras_hub:{presets['resnet']}", num_classes=10, input_shape=(32, 32, 3))
    student = kdistill.students.get(f"keras_hub:{presets['efficientnet']}", num_classes=10, input_shape=(32, 32, 3))
    backbone = teacher.get_layer("backbone")
    pyramid = {
        int(level[1:]): tensor._keras_history.operation.name for level, tensor in backbone.pyramid_outputs.items()
    }
    assert hub.stage_table(teacher) == [(f"backbone/{pyramid[level]}", 2**level) for level in (2, 3, 4)]
    assert taps.preset(teacher, student) == {
        "backbone/stack1_block0_out": "backbone/block3a_project_bn",
        "backbone/stack2_block0_out": "backbone/top_activation",
    }
    assert taps.stage_outputs(teacher)[0] == ("backbone/stack0_block0_out", (None, 8, 8, 64))
    heatmap = str(tmp_path / "cka.png")
    assert (
        cli.main(
            [
                "taps",
                "suggest",
                "--teacher",
                f"keras_hub:{presets['resnet']}",
                "--student",
                f"keras_hub:{presets['efficientnet']}",
                "--data-dir",
                REAL_SAMPLE,
                "--cka-images",
                "32",
                "--heatmap",
                heatmap,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "backbone/stack1_block0_out" in printed
        and "taps={'backbone/stack1_block0_out': 'backbone/block3a_project_bn'" in printed
    )
    assert os.path.getsize(heatmap) > 0


@pytest.mark.eager
def test_resnet_preset_distils_into_mobilenet_preset_at_another_input_size(distilled):
    teacher, distiller, history, before = distilled
    assert teacher.input_shape == (None, 64, 64, 3) and distiller.student.input_shape == (None, 32, 32, 3)
    assert list(distiller.taps) == ["backbone/stack1_block0_out", "backbone/stack2_block0_out"]
    assert distiller.taps["backbone/stack1_block0_out"] == "backbone/block_1_1"
    assert all(np.array_equal(old, new) for old, new in zip(before, teacher.get_weights()))  # the teacher is untouched
    assert all(np.isfinite(history[key]).all() for key in history)
    assert history["loss"][-1] < history["loss"][0]
    assert {"feat_backbone/stack1_block0_out", "feat_backbone/stack2_block0_out", "kd_loss", "ce_loss"} <= set(history)


@pytest.mark.eager
def test_keras_hub_student_saves_loads_and_exports_to_saved_model_and_int8_tflite(distilled, tmp_path):
    student = distilled[1].student
    path = saving.save_for_inference(student, str(tmp_path / "student.keras"))
    loaded = saving.load_model(path, role="student")
    assert type(loaded.get_layer("backbone")).__name__ == "MobileNetBackbone" and hub.stage_table(
        loaded
    ) == hub.stage_table(student)
    images = real_images(32)[0]
    logits = student.predict(images, verbose=0)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), logits, atol=1e-5)
    import tensorflow as tf

    version_dir = export.saved_model(student, str(tmp_path / "serving"))
    served = (
        tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(images))["logits"].numpy()
    )
    np.testing.assert_allclose(served, logits, atol=1e-4)
    int8 = export.tflite(
        student,
        str(tmp_path / "student_int8.tflite"),
        quantize="int8",
        representative=[images[i : i + 1] for i in range(32)],
    )
    int8_logits = export.tflite_predict(int8, images)
    assert np.abs(int8_logits - logits).max() < 0.1 * np.abs(logits).max() + 0.05


@pytest.mark.eager
def test_resnet_student_distils_quantization_aware_after_flatten(distilled, presets, tmp_path):
    teacher = distilled[0]
    student = kdistill.students.get(f"keras_hub:{presets['resnet']}", num_classes=10, input_shape=(32, 32, 3))
    assert "a nested model" in " ".join(kdistill.quantize.unsupported_layers(student))
    flat = hub.flatten(student)
    images, labels = real_images(32)
    np.testing.assert_allclose(flat.predict(images, verbose=0), student.predict(images, verbose=0), atol=1e-5)
    twin = kdistill.quantize.quantize_model(flat, calibration_images=images)
    pairs = taps.preset(teacher, twin)
    assert pairs == {
        "backbone/stack1_block0_out": "stack1_block0_out",
        "backbone/stack2_block0_out": "stack2_block0_out",
    }
    distiller = kdistill.FeatureDistiller(teacher, twin, taps=pairs)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    history = distiller.fit(real_images(32, size=64)[0], labels, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all() and kdistill.quantize.is_quantized(distiller.student)
    kdistill.quantize.snap_biases(twin)
    # its trained ranges, no calibration
    int8 = export.tflite(twin, str(tmp_path / "twin_int8.tflite"), quantize="int8")
    logits = twin.predict(images, verbose=0)
    assert np.mean(export.tflite_predict(int8, images).argmax(-1) == logits.argmax(-1)) >= 0.9
    # MobileNet and EfficientNet: KerasHub's block layers, hard-swish and swish have no int8 rewrite
    for name in ("mobilenet", "efficientnet"):
        problems = " ".join(
            kdistill.quantize.unsupported_layers(
                hub.flatten(kdistill.students.get(f"keras_hub:{presets[name]}", num_classes=10))
            )
        )
        assert ("InvertedResidualBlock" if name == "mobilenet" else "silu") in problems


def test_configs_and_the_cli_reach_keras_hub_teachers_and_students(presets):
    """`kdistill distill --teacher keras_hub:... --student keras_hub:...` (or the same in YAML) builds both from the presets."""
    # no teacher file is looked for
    config = DistillConfig.from_dict(
        {
            "teacher": f"keras_hub:{presets['resnet']}",
            "student": f"keras_hub:{presets['efficientnet']}",
            "image_size": 64,
            "student_image_size": 32,
        }
    )
    teacher = jobs.load_teacher(config)
    # the classifier preset's own head
    assert teacher.input_shape == (None, 64, 64, 3) and teacher.output.shape == (
        None,
        10,
    )
    splits = types.SimpleNamespace(image_shape=(64, 64, 3), num_classes=10)
    student = training.build_student(
        config.student, splits, config.student_width, config.seed, image_size=config.student_image_size
    )
    assert (
        student.input_shape == (None, 32, 32, 3)
        and type(student.get_layer("backbone")).__name__ == "EfficientNetBackbone"
    )
    with pytest.raises(ValueError, match="Pretrained weights come with the preset"):
        kdistill.students.get(f"keras_hub:{presets['mobilenet']}", num_classes=10, weights="imagenet")


def test_keras_hub_runs_without_importing_tensorflow_text(presets):
    """keras-hub is installed without its tensorflow-text requirement (which pulls the full tensorflow beside tensorflow-cpu).

    KerasHub tries `import tensorflow_text` when imported and goes on without it; only its text tokenizers need it.
    """
    student = kdistill.students.get(f"keras_hub:{presets['mobilenet']}", num_classes=10, input_shape=(32, 32, 3))
    assert student.predict(real_images(2)[0], verbose=0).shape == (2, 10)
    assert "keras_hub" in sys.modules and "tensorflow_text" not in sys.modules
