"""Small segmenters (kdistill.models.segmenters), parametrised over the registry, and an end-to-end distillation on offline scenes."""

import keras
import numpy as np
import pytest

import kdistill
from kdistill.data.scenes import SCENE_CLASSES, make_scenes
from kdistill.models import segmenters, taps
from kdistill.segmentation_metrics import evaluate_segmenter
from conftest import REAL_SAMPLE

SMALL = {
    "conv_segmenter": {"widths": (8, 16, 32), "decoder_channels": 16},
    "mobilenet_v2_segmenter": {"decoder_channels": 16},
    "deeplab_v3": {
        "stackwise_num_filters": (64, 64),
        "stackwise_num_blocks": (1, 1),
        "dilation_rates": (2,),
        "projection_filters": 8,
    },
}


@pytest.mark.parametrize("name", segmenters.available())
def test_every_segmenter_returns_logits_at_the_input_size_with_its_stages_at_their_strides(name):
    model = segmenters.get(name, num_classes=5, input_shape=(32, 32, 3), **SMALL.get(name, {}))
    assert model.name == name and tuple(model.output.shape) == (None, 32, 32, 5)
    assert taps.family(model) == name
    for layer, stride in taps.stage_table(model):
        assert tuple(model.get_layer(layer).output.shape[1:3]) == (32 // stride, 32 // stride), (layer, stride)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(rebuilt(images)), np.asarray(model(images)), atol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: segmenters.get("mobilenet_v2_segmentr", 3), "Did you mean 'mobilenet_v2_segmenter'"),
        (lambda: segmenters.get("conv_segmenter", 1), "num_classes must be an integer >= 2"),
        (lambda: segmenters.get("mobilenet_v2_segmenter", 3, input_shape=(40, 40, 3)), "divisible by 16"),
    ],
)
def test_bad_requests_are_refused_with_the_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.eager  # two steps: tracing MobileNetV2's train step would cost more than running them eagerly
def test_a_mobilenet_segmenter_distils_from_a_conv_teacher_on_offline_scenes_and_is_evaluated():
    (items, labels), _ = kdistill.data.load_fashion_mnist(REAL_SAMPLE)
    scenes = make_scenes(items[:100], labels[:100], count=8, size=32, max_items=2, seed=0)
    classes = len(SCENE_CLASSES)
    teacher = segmenters.get("conv_segmenter", classes, (32, 32, 3), **SMALL["conv_segmenter"])
    student = segmenters.get("mobilenet_v2_segmenter", classes, (32, 32, 3), **SMALL["mobilenet_v2_segmenter"])
    distiller = kdistill.FeatureDistiller(
        teacher,
        student,
        taps={"conv_segmenter_stage2": "block_3_expand_relu"},
        logits_loss={"name": "cwd", "temperature": 1.0},
        logits_weight=3.0,
        alpha=0.5,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    before = [np.array(w) for w in student.weights]
    history = distiller.fit(scenes.images, scenes.masks, batch_size=4, epochs=1, verbose=0).history  # 2 steps
    assert all(np.isfinite(values).all() for values in history.values())
    assert set(history) >= {"ce_loss", "kd_loss", "feat_conv_segmenter_stage2", "accuracy"}
    assert any(not np.array_equal(b, np.array(w)) for b, w in zip(before, student.weights))
    report = evaluate_segmenter(distiller, scenes.images, scenes.masks, SCENE_CLASSES)
    assert (
        0.0 <= report["mean_iou"] <= 1.0
        and report["pixels"] == 8 * 32 * 32
        and list(report["per_class_iou"]) == SCENE_CLASSES
    )
    # the registered stages give a tap preset, and tap suggestion scores segmenters' stages like classifiers'
    assert taps.preset(teacher, student) == {
        "conv_segmenter_stage2": "block_6_expand_relu",
        "conv_segmenter_stage3": "block_13_expand_relu",
    }
    suggestion = kdistill.tap_suggest.suggest(teacher, student, scenes.images)
    assert (
        suggestion.pairs == taps.preset(teacher, student)
        and suggestion.cka.shape == (3, 3)
        and np.isfinite(suggestion.cka).all()
    )


@pytest.mark.eager  # two steps
def test_a_kerashub_deeplab_v3_teacher_built_offline_is_tapped_at_a_pyramid_level_by_layer_name():
    classes = len(SCENE_CLASSES)
    teacher = segmenters.get("deeplab_v3", classes, (32, 32, 3), **SMALL["deeplab_v3"])
    # P2, P3, carried by the model
    assert [layer for layer, _ in taps.stage_table(teacher)] == [
        "stack0_block0_out",
        "stack1_block0_out",
    ]
    student = segmenters.get("conv_segmenter", classes, (32, 32, 3), **SMALL["conv_segmenter"])
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps={"stack1_block0_out": "conv_segmenter_stage3"}, logits_loss="kl"
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    (items, labels), _ = kdistill.data.load_fashion_mnist(REAL_SAMPLE)
    scenes = make_scenes(items[:50], labels[:50], count=8, size=32, max_items=2, seed=1)
    history = distiller.fit(scenes.images, scenes.masks, batch_size=4, epochs=1, verbose=0).history
    assert all(np.isfinite(values).all() for values in history.values()) and "feat_stack1_block0_out" in history


def save_deeplab_preset(folder, num_classes=5, size=32):
    """A tiny KerasHub DeepLabV3ImageSegmenter (ResNet with 2 stacks, converter to [0, 1]) saved with `save_to_preset`; returns it."""
    import keras_hub

    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(size, size, 3),
    )
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        low_level_feature_key="P2",
        spatial_pyramid_pooling_key="P3",
        upsampling_size=2,
        dilation_rates=[2],
        projection_filters=8,
        image_shape=(size, size, 3),
    )
    preprocessor = keras_hub.models.DeepLabV3ImageSegmenterPreprocessor(
        image_converter=keras_hub.layers.DeepLabV3ImageConverter(scale=1 / 255.0)
    )
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=backbone, num_classes=num_classes, preprocessor=preprocessor
    )
    segmenter.save_to_preset(str(folder))
    return segmenter


