"""A teacher cache that survives augmentation: K stored views per image, replayed exactly (Fast Knowledge Distillation)."""

import json
import logging

import keras
import numpy as np
import pytest

from kdistill import cli
from kdistill.data import batches, views
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
        cache = teacher_cache.build(
            teacher,
            [],
            batches.ArrayBatches(x, y, 10),
            str(tmp_path / "cache"),
            augment=("crop", "flip"),
            views=3,
            dtype="float32",
            verbose=0,
            seed=4,
        )
    # the cost is told before building: 8x8x3 float32 logits, [dy, dx, flip] int16
    assert "774 bytes per image per view (logits 768, view 6)" in caplog.text
    assert cache.views == 3 and cache.outputs["logits"].shape == (24, 3, 192) and cache.view_params.shape == (24, 3, 3)
    params = np.asarray(cache.view_params)
    # real crops and flips
    assert len(np.unique(params[..., :2].reshape(-1, 2), axis=0)) > 3 and set(params[..., 2].ravel()) == {
        0,
        1,
    }
    # memory maps, batch by batch (JAX, PyTorch; large caches)
    data = cache.dataset(8, shuffle=True, seed=1, pipeline="numpy")
    assert isinstance(data, teacher_cache.ViewBatches)
    for epoch in range(2):
        for inputs, labels in data:
            shown = inputs["images"].reshape(len(labels), -1)
            # the student gets the very view the teacher saw
            np.testing.assert_array_equal(shown, inputs["teacher"]["logits"])
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
    monkeypatch.setattr(teacher_cache.cache, "IN_MEMORY_VIEWS_LIMIT", 100)
    with caplog.at_level(logging.INFO, logger="kdistill"):
        # too big to hold in memory: read from the memory maps
        assert isinstance(cache.dataset(8), teacher_cache.ViewBatches)
    assert "read from its memory maps batch by batch" in caplog.text
    # views replay the same crop as the NumPy helpers produce: the identity view returns the image itself
    assert np.array_equal(views.apply_views(x[:1], np.array([[views.crop_padding(8)] * 2 + [0]])), x[:1])


