"""A teacher cache that survives augmentation: K stored views per image, replayed exactly (Fast Knowledge Distillation)."""

import json
import logging

import keras
import numpy as np
import pytest

from kdistill import cli
from kdistill.data import batches
from kdistill.run import teacher_cache
from conftest import small_cnn
from test_data import make_fashion_mnist


def _pixel_teacher(size=8):
    """A 'teacher' whose logits are the pixels it was shown: the stored outputs record the exact view."""
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, keras.layers.Flatten(name="pixels")(inputs), name="pixel_teacher")


def _images(count=24, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, size, size, 3)).astype("float32"), rng.integers(0, 10, count).astype("int32")


def test_replayed_views_are_the_crops_and_flips_the_teacher_saw_bit_for_bit(tmp_path, caplog, monkeypatch):
    x, y = _images()
    teacher = _pixel_teacher()
    with caplog.at_level(logging.INFO, logger="kdistill"):
        cache = teacher_cache.build(teacher, [], batches.ArrayBatches(x, y, 10), str(tmp_path / "cache"), augment=("crop", "flip"),
                                    views=3, dtype="float32", verbose=0, seed=4)
    assert "MB of outputs per view, 3 views" in caplog.text  # the cost is told before building
    assert cache.views == 3 and cache.outputs["logits"].shape == (24, 3, 192) and cache.view_params.shape == (24, 3, 3)
    params = np.asarray(cache.view_params)
    assert len(np.unique(params[..., :2].reshape(-1, 2), axis=0)) > 3 and set(params[..., 2].ravel()) == {0, 1}  # real crops and flips
    data = cache.dataset(8, shuffle=True, seed=1, pipeline="numpy")  # memory maps, batch by batch (JAX, PyTorch; large caches)
    assert isinstance(data, teacher_cache.ViewBatches)
    for epoch in range(2):
        for inputs, labels in data:
            shown = inputs["images"].reshape(len(labels), -1)
            np.testing.assert_array_equal(shown, inputs["teacher"]["logits"])  # the student gets the very view the teacher saw
        data.on_epoch_end()
    first, second = data.view_choice(0), data.view_choice(1)
    assert first.shape == (24,) and not np.array_equal(first, second)  # a new view per image each epoch
    # tf.data (TensorFlow's "auto"): the same guarantee, the crops made by tf ops inside the pipeline
    data = cache.dataset(8, shuffle=True, seed=1)
    assert not isinstance(data, teacher_cache.ViewBatches)
    passes = []
    for epoch in range(2):
        shown = []
        for inputs, labels in data:
            assert inputs["images"].dtype == "float32"
            np.testing.assert_array_equal(np.reshape(inputs["images"], (len(labels), -1)), inputs["teacher"]["logits"])
            shown.append(np.asarray(inputs["images"]))
        passes.append(np.concatenate(shown))
    assert len(passes[0]) == 24 and not np.array_equal(passes[0], passes[1])  # new views (and order) each pass
    assert batches.set_pass(data, 1)  # a resumed run replays pass 1's order and views
    np.testing.assert_array_equal(np.concatenate([np.asarray(inputs["images"]) for inputs, _ in data]), passes[1])
    subset = [labels for inputs, labels in cache.dataset(4, shuffle=False, indices=np.arange(6))]
    np.testing.assert_array_equal(np.concatenate(subset), y[:6])  # a labelled part only, in order when not shuffled
    monkeypatch.setattr(teacher_cache, "IN_MEMORY_VIEWS_LIMIT", 100)
    with caplog.at_level(logging.INFO, logger="kdistill"):
        assert isinstance(cache.dataset(8), teacher_cache.ViewBatches)  # too big to hold in memory: read from the memory maps
    assert "read from its memory maps batch by batch" in caplog.text
    # views replay the same crop as the NumPy helpers produce: the identity view returns the image itself
    assert np.array_equal(batches.apply_views(x[:1], np.array([[batches.crop_padding(8)] * 2 + [0]])), x[:1])


def test_views_are_refused_for_augmentations_they_cannot_store_and_when_stale(tmp_path):
    x, y = _images()
    teacher = small_cnn("teacher", widths=(4, 8), seed=1, input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match=r"replays crop, flip only; \['mixup'\]"):
        teacher_cache.build(teacher, [], batches.ArrayBatches(x, y, 8), str(tmp_path / "c"), augment=("crop", "mixup"), views=2, verbose=0)
    with pytest.raises(ValueError, match="unless it stores views.*--cache-views"):
        teacher_cache.build(teacher, [], batches.ArrayBatches(x, y, 8), str(tmp_path / "c"), augment=("crop",), verbose=0)
    folder = str(tmp_path / "views")
    teacher_cache.build(teacher, ["teacher_stage2"], batches.ArrayBatches(x, y, 8), folder, augment=("flip",), views=2, verbose=0)
    with pytest.raises(teacher_cache.StaleCacheError, match="other weights"):
        teacher_cache.load(folder, small_cnn("teacher", widths=(4, 8), seed=9, input_shape=(8, 8, 3)))
    with pytest.raises(teacher_cache.StaleCacheError, match="other images or labels"):
        teacher_cache.load(folder, teacher, dataset=batches.ArrayBatches(x[::-1].copy(), y[::-1].copy(), 8))
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".cache-")]  # no staging left behind


@pytest.mark.eager
def test_distill_with_crop_and_flip_from_a_cache_of_views(tmp_path):
    make_fashion_mnist(tmp_path / "data", train=160, test=32)
    teacher = small_cnn("teacher", widths=(8, 16), seed=1)
    teacher.save(tmp_path / "teacher.keras")
    args = ["distill", "--data-dir", str(tmp_path / "data"), "--teacher", str(tmp_path / "teacher.keras"), "--student", "resnet8x4", "--taps", "none",
            "--epochs", "2", "--train-limit", "64", "--batch-size", "32", "--output-dir", str(tmp_path / "run"), "--no-check-teacher",
            "--teacher-cache", str(tmp_path / "cache"), "--augment", "crop,flip"]
    assert cli.main(args) == 2  # augmentation without views is explained
    assert cli.main(args + ["--cache-views", "3"]) == 0
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["views"] == 3 and meta["augment"] == ["crop", "flip"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert cli.main(args + ["--cache-views", "2", "--output-dir", str(tmp_path / "run2")]) == 2  # a cache of 3 views is not one of 2
