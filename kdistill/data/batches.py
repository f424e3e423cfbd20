"""Batches of NumPy arrays for any Keras backend: a `keras.utils.PyDataset`, no TensorFlow.

`ArrayBatches` slices in-memory (or memory-mapped) arrays into batches,
reshuffles them every pass from a seed, and applies a per-batch transform
(resizing, grey to RGB, Keras augmentation layers). `kdistill.data` builds its
pipelines from it on the JAX and PyTorch backends, and the teacher cache trains
from it there; on TensorFlow both use tf.data (`kdistill.data.tf_pipeline`).
This module imports no TensorFlow.

Example:
    >>> import numpy as np
    >>> from kdistill.data.batches import ArrayBatches
    >>> batches = ArrayBatches(np.arange(10).reshape(10, 1), np.arange(10), batch_size=4)
    >>> len(batches), [y.tolist() for _, y in batches]
    (3, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import keras
import numpy as np

from kdistill.data import images as image_io
from kdistill.errors import shown

__all__ = [
    "ArrayBatches",
    "AUGMENTATIONS",
    "augmentation",
    "image_batches",
    "read_image_folder",
    "to_model_images",
    "set_pass",
    "unreadable_images",
    "unreadable_message",
]

AUGMENTATIONS = ("flip", "crop", "randaugment", "mixup", "cutmix")


def to_model_images(images: Any, image_size: int) -> np.ndarray:
    """float32 RGB batches of `image_size`: grey gains three channels, other sizes are resized bilinearly (as tf.image.resize).

    Example:
        >>> to_model_images(np.zeros((2, 28, 28), "uint8"), 32).shape
        (2, 32, 32, 3)
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim == 3:  # (batch, H, W) grey
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.shape[1] != image_size or images.shape[2] != image_size:
        resized = keras.ops.image.resize(
            images, (image_size, image_size), interpolation="bilinear", data_format="channels_last"
        )
        images = np.asarray(keras.ops.convert_to_numpy(resized), dtype="float32")
    return images


