"""The teacher's BatchNormalizations folded into its convolutions: same outputs, shared weights, nothing saved differently."""

import keras
import numpy as np
import pytest

import kdistill
from kdistill.models import folding
from conftest import images, small_cnn


def _teacher():
    """Every case: conv(+bias) -> BN, depthwise -> BN without scale/center, conv -> relu -> BN, a conv read twice, Dense -> BN."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)  # folded, conv has a bias
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same", use_bias=False, name="dw_b")(x)
    x = keras.layers.BatchNormalization(scale=False, center=False, name="bn_b")(x)  # folded, no gamma/beta
    x = keras.layers.Conv2D(8, 1, activation="relu", name="conv_c")(x)
    x = keras.layers.BatchNormalization(name="bn_c")(x)  # not folded: the conv has an activation
    twice = keras.layers.Conv2D(8, 1, use_bias=False, name="conv_d")(x)
    # not folded: conv read twice
    x = keras.layers.Add(name="add_d")([keras.layers.BatchNormalization(name="bn_d")(twice), twice])
    x = keras.layers.Dense(10, name="dense_e")(keras.layers.GlobalAveragePooling2D(name="pool")(x))
    # not folded: after a Dense
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn_e")(x), name="teacher")
    for layer in model.layers:  # statistics far from the identity, so that a wrong fold shows
        if isinstance(layer, keras.layers.BatchNormalization):
            for weight in layer.weights:
                low, high = (0.5, 2.0) if "variance" in weight.path or "gamma" in weight.path else (-0.5, 0.5)
                weight.assign(rng.uniform(low, high, weight.shape))
        elif getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.uniform(-0.5, 0.5, layer.bias.shape))
    return model


def test_folding_keeps_outputs_shares_weights_and_follows_later_weight_changes():
    teacher = _teacher()
    assert folding.foldable_pairs(teacher) == {"bn_a": "conv_a", "bn_b": "dw_b"}
    folded = folding.fold_batch_norm(teacher)
    x = np.random.default_rng(1).normal(size=(4, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(folded(x), teacher(x, training=False), rtol=1e-5, atol=1e-5)
    assert [type(folded.get_layer(n)).__name__ for n in ("conv_a", "bn_a", "dw_b", "bn_b", "bn_c")] == [
        "FoldedConvView",
        "FoldedAway",
        "FoldedConvView",
        "FoldedAway",
        "BatchNormalization",
    ]
    assert folded.get_layer("dense_e") is teacher.get_layer("dense_e")  # shared, not copied
    # Folding pays only where the batch's output positions outnumber the kernel's inputs per output channel (3x3x3 = 27
    # here):
    layer = folded.get_layer("conv_a")
    # None: 32 images assumed
    assert layer.pays((4, 16, 16, 3)) and not layer.pays((1, 2, 2, 3)) and layer.pays((None, 8, 8, 3))
    small = np.random.default_rng(2).normal(size=(1, 2, 2, 3)).astype("float32")
    np.testing.assert_allclose(
        layer(small),
        teacher.get_layer("bn_a")(teacher.get_layer("conv_a")(small), training=False),
        rtol=1e-5,
        atol=1e-5,
    )
    # No copy of the weights: a change to the teacher is seen at once.
    teacher.get_layer("bn_b").moving_variance.assign(np.full((16,), 4.0, "float32"))
    teacher.get_layer("conv_a").kernel.assign(teacher.get_layer("conv_a").kernel * 2.0)
    np.testing.assert_allclose(folded(x), teacher(x, training=False), rtol=1e-5, atol=1e-5)
    plain = small_cnn("plain", batch_norm=False)
    assert folding.fold_batch_norm(plain) is plain  # nothing to fold: the model itself


@pytest.mark.eager
def test_distiller_folds_the_teacher_by_default_with_the_same_outputs_weights_and_saved_file(tmp_path):
    teacher = small_cnn("teacher", seed=1)
    student = small_cnn("student", widths=(4, 8), seed=2)
    for layer in teacher.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(np.linspace(0.5, 2.0, layer.moving_variance.shape[0]).astype("float32"))
    bn = next(layer.name for layer in teacher.layers if isinstance(layer, keras.layers.BatchNormalization))
    taps = {"teacher_stage2": "student_stage2", bn: "student_stage1"}
    assert folding.foldable_pairs(teacher)  # something to fold, a tap on a folded BatchNormalization among the taps
    folded = kdistill.FeatureDistiller(teacher, student, taps=taps)
    plain = kdistill.FeatureDistiller(teacher, student, taps=taps, fold_batch_norm=False)
    x = images(4)
    a, b = folded.teacher_outputs(x), plain.teacher_outputs(x)
    for name in b:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5)
    assert len(folded.weights) == len(plain.weights) and folded.get_config()["fold_batch_norm"] is True
    folded.compile(optimizer="adam")
    folded.fit(x, np.arange(4), epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")
    folded.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.fold_batch_norm is True
    for name, value in folded.teacher_outputs(x).items():
        np.testing.assert_array_equal(loaded.teacher_outputs(x)[name], value)
    plain.save(str(tmp_path / "plain.keras"))  # the folded view is not saved: both files hold the same entries
    import zipfile

    entries = lambda p: sorted(zipfile.ZipFile(p).namelist())  # noqa: E731
    assert entries(path) == entries(str(tmp_path / "plain.keras"))
