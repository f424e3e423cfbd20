"""tf.data pipelines: the offline Fashion-MNIST default, TFDS names, image folders, NumPy arrays.

Every pipeline yields `(images, labels)` batches with images as float32 RGB
pixels in [0, 255] at the requested size (grey images repeated to 3 channels)
and integer labels. Models built by kdistill apply their own preprocessing
(ResNet50's Caffe-style mean subtraction, MobileNet's [-1, 1]) as their first
layer, so the same batch feeds teacher and student.

Example:
    >>> import numpy as np
    >>> x = np.zeros((10, 28, 28), "uint8"); y = np.arange(10) % 3
    >>> splits = from_arrays(x, y, x[:4], y[:4], image_size=32, batch_size=4, validation_fraction=0.2)
    >>> images, labels = next(iter(splits.train))
    >>> tuple(images.shape), splits.num_classes, splits.counts
    ((4, 32, 32, 3), 3, {'train': 8, 'validation': 2, 'test': 4})
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import struct
from typing import Any, Sequence

import numpy as np

from kdistill import batches as batches_module
from kdistill import images as image_io
from kdistill.batches import AUGMENTATIONS, augmentation
from kdistill.backend import LazyTensorFlow
from kdistill.models.checks import UNLABELED, check_finite, check_labels

tf = LazyTensorFlow("kdistill.data's tf.data pipelines")

__all__ = [
    "Splits",
    "FASHION_MNIST_CLASSES",
    "fashion_mnist_dirs",
    "read_idx",
    "load_fashion_mnist",
    "from_arrays",
    "from_tfds",
    "from_image_folder",
    "load",
    "augmentation",
    "AUGMENTATIONS",
    "PIPELINES",
    "resolve_pipeline",
]

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_OFFLINE_HELP = (
    "Fashion-MNIST ships in Debian's package dataset-fashion-mnist. Get it offline with "
    "`make data` (runs `apt-get download dataset-fashion-mnist` and unpacks it into data/, no root "
    "needed), or `apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist), "
    "then pass --data-dir DIR (or set KDISTILL_DATA_DIR) if the files are elsewhere."
)
PIPELINES = ("auto", "tf", "numpy")


@dataclasses.dataclass
class Splits:
    """Train / validation / test pipelines and what a model needs to know about them.

    The pipelines are `tf.data.Dataset`s on the TensorFlow backend and
    `kdistill.batches.ArrayBatches` (a `keras.utils.PyDataset`) on JAX and
    PyTorch (see `from_arrays(pipeline=...)`); `fit`, `evaluate` and a plain
    `for images, labels in ...` loop take either.
    """

    train: Any
    validation: Any | None
    test: Any | None
    num_classes: int
    class_names: list[str]
    image_shape: tuple[int, int, int]
    counts: dict[str, int]
    #: the training images in a fixed order, unaugmented (what a teacher cache is built from)
    train_plain: Any | None = None


def fashion_mnist_dirs(data_dir: str | None = None) -> list[str]:
    """Folders searched for the Fashion-MNIST IDX files, in order.

    An explicit `data_dir` (or `KDISTILL_DATA_DIR`) is searched alone, so a
    wrong path is reported instead of silently reading data from elsewhere.
    """
    base = data_dir or os.environ.get("KDISTILL_DATA_DIR")
    if base:
        return [base, os.path.join(base, "fashion-mnist"), os.path.join(base, "usr", "share", "datasets", "fashion-mnist")]
    return [
        os.path.join("data", "fashion-mnist"),
        "/usr/share/datasets/fashion-mnist",
        os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist"),
    ]


def _find(folder: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (gzip or plain), as used by MNIST and Fashion-MNIST.

    Raises:
        ValueError: for a truncated or malformed file.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"Cannot read IDX file {path!r}: {error}. Is it truncated? {_OFFLINE_HELP}") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path!r} is not an unsigned-byte IDX file (bad magic number).")
    rank = data[3]
    shape = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path!r} holds {body.size} bytes of data but its header says {shape}: the file is truncated.")
    return body.reshape(shape)


def load_fashion_mnist(data_dir: str | None = None) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Loads Fashion-MNIST from local IDX files; never downloads.

    Args:
        data_dir: a folder with the four IDX files (or a folder holding
            `fashion-mnist/`, or the root where the Debian package was unpacked).

    Returns:
        `((x_train, y_train), (x_test, y_test))` as uint8 arrays, like
        `keras.datasets.fashion_mnist.load_data()`.

    Raises:
        FileNotFoundError: when no searched folder has the files; says how to get them offline.
    """
    searched = fashion_mnist_dirs(data_dir)
    for folder in searched:
        paths = {key: _find(folder, stem) for key, stem in _FASHION_FILES.items()}
        if all(paths.values()):
            arrays = {key: read_idx(path) for key, path in paths.items()}
            logger.info("Fashion-MNIST from %s", folder)
            return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
    raise FileNotFoundError(f"Fashion-MNIST not found in {searched}. {_OFFLINE_HELP}")


