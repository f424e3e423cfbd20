"""NumPy batches (keras.utils.PyDataset) against the tf.data pipelines: the same images and labels for the same seed."""

import os

import numpy as np
import pytest

from kdistill import data
from kdistill.data import batches
from kdistill.run import teacher_cache

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "fashion-mnist-sample")


@pytest.fixture(scope="module")
def real_images():
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist(SAMPLE)
    return x_train[:300], y_train[:300], x_test[:70], y_test[:70]


def _collect(pipeline):
    images, labels = zip(*[(np.asarray(x), np.asarray(y)) for x, y in pipeline])
    return np.concatenate(images), np.concatenate(labels)


def _by_content(images, labels):
    """Examples sorted by a content key: a shuffled pass compared as a set."""
    key = images.reshape(len(images), -1) @ np.random.default_rng(0).normal(size=images[0].size)
    order = np.argsort(key)
    return images[order], labels[order]


def test_numpy_and_tf_pipelines_give_the_same_images_and_labels_for_the_same_seed(real_images):
    x_train, y_train, x_test, y_test = real_images
    options = dict(
        batch_size=32, validation_fraction=0.2, seed=3, class_names=data.FASHION_MNIST_CLASSES, train_limit=200
    )
    tf_splits = data.from_arrays(x_train, y_train, x_test, y_test, pipeline="tf", **options)
    np_splits = data.from_arrays(x_train, y_train, x_test, y_test, pipeline="numpy", **options)
    assert isinstance(np_splits.train, batches.ArrayBatches) and type(tf_splits.train).__module__.startswith(
        "tensorflow"
    )
    assert np_splits.counts == tf_splits.counts == {"train": 200, "validation": 60, "test": 70}
    for split in ("validation", "test", "train_plain"):  # unshuffled: equal batch for batch
        tf_x, tf_y = _collect(getattr(tf_splits, split))
        np_x, np_y = _collect(getattr(np_splits, split))
        assert np_x.shape == tf_x.shape and np_x.dtype == tf_x.dtype == np.float32, split
        np.testing.assert_array_equal(np_y, tf_y)
        np.testing.assert_allclose(np_x, tf_x, atol=1e-4, err_msg=split)
    assert tf_x.shape[1:] == (32, 32, 3)  # 28x28 grey became 32x32 RGB in both
    # A shuffled training pass: the same examples in another order.
    tf_x, tf_y = _by_content(*_collect(tf_splits.train))
    np_x, np_y = _by_content(*_collect(np_splits.train))
    np.testing.assert_array_equal(np_y, tf_y)
    np.testing.assert_allclose(np_x, tf_x, atol=1e-4)


def test_numpy_batches_reshuffle_each_pass_and_repeat_with_a_seed():
    x, y = np.arange(50, dtype="float32").reshape(50, 1), np.arange(50)
    first = batches.ArrayBatches(x, y, batch_size=8, shuffle=True, seed=1)
    again = batches.ArrayBatches(x, y, batch_size=8, shuffle=True, seed=1)
    pass_0 = _collect(first)[1]
    assert sorted(pass_0.tolist()) == list(range(50)) and pass_0.tolist() != list(range(50))
    np.testing.assert_array_equal(pass_0, _collect(again)[1])  # the same seed, the same order
    first.on_epoch_end()
    pass_1 = _collect(first)[1]
    assert sorted(pass_1.tolist()) == list(range(50)) and pass_1.tolist() != pass_0.tolist()
    np.testing.assert_array_equal(pass_1, first.order(1))
    # Endless with a subset of the examples: every pass holds exactly that subset.
    endless = batches.ArrayBatches(x, y, batch_size=5, shuffle=True, seed=2, repeat=True, indices=np.arange(0, 50, 2))
    assert endless.num_batches is None and endless.batches_per_pass == 5
    seen = np.concatenate([endless[i][1] for i in range(10)])
    assert sorted(seen[:25].tolist()) == sorted(seen[25:].tolist()) == list(range(0, 50, 2))
    assert seen[:25].tolist() != seen[25:].tolist()
    np.testing.assert_array_equal(endless[3][0][:, 0], endless[3][1])  # inputs stay with their labels


