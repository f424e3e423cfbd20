import gzip
import os
import struct

import numpy as np
import pytest

from kdistill import data


def write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def make_fashion_mnist(folder, train=120, test=40, seed=0):
    """A Fashion-MNIST-shaped folder of IDX files: class c images are brighter in column band c."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for split, count in (("train", train), ("t10k", test)):
        y = rng.integers(0, 10, count).astype("uint8")
        x = rng.integers(0, 60, (count, 28, 28)).astype("uint8")
        for i, label in enumerate(y):
            x[i, :, label * 2 : label * 2 + 6] = 250
        write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"), x)
        write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"), y)
        arrays[split] = (x, y)
    return arrays


def test_fashion_mnist_reads_idx_files_from_data_dir(tmp_path):
    arrays = make_fashion_mnist(tmp_path / "fashion-mnist")
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist(str(tmp_path))
    np.testing.assert_array_equal(x_train, arrays["train"][0])
    np.testing.assert_array_equal(y_test, arrays["t10k"][1])
    assert x_train.shape == (120, 28, 28) and x_test.dtype == np.uint8


def test_fashion_mnist_pipeline_gives_rgb_32x32_raw_pixels_and_a_validation_split(tmp_path):
    make_fashion_mnist(tmp_path)
    splits = data.load("fashion_mnist", data_dir=str(tmp_path), batch_size=16, validation_fraction=0.25, train_limit=50)
    assert splits.counts == {"train": 50, "validation": 30, "test": 40}
    assert splits.num_classes == 10 and splits.class_names[0] == "T-shirt/top"
    images, labels = next(iter(splits.train))
    assert tuple(images.shape) == (16, 32, 32, 3) and images.dtype.name == "float32"
    assert float(images.numpy().max()) > 200 and float(images.numpy().min()) >= 0
    np.testing.assert_array_equal(images.numpy()[..., 0], images.numpy()[..., 2])  # grey repeated to RGB
    assert sum(int(b[1].shape[0]) for b in splits.validation) == 30


def test_missing_fashion_mnist_says_how_to_get_it_offline(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load_fashion_mnist(str(tmp_path / "nowhere"))
    message = str(info.value)
    assert "apt-get download dataset-fashion-mnist" in message and "--data-dir" in message and "make data" in message


def test_truncated_idx_file_is_reported(tmp_path):
    make_fashion_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(ValueError, match="truncated"):
        data.load_fashion_mnist(str(tmp_path))


def test_numpy_arrays_with_limits_and_augmentation():
    x = np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3)).astype("uint8")
    y = np.arange(40) % 4
    splits = data.from_arrays(
        x, y, x[:8], y[:8], batch_size=8, validation_fraction=0.2, augment=["flip", "crop"], seed=1
    )
    assert splits.num_classes == 4 and splits.counts == {"train": 32, "validation": 8, "test": 8}
    images, labels = next(iter(splits.train))
    assert tuple(images.shape) == (8, 32, 32, 3)
    plain = data.from_arrays(x, y, batch_size=8, validation_fraction=0.2, seed=1)
    assert not np.array_equal(next(iter(plain.train))[0].numpy(), images.numpy())  # augmentation changed pixels
    mixed = data.from_arrays(x, y, batch_size=8, validation_fraction=0.0, augment=["mixup"], seed=1)
    _, soft_labels = next(iter(mixed.train))
    assert tuple(soft_labels.shape) == (8, 4)
    np.testing.assert_allclose(soft_labels.numpy().sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="Unknown augmentation"):
        data.from_arrays(x, y, augment=["rotate90"])


def test_image_folder_tree(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("cats", "dogs", "ants"):
        os.makedirs(tmp_path / name)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    splits = data.load(str(tmp_path), image_size=32, batch_size=4, validation_fraction=0.2)
    assert splits.class_names == ["ants", "cats", "dogs"] and splits.num_classes == 3
    assert splits.counts == {"train": 12, "validation": 3}
    images, labels = next(iter(splits.train))
    assert tuple(images.shape[1:]) == (32, 32, 3) and set(labels.numpy()) <= {0, 1, 2}
    with pytest.raises(FileNotFoundError, match="class sub-folders"):
        data.from_image_folder(str(tmp_path / "cats"))


def test_a_corrupt_image_is_named_and_can_be_skipped_and_one_class_is_refused(tmp_path, capsys):
    """A corrupt JPEG gave TensorFlow's `jpeg::Uncompress failed` naming no file; one class gave "10 logits vs 1"."""
    from PIL import Image

    from kdistill import cli

    rng = np.random.default_rng(0)
    for name in ("ants", "bees"):
        os.makedirs(tmp_path / "tree" / name)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                tmp_path / "tree" / name / f"{i}.jpg"
            )
    good = (tmp_path / "tree" / "bees" / "0.jpg").read_bytes()
    (tmp_path / "tree" / "bees" / "broken.jpg").write_bytes(good[: len(good) // 3])  # truncated mid-stream
    for pipeline in ("tf", "numpy"):  # TensorFlow's decoder and Pillow's
        with pytest.raises(
            ValueError, match=r"1 image file\(s\) under .* cannot be decoded .*broken\.jpg.*--skip-unreadable"
        ):
            data.from_image_folder(str(tmp_path / "tree"), image_size=16, pipeline=pipeline)
    splits = data.from_image_folder(
        str(tmp_path / "tree"), image_size=16, validation_fraction=0.0, skip_unreadable=True
    )
    assert splits.counts["train"] == 8
    # The CLI: one line naming the file, rc 2; --skip-unreadable goes on without it.
    import keras

    inputs = keras.Input((16, 16, 3))
    keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs))).save(
        tmp_path / "model.keras"
    )
    command = [
        "evaluate",
        str(tmp_path / "model.keras"),
        "--data",
        str(tmp_path / "tree"),
        "--data-dir",
        str(tmp_path / "tree"),
        "--image-size",
        "16",
    ]
    assert cli.main(command) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert cli.main(command + ["--skip-unreadable"]) == 0
    os.makedirs(tmp_path / "one" / "ants")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "one" / "ants" / "0.png")
    with pytest.raises(ValueError, match=r"one class sub-folder \('ants'\): a classifier needs two or more"):
        data.from_image_folder(str(tmp_path / "one"))


