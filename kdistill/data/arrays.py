"""Pipelines from NumPy arrays: the validation split, a transfer set, tf.data or NumPy batches (`from_arrays`).

Every pipeline yields `(images, labels)` batches with images as float32 RGB
pixels in [0, 255] at the requested size (grey images repeated to 3 channels)
and integer labels.

Example (the training images beyond `train_limit` as an unlabelled transfer set):
    >>> import numpy as np
    >>> x, y = np.zeros((10, 28, 28), "uint8"), np.arange(10) % 2
    >>> splits = from_arrays(x, y, train_limit=4, transfer="rest", validation_fraction=0.2, pipeline="numpy")
    >>> splits.counts, splits.image_shape
    ({'train': 4, 'validation': 2, 'transfer': 4}, (32, 32, 3))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from kdistill.data import batches, tf_pipeline
from kdistill.models.checks import UNLABELED, check_finite, check_labels

__all__ = ["Splits", "PIPELINES", "resolve_pipeline", "from_arrays"]

PIPELINES = ("auto", "tf", "numpy")


@dataclasses.dataclass
class Splits:
    """Train / validation / test pipelines and what a model needs to know about them.

    The pipelines are `tf.data.Dataset`s on the TensorFlow backend and
    `kdistill.data.batches.ArrayBatches` (a `keras.utils.PyDataset`) on JAX and
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

    def held_out(self) -> tuple[Any, str]:
        """`(pipeline, name)` to measure a trained model on: the test split, else the validation split.

        An image folder without a test folder (`data_dir`) has no test split; its
        validation split holds the images that training with the same seed and
        validation fraction left out.

        Raises:
            ValueError: when there is neither.
        """
        if self.test is not None:
            return self.test, "test"
        if self.validation is not None:
            return self.validation, "validation"
        raise ValueError(
            "This data has no test split and no validation split: pass a test folder (--data-dir TEST_FOLDER, "
            "a tree of the same class folders) or keep a validation fraction above 0."
        )


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
        pipeline: `"tf"` (tf.data), `"numpy"` (`kdistill.data.batches.ArrayBatches`, a
            `keras.utils.PyDataset` that needs no TensorFlow) or `"auto"`: tf.data on
            the TensorFlow backend, NumPy batches on JAX and PyTorch. Both give the
            same validation split, the same images and labels (a shuffled training
            pass holds the same examples, in another order) and the same augmentation layers.
    """
    _check_sizes(x_train, y_train, train_limit, test_limit, validation_fraction)
    y_train, num_classes = _checked_values(x_train, y_train, x_test, y_test, class_names)
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
    validation = (
        make(x_train[validation_index], y_train[validation_index], training=False, augment=())
        if len(validation_index)
        else None
    )
    test = None
    if x_test is not None:
        if test_limit:
            x_test, y_test = x_test[:test_limit], y_test[:test_limit]
        test = make(x_test, np.asarray(y_test).astype("int32"), training=False, augment=())
        counts["test"] = len(x_test)
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    plain = make(train_x, train_y, training=False, augment=())
    return Splits(train, validation, test, num_classes, names, (image_size, image_size, 3), counts, train_plain=plain)


def _check_sizes(x_train, y_train, train_limit, test_limit, validation_fraction: float) -> None:
    """`from_arrays`' checks of how many images there are and how many to take, before any work."""
    if len(x_train) != len(y_train):
        raise ValueError(f"x_train has {len(x_train)} images but y_train has {len(y_train)} labels.")
    if not len(x_train):
        raise ValueError("The training arrays are empty (0 images): pass the images to train on.")
    for name, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
            raise ValueError(f"{name} must be a positive number of images (or None for all), received {limit!r}.")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), received {validation_fraction}.")


def _checked_values(x_train, y_train, x_test, y_test, class_names) -> tuple[np.ndarray, int]:
    """`from_arrays`' checks of the pixels (finite) and the labels (in range); returns the training labels as int32 and the number of classes."""
    check_finite("training", x_train)
    if x_test is not None:
        check_finite("test", x_test)
    y_train = np.asarray(y_train).astype("int32").reshape(-1)
    num_classes = len(class_names) if class_names is not None else int(y_train.max()) + 1
    check_labels("training", y_train, num_classes, allow_unlabeled=True)
    if y_test is not None and len(y_test):
        check_labels("test", np.asarray(y_test).astype("int64"), num_classes)
    return y_train, num_classes


def _split(
    count: int, seed: int, validation_fraction: float, train_limit: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(validation, train, rest)` example indices: a fixed permutation by `seed`; `rest` is what `train_limit` leaves out."""
    order = np.random.default_rng(seed).permutation(count)
    n_validation = int(round(count * validation_fraction))
    validation_index, train_index = order[:n_validation], order[n_validation:]
    if not train_limit:
        return validation_index, train_index, train_index[:0]
    return validation_index, train_index[:train_limit], train_index[train_limit:]


def _pipeline_maker(pipeline: str, **common):
    """`make(x, y, training=..., augment=...)`: tf.data batches (`tf_pipeline.image_pipeline`) or NumPy batches (`batches.image_batches`), as `pipeline` says."""
    if resolve_pipeline(pipeline) == "tf":
        return lambda x, y, **options: tf_pipeline.image_pipeline((x, y), **options, **common)
    return lambda x, y, **options: batches.image_batches(x, y, **options, **common)


def _transfer_images(transfer, x_train: np.ndarray, rest: np.ndarray) -> np.ndarray | None:
    """The unlabelled images a `transfer` option names (see `from_arrays`)."""
    if transfer is None:
        return None
    if isinstance(transfer, str):
        if transfer != "rest":
            raise ValueError(
                f"transfer must be 'rest' (the training images beyond train_limit) or an array of images, received {transfer!r}."
            )
        if not len(rest):
            raise ValueError(
                "transfer='rest' adds the training images beyond train_limit, but there are none: set train_limit below "
                f"the {len(x_train)} training images."
            )
        return x_train[rest]
    images = np.asarray(transfer)
    if images.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"Transfer images have shape {images.shape[1:]} per image, the training images {x_train.shape[1:]}: give them the same raw size."
        )
    return images