def test_numpy_batches_refuse_mismatched_inputs_with_one_clear_error():
    with pytest.raises(ValueError, match="one label per example"):
        batches.ArrayBatches(np.zeros((4, 2)), np.zeros(5), batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        batches.ArrayBatches(np.zeros((4, 2)), np.zeros(4), batch_size=0)
    with pytest.raises(ValueError, match="indices must lie in"):
        batches.ArrayBatches(np.zeros((4, 2)), np.zeros(4), batch_size=2, indices=[0, 4])
    with pytest.raises(ValueError, match="pipeline must be one of"):
        data.resolve_pipeline("grain")


def test_numpy_pipeline_applies_the_keras_augmentation_layers(real_images):
    x_train, y_train, _, _ = real_images
    plain = data.from_arrays(x_train, y_train, batch_size=64, validation_fraction=0.0, pipeline="numpy", train_limit=64)
    flipped = data.from_arrays(
        x_train,
        y_train,
        batch_size=64,
        validation_fraction=0.0,
        pipeline="numpy",
        train_limit=64,
        augment=("flip", "crop"),
    )
    original, _ = _collect(plain.train)
    augmented, labels = _collect(flipped.train)
    assert augmented.shape == original.shape == (64, 32, 32, 3) and labels.dtype == np.int32
    assert not np.allclose(_by_content(augmented, labels)[0], _by_content(original, labels)[0])
    mixed = data.from_arrays(
        x_train, y_train, batch_size=32, validation_fraction=0.0, pipeline="numpy", train_limit=64, augment=("mixup",)
    )
    _, soft = mixed.train[0]
    assert soft.shape == (32, 10) and np.allclose(soft.sum(-1), 1.0, atol=1e-5)


def test_teacher_cache_reads_the_same_batches_without_tensorflow(tmp_path, real_images):
    import keras

    from conftest import small_cnn

    x_train, y_train, _, _ = real_images
    splits = data.from_arrays(
        x_train[:90], y_train[:90], batch_size=32, validation_fraction=0.0, pipeline="numpy", image_size=28
    )
    teacher = small_cnn("teacher", widths=(4, 8), seed=1, input_shape=(28, 28, 3))
    cache = teacher_cache.build(
        teacher, ["teacher_stage2"], splits.train_plain, str(tmp_path / "cache"), dtype="float16", verbose=0
    )
    keras.utils.set_random_seed(0)
    for options in (dict(shuffle=False), dict(shuffle=False, indices=np.arange(10, 70))):
        from_tf = list(cache.dataset(16, pipeline="tf", **options))
        from_np = list(cache.dataset(16, pipeline="numpy", **options))
        assert len(from_tf) == len(from_np)
        for (tf_x, tf_y), (np_x, np_y) in zip(from_tf, from_np):
            np.testing.assert_array_equal(np.asarray(tf_y), np_y)
            np.testing.assert_array_equal(np.asarray(tf_x["images"]), np_x["images"])
            for name in ("teacher_stage2", "logits"):
                np.testing.assert_array_equal(np.asarray(tf_x["teacher"][name]), np_x["teacher"][name])
    assert from_np[0][0]["images"].dtype == np.float32 and from_np[0][0]["teacher"]["logits"].dtype == np.float16
    # The memory maps are not copied up front.
    assert isinstance(cache.dataset(16, pipeline="numpy").inputs["teacher"]["logits"], np.memmap)
    # The cache checks a NumPy pipeline's images as it checks tf.data's.
    teacher_cache.load(str(tmp_path / "cache"), teacher, ["teacher_stage2"], dataset=splits.train_plain)
