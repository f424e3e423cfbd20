"""Quantization-aware distillation: the fake-quantized student computes what its int8 TFLite file computes."""

import os

import keras
import numpy as np
import pytest

import kdistill
from kdistill import export, quantize

#: 2,000 training and 1,000 test images of the real Fashion-MNIST, shipped with the tests
REAL_SAMPLE = os.path.join(os.path.dirname(__file__), "data", "fashion-mnist-sample")
#: MobileNetV2 (width 0.35) trained 4 epochs on the sample's 1,800 training images (tools/make_test_models.py)
TRAINED_MOBILENET = os.path.join(os.path.dirname(__file__), "data", "mobilenet_v2_035_fashion_mnist_sample.keras")


def _images(dataset, count):
    return np.concatenate([np.asarray(x) for x, _ in dataset])[:count]


def _logits(model, images):
    """One eager call: cheaper here than tracing `predict` for each model."""
    return keras.ops.convert_to_numpy(model(images, training=False))


@pytest.mark.slow
def test_quantization_aware_distillation_end_to_end_on_real_images(tmp_path):
    """One test (not three sharing a fixture), so that the twin is made and fine-tuned once under pytest-xdist."""
    splits = kdistill.data.load("fashion_mnist", data_dir=REAL_SAMPLE, batch_size=32, validation_fraction=0.1)
    keras.utils.set_random_seed(0)
    student = keras.saving.load_model(TRAINED_MOBILENET)  # a float student trained 4 epochs on these images

    # The twin: BatchNormalization folded, one unit per convolution, named after the last layer it absorbed.
    twin = quantize.quantize_model(student, calibration_images=_images(splits.train, 256))
    kinds = {type(layer).__name__ for layer in twin.layers}
    assert "BatchNormalization" not in kinds and "QuantizedFoldedConv" in kinds and "QuantizedRescaling" in kinds
    assert sum(isinstance(layer, quantize.QuantizedFoldedConv) for layer in twin.layers) == sum(
        type(layer).__name__ in ("Conv2D", "DepthwiseConv2D") for layer in student.layers
    )
    assert twin.get_layer("block_6_expand_relu").activation == "relu6"
    images = _images(splits.test, 1000)
    float_logits, twin_logits = _logits(student, images), _logits(twin, images)
    # it starts where the float student ended: int8 rounding only
    assert (float_logits.argmax(-1) == twin_logits.argmax(-1)).mean() >= 0.9
    assert 0 < np.abs(float_logits - twin_logits).max() < 0.5 * np.abs(float_logits).max()

    # Fine-tuned with the float student as its teacher, then biases snapped to TFLite's int32 grid.
    distiller = kdistill.FeatureDistiller(student, twin, taps={"block_6_expand_relu": "block_6_expand_relu"}, alpha=0.5)
    # (4 steps, run eagerly: a few steps cost less than tracing the fake-quantized twin's training step)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-4), run_eagerly=True)
    distiller.fit(splits.train, epochs=1, steps_per_epoch=4, verbose=0)
    assert quantize.snap_biases(twin) == 53  # 52 convolutions and the classifier

    # Its int8 file, with no representative images: the trained ranges, full-integer, same top-1.
    path = export.tflite(twin, str(tmp_path / "twin_int8.tflite"), quantize="int8", int8_io=True)
    keras_logits = _logits(twin, images)
    agreement = (export.tflite_predict(path, images).argmax(-1) == keras_logits.argmax(-1)).mean()
    assert agreement >= 0.99, agreement  # (snap_biases above put the biases on TFLite's int32 grid)
    from kdistill.export import tflite_runtime

    interpreter = tflite_runtime.interpreter_class()(model_path=path)
    interpreter.allocate_tensors()
    details = interpreter.get_tensor_details()
    floats = [d["name"] for d in details if d["dtype"] == np.float32]
    assert not floats, f"full-integer expected, float tensors: {floats}"
    output = interpreter.get_output_details()[0]
    low, high = twin.layers[-1].output_quantizer.range()
    assert output["dtype"] == np.int8 and output["quantization"][0] == pytest.approx((high - low) / 255, rel=1e-3)
    low, high = twin.get_layer("Conv1_relu").output_quantizer.range()
    scales = {d["quantization"][0] for d in details if "Conv1_relu" in d["name"] and d["quantization"][0] > 0}
    assert any(scale == pytest.approx((high - low) / 255, rel=1e-3) for scale in scales), (scales, low, high)

    # Saved and loaded; float modes refused; a float model is not taken for a quantized one.
    saved = str(tmp_path / "twin.keras")
    twin.save(saved)
    np.testing.assert_allclose(_logits(keras.saving.load_model(saved), images[:64]), keras_logits[:64], atol=1e-5)
    with pytest.raises(ValueError, match="converts to int8 only"):
        export.tflite(twin, str(tmp_path / "twin_f32.tflite"), quantize="float32")
    with pytest.raises(ValueError, match="float model, not a quantization-aware one"):
        export.tflite(student, str(tmp_path / "float.tflite"), quantize="int8", calibration="trained")
    with pytest.raises(ValueError, match="already quantization-aware"):
        quantize.quantize_model(twin)