def test_tfds_dataset_prepared_on_disk(tmp_path):
    import tensorflow_datasets as tfds

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        """Four-class 16x16 images made here, in TFDS format."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(16, 16, 3)),
                        "label": tfds.features.ClassLabel(names=["a", "b", "c", "d"]),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(20, 0), "test": self._generate_examples(8, 1)}

        def _generate_examples(self, count, seed):
            rng = np.random.default_rng(seed)
            for i in range(count):
                yield i, {"image": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "label": i % 4}

    TinyShapes(data_dir=str(tmp_path)).download_and_prepare()
    splits = data.load(
        "tfds:tiny_shapes", data_dir=str(tmp_path), image_size=32, batch_size=4, validation_fraction=0.25
    )
    assert splits.num_classes == 4 and splits.class_names == ["a", "b", "c", "d"]
    assert splits.counts == {"train": 15, "validation": 5, "test": 8}
    images, _ = next(iter(splits.test))
    assert tuple(images.shape) == (4, 32, 32, 3)


def test_unprepared_tfds_dataset_fails_fast_with_offline_instructions(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not prepared.*tfds build cifar10 --data_dir"):
        data.load("tfds:cifar10", data_dir=str(tmp_path))


def test_unknown_source_lists_the_kinds():
    with pytest.raises(ValueError, match="fashion_mnist.*tfds:<name>.*image folder"):
        data.load("imagenet-21k")


def test_transfer_set_adds_the_remaining_training_images_without_labels(tmp_path):
    make_fashion_mnist(tmp_path, train=120, test=40)
    splits = data.load("fashion_mnist", data_dir=str(tmp_path), train_limit=50, batch_size=200, transfer="rest")
    assert splits.counts["train"] == 50 and splits.counts["transfer"] == 120 - 12 - 50  # 12 validation images
    labels = np.concatenate([y for _, y in splits.train])
    assert (labels == -1).sum() == 58 and (labels >= 0).sum() == 50
    plain = np.concatenate([y for _, y in splits.train_plain])  # what a teacher cache is built from
    assert (plain == -1).sum() == 58
    with pytest.raises(ValueError, match="beyond train_limit, but there are none"):
        data.load("fashion_mnist", data_dir=str(tmp_path), transfer="rest")
    with pytest.raises(ValueError, match="same raw size"):
        data.from_arrays(np.zeros((10, 28, 28), "uint8"), np.arange(10) % 2, transfer=np.zeros((3, 32, 32), "uint8"))
    extra = data.from_arrays(
        np.zeros((10, 28, 28), "uint8"),
        np.arange(10) % 2,
        transfer=np.zeros((3, 28, 28), "uint8"),
        validation_fraction=0.0,
    )
    assert extra.counts["transfer"] == 3


@pytest.mark.parametrize(
    "limits, message",
    [({"train_limit": 0}, "train_limit must be a positive"), ({"test_limit": -1}, "test_limit must be a positive")],
)
def test_non_positive_limits_are_refused(limits, message):
    """--train-limit 0 used to train on all 54,000 images and --test-limit -1 on all 10,000."""
    x, y = np.zeros((10, 28, 28), "uint8"), np.arange(10) % 2
    with pytest.raises(ValueError, match=message):
        data.from_arrays(x, y, x, y, **limits)


def test_empty_arrays_and_out_of_range_labels_are_explained_before_training():
    with pytest.raises(ValueError, match="training arrays are empty"):
        data.from_arrays(np.zeros((0, 28, 28), "uint8"), np.zeros((0,), "int64"))
    x = np.zeros((6, 28, 28), "uint8")
    with pytest.raises(ValueError, match=r"1 test label\(s\) lie outside \[0, 3\) for 3 classes \(e.g. 7\)"):
        data.from_arrays(x, np.array([0, 1, 2, 0, 1, 2]), x[:2], np.array([0, 7]))
    with pytest.raises(ValueError, match=r"training label\(s\) lie outside \[0, 10\)"):
        data.from_arrays(x, np.array([0, 1, 2, 0, 1, -3]), class_names=[str(i) for i in range(10)])
    assert data.from_arrays(x, np.array([0, 1, 2, 0, 1, -1])).num_classes == 3  # -1: an unlabelled (transfer) image


def test_fitting_on_the_training_pipeline_does_not_warn_that_shuffle_is_ignored():
    """Every fit on kdistill's tf.data splits printed Keras' "`shuffle=True` was passed, but will be ignored": the pipeline shuffles itself."""
    import warnings

    import keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = data.from_arrays(
            np.zeros((16, 8, 8), "uint8"), np.arange(16) % 2, image_size=8, batch_size=8, pipeline="tf"
        )
        model.fit(splits.train, epochs=1, verbose=0)
    assert not [w for w in caught if "shuffle=True" in str(w.message)]
