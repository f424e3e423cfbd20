"""Where the images come from: the offline Fashion-MNIST IDX files, TensorFlow Datasets, image folders; `load` picks one by name.

Each source reads its images into arrays and hands them to `from_arrays`
(`kdistill.data.arrays`), which builds the pipelines.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from typing import Sequence

import numpy as np

from kdistill.backend import LazyTensorFlow
from kdistill.data import batches, tf_pipeline
from kdistill.data import images as image_io
from kdistill.errors import UserError, shorten, shown
from kdistill.data.arrays import Splits, from_arrays, resolve_pipeline

tf = LazyTensorFlow("kdistill.data's TFDS reader")

__all__ = [
    "FASHION_MNIST_CLASSES",
    "fashion_mnist_dirs",
    "read_idx",
    "load_fashion_mnist",
    "tfds_builder",
    "from_tfds",
    "from_image_folder",
    "load",
]

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
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


def fashion_mnist_dirs(data_dir: str | None = None) -> list[str]:
    """Folders searched for the Fashion-MNIST IDX files, in order.

    An explicit `data_dir` (or `KDISTILL_DATA_DIR`) is searched alone, so a
    wrong path is reported instead of silently reading data from elsewhere.
    """
    base = data_dir or os.environ.get("KDISTILL_DATA_DIR")
    if base:
        return [
            base,
            os.path.join(base, "fashion-mnist"),
            os.path.join(base, "usr", "share", "datasets", "fashion-mnist"),
        ]
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
        raise ValueError(
            f"{path!r} holds {body.size} bytes of data but its header says {shape}: the file is truncated."
        )
    return body.reshape(shape)


def load_fashion_mnist(
    data_dir: str | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
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


def tfds_builder(name: str, data_dir: str | None = None, download: bool = False):
    """The TFDS builder of a prepared dataset (prepared here first when `download`), or an error saying how to prepare it offline.

    Raises:
        ImportError: when tensorflow-datasets is not installed.
        ValueError: for a name TFDS does not know.
        FileNotFoundError: when the data is not prepared, saying how to prepare it offline.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "TFDS data needs `pip install tensorflow-datasets` (or `pip install kdistill[tfds]`)."
        ) from error
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
    return builder


def from_tfds(
    name: str,
    data_dir: str | None = None,
    image_size: int = 32,
    batch_size: int = 64,
    train_limit: int | None = None,
    test_limit: int | None = None,
    validation_fraction: float = 0.1,
    augment: Sequence[str] = (),
    seed: int = 0,
    download: bool = False,
    pipeline: str = "auto",
) -> Splits:
    """Pipelines from a TensorFlow Datasets name (`cifar10`, `cifar100`, `imagenette`, ...).

    Reads a prepared TFDS directory (`data_dir`, default `~/tensorflow_datasets`).
    With `download=True` TFDS may fetch it (needs network).

    Raises:
        ImportError: when tensorflow-datasets is not installed.
        FileNotFoundError: when the data is not prepared, saying how to prepare it offline.
    """
    builder = tfds_builder(name, data_dir, download)
    info = builder.info
    splits = list(info.splits)
    test_split = "test" if "test" in splits else ("validation" if "validation" in splits else None)
    label_feature = info.features["label"]

    def to_arrays(split, limit):
        dataset = builder.as_dataset(split=split, as_supervised=True)
        if limit:
            dataset = dataset.take(limit)
        xs, ys = [], []
        for image, label in dataset.map(
            lambda x, y: (tf.image.resize(x, (image_size, image_size)), y)
        ).as_numpy_iterator():
            xs.append(image)
            ys.append(label)
        return np.stack(xs).astype("float32"), np.asarray(ys)

    x_train, y_train = to_arrays(
        "train",
        (train_limit + int(train_limit * validation_fraction / (1 - validation_fraction)) + 1) if train_limit else None,
    )
    x_test, y_test = to_arrays(test_split, test_limit) if test_split else (None, None)
    result = from_arrays(
        x_train,
        y_train,
        x_test,
        y_test,
        image_size,
        batch_size,
        validation_fraction,
        train_limit,
        None,
        augment,
        label_feature.names,
        seed,
        pipeline=pipeline,
    )
    result.num_classes = label_feature.num_classes
    return result