def test_a_kerashub_deeplab_v3_preset_folder_loads_with_its_weights_and_its_pyramid_levels_as_stages(tmp_path):
    hub_segmenter = save_deeplab_preset(tmp_path / "deeplab_tiny")
    model = segmenters.get(f"keras_hub:{tmp_path / 'deeplab_tiny'}", None, (32, 32, 3))
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    # the preset's own converter (pixels / 255) is inside the model; KerasHub's segmenter takes converted images
    np.testing.assert_allclose(np.asarray(model(images)), np.asarray(hub_segmenter(images / 255.0)), atol=1e-4)
    assert model.name == "deeplab_tiny" and taps.stage_table(model) == [
        ("stack0_block0_out", 4),
        ("stack1_block0_out", 8),
    ]
    # a tap by layer name in the flat graph
    assert tuple(model.get_layer("stack1_block0_out").output.shape) == (
        None,
        4,
        4,
        16,
    )
    larger = segmenters.get(f"keras_hub:{tmp_path / 'deeplab_tiny'}", 3, (64, 64, 3))  # another size and a new head
    assert tuple(larger.output.shape) == (None, 64, 64, 3)
    with pytest.raises(ValueError, match="not a DeepLabV3Backbone"):
        hub_segmenter.backbone.image_encoder.save_to_preset(str(tmp_path / "resnet"))
        segmenters.get(f"keras_hub:{tmp_path / 'resnet'}", 3, (32, 32, 3))


def test_the_mobilenet_segmenter_moving_statistics_follow_training_within_tens_of_steps():
    model = kdistill.segmenters.get("mobilenet_v2_segmenter", 3, (32, 32, 3))
    momenta = {
        layer.name: layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    }
    # Keras' MobileNetV2 default, 0.999, left every prediction background after 12 epochs of 32x32 scenes
    assert momenta["bn_Conv1"] == 0.9 and 0.999 not in momenta.values()
    teacher = kdistill.segmenters.get("conv_segmenter", 3, (32, 32, 3))
    assert teacher.get_layer("conv_segmenter_stage1_bn1").momentum == 0.9
