"""Reading an image folder the same way on every path: which files count, and how a file becomes RGB pixels.

`kdistill.data.tf_pipeline` decodes with TensorFlow (`decode_tf`, the tf.data pipeline)
and `kdistill.data.batches` with Pillow (`decode`, JAX, PyTorch and
`skip_unreadable`); both list the files with `image_files` and resize with
bilinear interpolation at half-pixel centres (`tf.image.resize`, and its NumPy
twin `resize`), so the two give the same pixels (within one grey level of
rounding) and the same labels:

* class folders and files whose names start with a dot are ignored (`.git/`, `.DS_Store`, `._x.png`);
* files are found in each class folder and its sub-folders, sorted; only `.jpg .jpeg .png .bmp .gif` count;
* every image becomes 8-bit RGB: grey is repeated, alpha is dropped (not blended), a palette is looked up,
  CMYK is converted as Pillow does, 16-bit PNGs keep their high byte (TensorFlow's `decode_png` for uint8),
  a GIF gives its first frame, JPEGs use the accurate integer DCT on both paths.

A leaf of the `data` wing: it imports nothing from kdistill.

Example:
    >>> import numpy as np
    >>> resize(np.arange(4, dtype="uint8").reshape(2, 2, 1), 4)[..., 0].round(2).tolist()[0]
    [0.0, 0.25, 0.75, 1.0]
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "class_folders", "image_files", "decode", "resize", "decode_tf"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
#: Pillow's modes of a 16-bit grey PNG
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _hidden(name: str) -> bool:
    return name.startswith(".")


def class_folders(path: str) -> list[str]:
    """The class folder names under `path`, sorted, hidden ones (`.name`) left out."""
    return sorted(name for name in os.listdir(path) if not _hidden(name) and os.path.isdir(os.path.join(path, name)))


def image_files(folder: str, class_names: Sequence[str]) -> tuple[list[str], list[int]]:
    """Every image file under `folder/<class>/` (sub-folders included, hidden names left out), sorted, and its class index."""
    paths, labels = [], []
    for label, name in enumerate(class_names):
        found = []
        for root, directories, files in os.walk(os.path.join(folder, name)):
            directories[:] = [d for d in directories if not _hidden(d)]  # not walked into
            found += [
                os.path.join(root, file)
                for file in files
                if not _hidden(file) and file.lower().endswith(IMAGE_SUFFIXES)
            ]
        paths += sorted(found)
        labels += [label] * len(found)
    return paths, labels


def decode(path: str) -> np.ndarray:
    """`(height, width, 3)` uint8 RGB pixels of an image file, read by Pillow as TensorFlow's `decode_image(channels=3)` reads it.

    Raises:
        OSError, SyntaxError, ValueError: Pillow's errors for a truncated, corrupt or non-image file.
    """
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in _SIXTEEN_BIT:  # Pillow's convert("RGB") clips 16-bit values to 255 (black or white)
            grey = (np.asarray(image).astype("uint32") >> 8).astype("uint8")
            return np.repeat(grey[..., None], 3, axis=-1)
        return np.asarray(image.convert("RGB"))


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """float32 `(size, size, channels)`: bilinear at half-pixel centres, no antialiasing (as `tf.image.resize(method="bilinear")`)."""
    pixels = np.asarray(pixels, dtype="float32")
    for axis in (0, 1):
        count = pixels.shape[axis]
        if count == size:
            continue
        position = np.maximum((np.arange(size, dtype="float32") + 0.5) * (count / size) - 0.5, 0.0)
        low = np.floor(position).astype("int64")
        high = np.minimum(low + 1, count - 1)
        weight = (position - low).reshape((-1, 1, 1) if axis == 0 else (1, -1, 1))
        pixels = np.take(pixels, low, axis=axis) * (1 - weight) + np.take(pixels, high, axis=axis) * weight
    return pixels.astype("float32")


def decode_tf(path, size: int):
    """The TensorFlow twin of `decode` + `resize`: a float32 `(size, size, 3)` tensor from a file path tensor (for `Dataset.map`)."""
    import tensorflow as tf

    contents = tf.io.read_file(path)
    pixels = tf.cond(
        # TensorFlow's default JPEG DCT ("INTEGER_FAST") differs from Pillow's by up to 6 grey levels
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )
    return tf.image.resize(pixels, (size, size), method="bilinear")