def from_image_folder(
    path: str,
    image_size: int = 32,
    batch_size: int = 64,
    validation_fraction: float = 0.1,
    test_dir: str | None = None,
    train_limit: int | None = None,
    augment: Sequence[str] = (),
    seed: int = 0,
    pipeline: str = "auto",
    skip_unreadable: bool = False,
) -> Splits:
    """Pipelines from a tree `path/<class name>/*.jpg|png` (class names sorted; hidden folders and files left out).

    Images are decoded by TensorFlow for the tf.data pipeline and by Pillow
    for NumPy batches (and with `skip_unreadable`): both read the same files
    into the same pixels (see `kdistill.data.images`: grey, RGBA, palette, CMYK and
    16-bit images become 8-bit RGB) and resize bilinearly to `image_size`. A
    corrupt or truncated file is named in the error; `skip_unreadable=True`
    leaves such files out (with a count in the log).

    Raises:
        FileNotFoundError: when `path` does not exist or has no class folders with images.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"Image folder {path!r} does not exist. Expected a tree <folder>/<class name>/<image files>."
        )
    class_names = image_io.class_folders(path)
    if not class_names:
        raise FileNotFoundError(f"{path!r} has no class sub-folders. Expected <folder>/<class name>/<image files>.")
    if len(class_names) == 1:
        raise ValueError(
            f"{path!r} has one class sub-folder ({class_names[0]!r}): a classifier needs two or more, one folder per class "
            "(<folder>/<class name>/<image files>)."
        )

    def read(folder):
        if resolve_pipeline(pipeline) == "numpy" or skip_unreadable:
            return batches.read_image_folder(folder, class_names, image_size, skip_unreadable=skip_unreadable)
        return tf_pipeline.read_image_folder(folder, class_names, image_size)

    x_train, y_train = read(path)
    x_test, y_test = read(test_dir) if test_dir else (None, None)
    return from_arrays(
        x_train,
        y_train,
        x_test,
        y_test,
        image_size,
        batch_size,
        validation_fraction,
        train_limit,
        None,
        augment,
        class_names,
        seed,
        pipeline=pipeline,
    )


def _load_images_file(path: str) -> np.ndarray:
    """The images in a .npy file; UserError naming the file when it is not a plain NumPy array (pickled objects are never loaded)."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise UserError(
            f"Transfer images {path!r} are not a plain NumPy array of images ({shorten(str(error), 100)}): kdistill does not load "
            "pickled Python objects from a file, as they could run any code. Save the images with np.save(path, images) "
            "from a uint8 or float array."
        ) from None


def load(
    source: str = "fashion_mnist",
    data_dir: str | None = None,
    image_size: int = 32,
    batch_size: int = 64,
    validation_fraction: float = 0.1,
    train_limit: int | None = None,
    test_limit: int | None = None,
    augment: Sequence[str] = (),
    seed: int = 0,
    transfer: str | None = None,
    pipeline: str = "auto",
    skip_unreadable: bool = False,
    download: bool = False,
) -> Splits:
    """Pipelines from a source name: `fashion_mnist` (offline default), `tfds:<name>`, or an image folder path.

    kdistill never downloads unless asked: `download=True` lets TFDS fetch a
    `tfds:<name>` dataset that is not prepared yet (needs network, e.g. on Colab);
    without it an unprepared dataset is an error saying how to prepare it offline.

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
    common = dict(
        image_size=image_size,
        batch_size=batch_size,
        validation_fraction=validation_fraction,
        train_limit=train_limit,
        augment=augment,
        seed=seed,
        pipeline=pipeline,
    )
    if source in ("fashion_mnist", "fashion-mnist"):
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist(data_dir)
        if isinstance(transfer, str) and transfer.endswith(".npy"):
            transfer = _load_images_file(transfer)
        return from_arrays(
            x_train,
            y_train,
            x_test,
            y_test,
            test_limit=test_limit,
            class_names=FASHION_MNIST_CLASSES,
            transfer=transfer,
            **common,
        )
    if transfer is not None:
        raise ValueError(
            f"A transfer set (transfer={transfer!r}) is supported for fashion_mnist and NumPy arrays (data.from_arrays), not for {source!r}."
        )
    if source.startswith("tfds:"):
        return from_tfds(source[len("tfds:") :], data_dir=data_dir, test_limit=test_limit, download=download, **common)
    if os.path.isdir(source):
        return from_image_folder(
            source,
            test_dir=data_dir,
            skip_unreadable=skip_unreadable,
            **{k: v for k, v in common.items() if k != "test_limit"},
        )
    raise ValueError(
        f"Unknown data source {shown(source)}. Use 'fashion_mnist' (offline default), 'tfds:<name>' "
        "(e.g. tfds:cifar10, with --data-dir for a prepared TFDS folder) or the path of an image folder "
        "<folder>/<class name>/<images>."
    )