def test_views_are_refused_for_augmentations_they_cannot_store_and_when_stale(tmp_path):
    x, y = _images()
    teacher = small_cnn("teacher", widths=(4, 8), seed=1, input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match=r"replays crop, flip, mixup, cutmix only; \[.randaugment.\]"):
        teacher_cache.build(
            teacher,
            [],
            batches.ArrayBatches(x, y, 8),
            str(tmp_path / "c"),
            augment=("crop", "randaugment"),
            views=2,
            verbose=0,
        )
    with pytest.raises(ValueError, match="unless it stores views.*--cache-views"):
        teacher_cache.build(
            teacher, [], batches.ArrayBatches(x, y, 8), str(tmp_path / "c"), augment=("crop",), verbose=0
        )
    folder = str(tmp_path / "views")
    teacher_cache.build(
        teacher, ["teacher_stage2"], batches.ArrayBatches(x, y, 8), folder, augment=("flip",), views=2, verbose=0
    )
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
    args = [
        "distill",
        "--data-dir",
        str(tmp_path / "data"),
        "--teacher",
        str(tmp_path / "teacher.keras"),
        "--student",
        "resnet8x4",
        "--taps",
        "none",
        "--epochs",
        "2",
        "--train-limit",
        "64",
        "--batch-size",
        "32",
        "--output-dir",
        str(tmp_path / "run"),
        "--no-check-teacher",
        "--teacher-cache",
        str(tmp_path / "cache"),
        "--augment",
        "crop,flip",
    ]
    assert cli.main(args) == 2  # augmentation without views is explained
    assert cli.main(args + ["--cache-views", "3"]) == 0
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["views"] == 3 and meta["augment"] == ["crop", "flip"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    # a cache of 3 views is not one of 2
    assert cli.main(args + ["--cache-views", "2", "--output-dir", str(tmp_path / "run2")]) == 2


@pytest.mark.parametrize("pipeline", ["numpy", "auto"])
def test_mixed_views_replay_the_image_the_teacher_saw_with_labels_mixed_alike(tmp_path, pipeline):
    x, y = _images()
    y[:4] = -1  # transfer-set images: a view that involves one has no label to mix
    cache = teacher_cache.build(
        _pixel_teacher(),
        [],
        batches.ArrayBatches(x, y, 10),
        str(tmp_path / "cache"),
        augment=("crop", "flip", "mixup", "cutmix"),
        views=4,
        verbose=0,
        seed=2,
    )
    assert cache.mixes is not None and set(np.unique(cache.mixes.kind)) == {1, 2}  # both kinds drawn
    data = cache.dataset(8, seed=5, pipeline=pipeline)
    assert isinstance(data, teacher_cache.ViewBatches)  # mixed views are always rebuilt by NumPy
    for _ in range(2):
        for inputs, labels in data:
            # the pixel teacher's logits are the pixels it saw: the replayed image is that image
            np.testing.assert_allclose(
                np.reshape(inputs["images"], (len(labels), -1)), inputs["teacher"]["logits"], atol=1e-4
            )
            # the logits are 192 pixels
            assert labels.shape == (len(labels), cache.classes) and labels.dtype == np.float32
            labelled = labels.sum(axis=1) > 0
            np.testing.assert_allclose(labels[labelled].sum(axis=1), 1.0, atol=1e-6)  # mixed one-hot rows
        data.on_epoch_end()
    rows = np.arange(len(y))
    mixes = cache.mixes.view(0)
    mixed = views.render(x, rows, cache.view_params[:, 0], mixes)
    cut = mixes.kind == 2
    own = views.apply_views(x, cache.view_params[:, 0])
    partner = views.apply_views(x[mixes.partner], mixes.partner_crop)
    y0, x0, y1, x1 = mixes.box[np.argmax(cut)]
    first_cut = np.argmax(cut)
    # cutmix: the box is the partner's
    np.testing.assert_array_equal(mixed[first_cut, y0:y1, x0:x1], partner[first_cut, y0:y1, x0:x1])
    first_mix = np.argmax(mixes.kind == 1)
    ratio = mixes.ratio[first_mix]
    np.testing.assert_allclose(mixed[first_mix], ratio * own[first_mix] + (1 - ratio) * partner[first_mix], rtol=1e-6)
    # cutmix's ratio is the share left to the image
    assert abs(mixes.ratio[first_cut] - (1 - (y1 - y0) * (x1 - x0) / 64)) < 1e-6


def test_cached_outputs_of_mixed_views_equal_a_live_teachers_on_the_replayed_images(tmp_path):
    x, y = _images()
    teacher = small_cnn("teacher", widths=(4, 8), seed=1, input_shape=(8, 8, 3))
    cache = teacher_cache.build(
        teacher,
        ["teacher_stage2"],
        batches.ArrayBatches(x, y, 10),
        str(tmp_path / "cache"),
        augment=("crop", "flip", "mixup"),
        views=3,
        verbose=0,
        seed=3,
    )
    inputs, _ = cache.dataset(12, seed=1, layers=["teacher_stage2"])[0]
    live = teacher.predict_on_batch(inputs["images"])
    np.testing.assert_allclose(inputs["teacher"]["logits"], live, rtol=1e-4, atol=1e-5)
    compact = teacher_cache.build(
        teacher,
        [],
        batches.ArrayBatches(x, y, 10),
        str(tmp_path / "top3"),
        augment=("crop", "flip", "mixup"),
        views=3,
        verbose=0,
        seed=3,
        top_k=3,
    )
    assert compact.meta["bytes_per_view"] < cache.meta["bytes_per_view"]
    inputs, _ = compact.dataset(12, seed=1, layers=[])[0]  # the same views, drawn from the same seeds
    dense = inputs["teacher"]["logits"]
    top = np.argsort(-live, axis=1)[:, :3]
    np.testing.assert_array_equal(np.sort(np.argsort(-dense, axis=1)[:, :3], axis=1), np.sort(top, axis=1))
    # float16
    np.testing.assert_allclose(
        np.take_along_axis(dense, top, 1), np.take_along_axis(live, top, 1), rtol=2e-3, atol=2e-3
    )