def test_layers_it_cannot_quantize_are_all_listed_with_what_to_do():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="swish", name="conv_swish")(inputs)
    x = keras.layers.Multiply(name="gate")([x, x])
    x = keras.layers.LayerNormalization(name="norm")(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ValueError) as error:
        quantize.quantize_model(keras.Model(inputs, outputs))
    message = str(error.value)
    for name in ("conv_swish (Conv2D: activation silu)", "gate (Multiply", "norm (LayerNormalization"):
        assert name in message
    assert "supports Conv2D" in message and "post-training calibration" in message


def test_a_built_sequential_model_quantizes_and_a_subclassed_one_is_refused():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    twin = quantize.quantize_model(model)
    assert [type(layer).__name__ for layer in twin.layers[1:]] == [
        "ActivationQuantizer",
        "QuantizedFoldedConv",
        "QuantizedOutput",
        "QuantizedDense",
    ]

    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    with pytest.raises(ValueError, match="needs a functional Keras model"):
        quantize.quantize_model(Subclassed())


def test_a_twin_saved_under_the_old_layer_name_still_loads(tmp_path):
    """0.2 saved QuantizedFoldedConv as "kdistill>FoldedConv" (the demo's student_int8_qat.keras): such files still load."""
    import zipfile

    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    twin = quantize.quantize_model(model)
    twin.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as new, zipfile.ZipFile(tmp_path / "old.keras", "w") as old:
        for item in new.infolist():
            content = new.read(item.filename)
            if item.filename == "config.json":
                assert b'"kdistill>QuantizedFoldedConv"' in content
                content = content.replace(b'"kdistill>QuantizedFoldedConv"', b'"kdistill>FoldedConv"').replace(
                    b'"QuantizedFoldedConv"', b'"FoldedConv"'
                )
            old.writestr(item, content)
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in twin.layers]
    images = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), twin.predict(images, verbose=0), atol=1e-6)


def test_resnet_blocks_quantize_too_with_relu_after_add():
    student = kdistill.students.get("resnet8x4", num_classes=10)
    twin = quantize.quantize_model(student)
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    quantize.calibrate(twin, images)
    assert not [layer.name for layer in twin.layers if type(layer).__name__ in ("BatchNormalization", "Conv2D", "Add")]
    assert twin(images).shape == (8, 10)


@pytest.mark.eager
def test_mixed_precision_fine_tunes_the_twin():
    student = kdistill.students.get("resnet8x4", num_classes=10)
    images = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    labels = np.arange(16) % 10
    from kdistill.run import precision

    with precision.policy_scope("mixed_bfloat16"):
        twin = quantize.quantize_model(student)
        twin.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = twin.fit(images, labels, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    units = [layer for layer in twin.layers if isinstance(layer, quantize.QuantizedFoldedConv)]
    assert (
        units[0].compute_dtype == "bfloat16"
        and units[0].kernel.dtype == "float32"
        and units[0].output_quantizer.range_min.dtype == "float32"
    )
    ranges = [unit.output_quantizer.range() for unit in units]
    # (a random network's later activations may vanish, so only the first range is surely wider than a point)
    assert all(low <= 0 <= high for low, high in ranges) and ranges[0][1] > ranges[0][0] > -1
    assert all(float(unit.output_quantizer.tracked) == 1.0 for unit in units)