def _to_model_images(images, image_size: int):
    images = tf.cast(images, tf.float32)
    if images.shape.rank == 3:  # (batch, H, W) grey
        images = images[..., tf.newaxis]
    if images.shape[-1] == 1:
        images = tf.repeat(images, 3, axis=-1)
    if images.shape[1] != image_size or images.shape[2] != image_size:
        images = tf.image.resize(images, (image_size, image_size), method="bilinear")
    return images


def _pipeline(arrays, image_size, batch_size, training, augment, num_classes, seed):
    counter = None
    if training:  # pass k in the order drawn from (seed, k), so that a resumed run replays it (batches.set_pass)
        dataset, counter = batches_module.shuffled_by_pass(arrays, batch_size, seed)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size, drop_remainder=False)
    dataset = dataset.map(lambda x, y: (_to_model_images(x, image_size), tf.cast(y, tf.int32)), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment:
        per_image, per_batch = augmentation(augment, image_size, num_classes, seed)
        if per_image is not None:
            dataset = dataset.map(lambda x, y: (per_image(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        if per_batch:
            # MixUp / CutMix mix labels too: labels become one-hot (use categorical_crossentropy).
            def mix(x, y):
                sample = {"images": x, "labels": tf.one_hot(y, num_classes)}
                for layer in per_batch:
                    sample = layer(sample, training=True)
                return sample["images"], sample["labels"]

            dataset = dataset.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    if counter is not None:
        dataset.kdistill_pass = counter
    return dataset


def resolve_pipeline(pipeline: str = "auto") -> str:
    """`"tf"` or `"numpy"`: what `pipeline="auto"` means on this Keras backend (tf.data on TensorFlow, PyDataset elsewhere).

    Example:
        >>> resolve_pipeline("numpy")
        'numpy'
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {', '.join(PIPELINES)}, received {pipeline!r}.")
    if pipeline == "auto":
        import keras

        return "tf" if keras.backend.backend() == "tensorflow" else "numpy"
    return pipeline


def from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    image_size: int = 32,
    batch_size: int = 64,
    validation_fraction: float = 0.1,
    train_limit: int | None = None,
    test_limit: int | None = None,
    augment: Sequence[str] = (),
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    transfer: str | np.ndarray | None = None,
    pipeline: str = "auto",
) -> Splits:
    """Pipelines from NumPy arrays: grey or RGB images, integer labels.

    A fixed permutation (by `seed`) picks the validation images from the
    training arrays, and `train_limit` training images after them.

    Training labels of `UNLABELED` (-1) mark images without a label (only the
    distillation terms apply to them); any other label outside `[0, classes)` is an error.

    Args:
        transfer: unlabelled images added to the training pipeline with the
            label `kdistill.UNLABELED` (-1), a transfer set (Hinton et al. 2015)
            on which only the distillation terms apply: `"rest"` takes the
            training images left over by `train_limit`; an array adds those
            images (same raw shape as `x_train`'s). `counts["transfer"]` says how many.
        pipeline: `"tf"` (tf.data), `"numpy"` (`kdistill.batches.ArrayBatches`, a
            `keras.utils.PyDataset` that needs no TensorFlow) or `"auto"`: tf.data on
            the TensorFlow backend, NumPy batches on JAX and PyTorch. Both give the
            same validation split, the same images and labels (a shuffled training
            pass holds the same examples, in another order) and the same augmentation layers.
    """
    y_train, num_classes = _checked_arrays(x_train, y_train, x_test, y_test, train_limit, test_limit, validation_fraction, class_names)
    validation_index, train_index, rest = _split(len(x_train), seed, validation_fraction, train_limit)
    make = _pipeline_maker(pipeline, image_size=image_size, batch_size=batch_size, num_classes=num_classes, seed=seed)
    train_x, train_y = x_train[train_index], y_train[train_index]
    counts = {"train": len(train_index), "validation": len(validation_index)}
    transfer_images = _transfer_images(transfer, x_train, rest)
    if transfer_images is not None:
        train_x = np.concatenate([train_x, transfer_images])
        train_y = np.concatenate([train_y, np.full(len(transfer_images), UNLABELED, "int32")])
        counts["transfer"] = int(len(transfer_images))
    train = make(train_x, train_y, training=True, augment=augment)
    validation = make(x_train[validation_index], y_train[validation_index], training=False, augment=()) if len(validation_index) else None
    test = None
    if x_test is not None:
        if test_limit:
            x_test, y_test = x_test[:test_limit], y_test[:test_limit]
        test = make(x_test, np.asarray(y_test).astype("int32"), training=False, augment=())
        counts["test"] = len(x_test)
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    plain = make(train_x, train_y, training=False, augment=())
    return Splits(train, validation, test, num_classes, names, (image_size, image_size, 3), counts, train_plain=plain)


def _checked_arrays(x_train, y_train, x_test, y_test, train_limit, test_limit, validation_fraction, class_names) -> tuple[np.ndarray, int]:
    """`from_arrays`' checks before any work; returns the training labels as int32 and the number of classes."""
    if len(x_train) != len(y_train):
        raise ValueError(f"x_train has {len(x_train)} images but y_train has {len(y_train)} labels.")
    if not len(x_train):
        raise ValueError("The training arrays are empty (0 images): pass the images to train on.")
    for name, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
            raise ValueError(f"{name} must be a positive number of images (or None for all), received {limit!r}.")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), received {validation_fraction}.")
    check_finite("training", x_train)
    if x_test is not None:
        check_finite("test", x_test)
    y_train = np.asarray(y_train).astype("int32").reshape(-1)
    num_classes = len(class_names) if class_names is not None else int(y_train.max()) + 1
    check_labels("training", y_train, num_classes, allow_unlabeled=True)
    if y_test is not None and len(y_test):
        check_labels("test", np.asarray(y_test).astype("int64"), num_classes)
    return y_train, num_classes


def _split(count: int, seed: int, validation_fraction: float, train_limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(validation, train, rest)` example indices: a fixed permutation by `seed`; `rest` is what `train_limit` leaves out."""
    order = np.random.default_rng(seed).permutation(count)
    n_validation = int(round(count * validation_fraction))
    validation_index, train_index = order[:n_validation], order[n_validation:]
    if not train_limit:
        return validation_index, train_index, train_index[:0]
    return validation_index, train_index[:train_limit], train_index[train_limit:]


def _pipeline_maker(pipeline: str, **common):
    """`make(x, y, training=..., augment=...)`: tf.data batches or NumPy batches (`batches.image_batches`), as `pipeline` says."""
    if resolve_pipeline(pipeline) == "tf":
        return lambda x, y, **options: _pipeline((x, y), **options, **common)
    return lambda x, y, **options: batches_module.image_batches(x, y, **options, **common)


def _transfer_images(transfer, x_train: np.ndarray, rest: np.ndarray) -> np.ndarray | None:
    """The unlabelled images a `transfer` option names (see `from_arrays`)."""
    if transfer is None:
        return None
    if isinstance(transfer, str):
        if transfer != "rest":
            raise ValueError(f"transfer must be 'rest' (the training images beyond train_limit) or an array of images, received {transfer!r}.")
        if not len(rest):
            raise ValueError("transfer='rest' adds the training images beyond train_limit, but there are none: set train_limit below "
                             f"the {len(x_train)} training images.")
        return x_train[rest]
    images = np.asarray(transfer)
    if images.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"Transfer images have shape {images.shape[1:]} per image, the training images {x_train.shape[1:]}: give them the same raw size.")
    return images


def from_tfds(name: str, data_dir: str | None = None, image_size: int = 32, batch_size: int = 64, train_limit: int | None = None, test_limit: int | None = None,
              validation_fraction: float = 0.1, augment: Sequence[str] = (), seed: int = 0, download: bool = False,
              pipeline: str = "auto") -> Splits:
    """Pipelines from a TensorFlow Datasets name (`cifar10`, `cifar100`, `imagenette`, ...).

    Reads a prepared TFDS directory (`data_dir`, default `~/tensorflow_datasets`).
    With `download=True` TFDS may fetch it (needs network).

    Raises:
        ImportError: when tensorflow-datasets is not installed.
        FileNotFoundError: when the data is not prepared, saying how to prepare it offline.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError("TFDS data needs `pip install tensorflow-datasets` (or `pip install kdistill[tfds]`).") from error
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:
        raise ValueError(f"Unknown TFDS dataset {name!r}: {error}") from None
    if not download and not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and kdistill never downloads at run "
            f"time. On a machine with network run `tfds build {name} --data_dir DIR` (or "
            f"`python -c \"import tensorflow_datasets as tfds; tfds.load('{name}', data_dir='DIR')\"`), copy DIR "
            "here and pass --data-dir DIR. For datasets that need manual files, put them in "
            f"DIR/downloads/manual and run `tfds build {name} --data_dir DIR --manual_dir DIR/downloads/manual`."
        )
    if download:
        builder.download_and_prepare()
    info = builder.info
    splits = list(info.splits)
    test_split = "test" if "test" in splits else ("validation" if "validation" in splits else None)
    label_feature = info.features["label"]

    def to_arrays(split, limit):
        dataset = builder.as_dataset(split=split, as_supervised=True)
        if limit:
            dataset = dataset.take(limit)
        xs, ys = [], []
        for image, label in dataset.map(lambda x, y: (tf.image.resize(x, (image_size, image_size)), y)).as_numpy_iterator():
            xs.append(image)
            ys.append(label)
        return np.stack(xs).astype("float32"), np.asarray(ys)

    x_train, y_train = to_arrays("train", (train_limit + int(train_limit * validation_fraction / (1 - validation_fraction)) + 1) if train_limit else None)
    x_test, y_test = to_arrays(test_split, test_limit) if test_split else (None, None)
    result = from_arrays(x_train, y_train, x_test, y_test, image_size, batch_size, validation_fraction, train_limit, None, augment, label_feature.names, seed,
                         pipeline=pipeline)
    result.num_classes = label_feature.num_classes
    return result


def from_image_folder(path: str, image_size: int = 32, batch_size: int = 64, validation_fraction: float = 0.1, test_dir: str | None = None,
                      train_limit: int | None = None, augment: Sequence[str] = (), seed: int = 0, pipeline: str = "auto",
                      skip_unreadable: bool = False) -> Splits:
    """Pipelines from a tree `path/<class name>/*.jpg|png` (class names sorted; hidden folders and files left out).

    Images are decoded by TensorFlow for the tf.data pipeline and by Pillow
    for NumPy batches (and with `skip_unreadable`): both read the same files
    into the same pixels (see `kdistill.images`: grey, RGBA, palette, CMYK and
    16-bit images become 8-bit RGB) and resize bilinearly to `image_size`. A
    corrupt or truncated file is named in the error; `skip_unreadable=True`
    leaves such files out (with a count in the log).

    Raises:
        FileNotFoundError: when `path` does not exist or has no class folders with images.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Image folder {path!r} does not exist. Expected a tree <folder>/<class name>/<image files>.")
    class_names = image_io.class_folders(path)
    if not class_names:
        raise FileNotFoundError(f"{path!r} has no class sub-folders. Expected <folder>/<class name>/<image files>.")
    if len(class_names) == 1:
        raise ValueError(f"{path!r} has one class sub-folder ({class_names[0]!r}): a classifier needs two or more, one folder per class "
                         "(<folder>/<class name>/<image files>).")

    def read(folder):
        if resolve_pipeline(pipeline) == "numpy" or skip_unreadable:
            return batches_module.read_image_folder(folder, class_names, image_size, skip_unreadable=skip_unreadable)
        return _read_folder_tf(folder, class_names, image_size)

    x_train, y_train = read(path)
    x_test, y_test = read(test_dir) if test_dir else (None, None)
    return from_arrays(x_train, y_train, x_test, y_test, image_size, batch_size, validation_fraction, train_limit, None, augment, class_names, seed,
                       pipeline=pipeline)


def _read_folder_tf(folder: str, class_names: Sequence[str], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The tf.data twin of `batches.read_image_folder`: the same files (`kdistill.images`), decoded by TensorFlow."""
    paths, labels = image_io.image_files(folder, class_names)
    if not paths:
        raise FileNotFoundError(f"No images found under {folder!r} (jpeg, png, bmp, gif).")
    decoded = tf.data.Dataset.from_tensor_slices(paths).map(lambda path: image_io.decode_tf(path, image_size), num_parallel_calls=tf.data.AUTOTUNE)
    try:
        images = np.concatenate(list(decoded.batch(256).as_numpy_iterator()))
    except tf.errors.OpError:
        unreadable = batches_module.unreadable_images(folder, class_names)  # TensorFlow's decode error names no file
        if not unreadable:
            raise
        raise ValueError(batches_module.unreadable_message(folder, unreadable)) from None
    return images, np.asarray(labels, dtype="int32")


def load(source: str = "fashion_mnist", data_dir: str | None = None, image_size: int = 32, batch_size: int = 64, validation_fraction: float = 0.1,
         train_limit: int | None = None, test_limit: int | None = None, augment: Sequence[str] = (), seed: int = 0,
         transfer: str | None = None, pipeline: str = "auto", skip_unreadable: bool = False) -> Splits:
    """Pipelines from a source name: `fashion_mnist` (offline default), `tfds:<name>`, or an image folder path.

    With the offline data fetched (`make data`), `load("fashion_mnist", data_dir="data")`
    gives 54,000 / 6,000 / 10,000 train / validation / test images of 32x32x3.

    `transfer` ("rest" or a `.npy` file of images) adds unlabelled training
    images (see `from_arrays`). `pipeline` picks tf.data or NumPy batches
    (`"auto"`: tf.data on the TensorFlow backend, `keras.utils.PyDataset` on JAX
    and PyTorch; see `from_arrays`).

    Example:
        >>> load("mnist-on-the-moon")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Unknown data source 'mnist-on-the-moon'. Use 'fashion_mnist' (offline default), ...
    """
    data_dir = os.path.expanduser(data_dir) if data_dir else data_dir
    common = dict(image_size=image_size, batch_size=batch_size, validation_fraction=validation_fraction, train_limit=train_limit, augment=augment, seed=seed,
                  pipeline=pipeline)
    if source in ("fashion_mnist", "fashion-mnist"):
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist(data_dir)
        if isinstance(transfer, str) and transfer.endswith(".npy"):
            transfer = np.load(transfer)
        return from_arrays(x_train, y_train, x_test, y_test, test_limit=test_limit, class_names=FASHION_MNIST_CLASSES, transfer=transfer, **common)
    if transfer is not None:
        raise ValueError(f"A transfer set (transfer={transfer!r}) is supported for fashion_mnist and NumPy arrays (data.from_arrays), not for {source!r}.")
    if source.startswith("tfds:"):
        return from_tfds(source[len("tfds:"):], data_dir=data_dir, test_limit=test_limit, **common)
    if os.path.isdir(source):
        return from_image_folder(source, test_dir=data_dir, skip_unreadable=skip_unreadable, **{k: v for k, v in common.items() if k != "test_limit"})
    raise ValueError(
        f"Unknown data source {source!r}. Use 'fashion_mnist' (offline default), 'tfds:<name>' "
        "(e.g. tfds:cifar10, with --data-dir for a prepared TFDS folder) or the path of an image folder "
        "<folder>/<class name>/<images>."
    )