class ArrayBatches(keras.utils.PyDataset):
    """`(inputs, labels)` batches of arrays, shuffled per pass from a seed, for `fit`, `evaluate` and `predict`.

    Args:
        inputs: an array, or a nested dict of arrays with the same first dimension
            (e.g. `{"images": x, "teacher": {"logits": t}}`); memory maps are read
            one batch at a time.
        labels: one label per example.
        batch_size: examples per batch (the last batch of a pass may be smaller).
        shuffle: draw a new order every pass, from `seed` and the pass number: the
            same seed gives the same orders.
        seed: the shuffling seed.
        transform: `fn(inputs, labels) -> (inputs, labels)` applied to each batch
            (resizing, augmentation); gets NumPy arrays, returns arrays or tensors.
        repeat: endless (then pass `steps_per_epoch` to `fit`); each pass over the
            data is reshuffled.
        indices: batch only these examples (e.g. the labelled part of a teacher
            cache); the arrays are not copied.
        **kwargs: `keras.utils.PyDataset` options (`workers`, `use_multiprocessing`,
            `max_queue_size`).
    """

    def __init__(
        self,
        inputs: Any,
        labels: Any,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        transform: Callable | None = None,
        repeat: bool = False,
        indices: Any = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, received {batch_size!r}.")
        self.inputs, self.labels = inputs, np.asarray(labels)
        sizes = {int(np.shape(array)[0]) for array in keras.tree.flatten(inputs)}
        if sizes != {len(self.labels)}:
            raise ValueError(
                f"The inputs hold {sorted(sizes)} examples but there are {len(self.labels)} labels: give one label per example."
            )
        self.index = np.arange(len(self.labels)) if indices is None else np.asarray(indices, dtype="int64").reshape(-1)
        if not len(self.index):
            raise ValueError("No examples to batch (0 labels).")
        if self.index.min() < 0 or self.index.max() >= len(self.labels):
            raise ValueError(
                f"indices must lie in [0, {len(self.labels)}), received values from {self.index.min()} to {self.index.max()}."
            )
        self.batch_size, self.shuffle, self.seed, self.transform, self.repeat = (
            int(batch_size),
            shuffle,
            seed,
            transform,
            repeat,
        )
        self._pass = 0
        self._order = self._order_of(0)
        self._last = (0, self._order)  # an endless dataset's most recent pass and its order

    @property
    def num_batches(self) -> int | None:
        return None if self.repeat else self.batches_per_pass

    @property
    def batches_per_pass(self) -> int:
        """Batches in one pass over the examples."""
        return -(-len(self.index) // self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_pass

    def _order_of(self, number: int) -> np.ndarray:
        if not self.shuffle:
            return self.index
        return self.index[np.random.default_rng([self.seed, number]).permutation(len(self.index))]

    def order(self, number: int = 0) -> np.ndarray:
        """The example indices of pass `number`, in the order they are batched."""
        return self._order_of(number)

    def rows(self, index: int) -> tuple[np.ndarray, int]:
        """The example indices of batch `index` and the number of the pass it belongs to."""
        number, position = divmod(int(index), self.batches_per_pass)
        if not self.repeat:
            if index < 0 or number:
                raise IndexError(f"batch {index} of {self.batches_per_pass}")
            number = self._pass
        if number == self._pass:
            order = self._order
        else:
            if self._last[0] != number:
                self._last = (number, self._order_of(number))
            order = self._last[1]
        return order[position * self.batch_size : (position + 1) * self.batch_size], number

    @staticmethod
    def read_rows(array, rows: np.ndarray) -> np.ndarray:
        """`array[rows]`, reading a memory map in ascending order (one sweep) and returning the rows in the asked order."""
        ascending = np.sort(rows)
        return np.asarray(array[ascending])[np.searchsorted(ascending, rows)]

    def __getitem__(self, index: int):
        rows, _ = self.rows(index)
        inputs = keras.tree.map_structure(lambda array: self.read_rows(array, rows), self.inputs)
        labels = self.labels[rows]
        if self.transform is not None:
            return self.transform(inputs, labels)
        return inputs, labels

    def on_epoch_end(self) -> None:
        """Reshuffles for the next pass (finite datasets; endless ones reshuffle by pass number)."""
        if not self.repeat:
            self.set_pass(self._pass + 1)

    def set_pass(self, number: int) -> None:
        """Makes the next pass pass `number` (its order), e.g. epoch k of a resumed run (finite datasets)."""
        if not self.repeat:
            self._pass = int(number)
            self._order = self._order_of(self._pass)


def set_pass(dataset, number: int) -> bool:
    """Makes the next pass over a kdistill training dataset pass `number`; False when it has no pass counter.

    Works on `ArrayBatches` (and `ViewBatches`) and on tf.data pipelines built
    with `tf_pipeline.shuffled_by_pass`: a resumed run calls it at each epoch's start so
    that epoch k reads its data in epoch k's order.

    Example:
        >>> import numpy as np
        >>> batches = ArrayBatches(np.arange(6), np.arange(6), batch_size=6, shuffle=True, seed=1)
        >>> third = batches.order(2).tolist()
        >>> set_pass(batches, 2), batches[0][1].tolist() == third
        (True, True)
    """
    if isinstance(dataset, ArrayBatches):
        dataset.set_pass(number)
        return True
    counter = getattr(dataset, "kdistill_pass", None)
    if counter is None:
        return False
    counter.assign(int(number))
    return True


def augmentation(names: Sequence[str], image_size: int, num_classes: int, seed: int = 0):
    """Keras 3 augmentation layers by name: flip, crop, randaugment, mixup, cutmix.

    Returns:
        `(per_image, per_batch)`: a `keras.Sequential` applied to image
        batches (flip, crop, randaugment) and a list of batch-level layers that
        mix images and one-hot labels (mixup, cutmix). Either may be empty.
    """
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"Unknown augmentation {shown(unknown)}; known: {', '.join(AUGMENTATIONS)}.")
    per_image = []
    if "flip" in names:
        per_image.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if "crop" in names:
        pad = max(2, image_size // 8)
        per_image.append(keras.layers.ZeroPadding2D(pad))
        per_image.append(keras.layers.RandomCrop(image_size, image_size, seed=seed))
    if "randaugment" in names:
        per_image.append(keras.layers.RandAugment(value_range=(0, 255), seed=seed))
    per_batch = []
    if "mixup" in names:
        per_batch.append(keras.layers.MixUp(seed=seed))
    if "cutmix" in names:
        per_batch.append(keras.layers.CutMix(seed=seed))
    return (keras.Sequential(per_image, name="augmentation") if per_image else None), per_batch


def image_batches(
    images: np.ndarray,
    labels: np.ndarray,
    image_size: int,
    batch_size: int,
    training: bool,
    augment: Sequence[str],
    num_classes: int,
    seed: int = 0,
) -> ArrayBatches:
    """Model-ready batches of raw images: float32 RGB of `image_size`, shuffled and augmented when `training`.

    The backend-neutral twin of `tf_pipeline.image_pipeline`: the same
    conversion and the same Keras augmentation layers (`augmentation`).
    """

    per_image, per_batch = augmentation(augment, image_size, num_classes, seed) if training and augment else (None, [])

    def transform(x, y):
        x, y = to_model_images(x, image_size), y.astype("int32")
        if per_image is not None:
            x = keras.ops.convert_to_numpy(per_image(x, training=True))
        if per_batch:  # MixUp / CutMix mix labels too: labels become one-hot
            sample = {"images": x, "labels": np.eye(num_classes, dtype="float32")[y]}
            for layer in per_batch:
                sample = layer(sample, training=True)
            x, y = (keras.ops.convert_to_numpy(sample[key]) for key in ("images", "labels"))
        return x, y

    return ArrayBatches(images, labels, batch_size, shuffle=training, seed=seed, transform=transform)


def read_image_folder(
    folder: str, class_names: Sequence[str], image_size: int, skip_unreadable: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """`<folder>/<class>/<image>` read by Pillow as RGB of `image_size` (bilinear), for machines without TensorFlow.

    The files, pixels and labels are those of the tf.data reader `tf_pipeline.read_image_folder` (see `kdistill.data.images`).

    Raises:
        ValueError: naming the files Pillow cannot read, unless `skip_unreadable` (then they are logged and left out).
        FileNotFoundError: when there are no images.
    """
    xs, ys, unreadable = [], [], []
    for path, label in zip(*image_io.image_files(folder, class_names)):
        try:
            xs.append(image_io.resize(image_io.decode(path), image_size))
        except (OSError, SyntaxError, ValueError):  # Pillow: truncated, corrupt or not an image
            unreadable.append(path)
            continue
        ys.append(label)
    if unreadable:
        if not skip_unreadable:
            raise ValueError(unreadable_message(folder, unreadable))
        logging.getLogger(__name__).warning(
            "Skipped %d unreadable image(s) in %s, e.g. %s", len(unreadable), folder, unreadable[0]
        )
    if not xs:
        raise FileNotFoundError(f"No images found under {folder!r} (jpeg, png, bmp, gif).")
    return np.stack(xs), np.asarray(ys, dtype="int32")


def unreadable_images(folder: str, class_names: Sequence[str]) -> list[str]:
    """The image files under `folder/<class>/` that Pillow cannot decode (corrupt or truncated)."""
    bad = []
    for path in image_io.image_files(folder, class_names)[0]:
        try:
            image_io.decode(path)
        except (OSError, SyntaxError, ValueError):
            bad.append(path)
    return bad


def unreadable_message(folder: str, paths: Sequence[str]) -> str:
    shown = ", ".join(repr(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return (
        f"{len(paths)} image file(s) under {folder!r} cannot be decoded (corrupt or truncated): {shown}. Fix or delete them, "
        "or skip them with --skip-unreadable (Python: skip_unreadable=True)."
    )
