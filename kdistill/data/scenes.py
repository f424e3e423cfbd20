"""Offline segmentation scenes: Fashion-MNIST items placed on a canvas, with a mask per pixel.

Each scene is a `size` x `size` canvas of dim noise with one to `max_items`
28x28 items pasted at random places (later items over earlier ones). A pixel
belongs to an item where the item is bright (grey value above `brightness`):
there the mask holds the item's class + 1, elsewhere 0 (background). So the
mask is exactly the bright pixels of the image, labelled by which item put them
there, and the classes are `SCENE_CLASSES`: background and the ten Fashion-MNIST
classes. Everything is drawn from one seeded generator: the same items, seed and
options give the same scenes.

Example:
    >>> import numpy as np
    >>> items = np.full((3, 28, 28), 200, "uint8"); labels = np.array([0, 4, 9])
    >>> scenes = make_scenes(items, labels, count=2, size=32, seed=0)
    >>> scenes.images.shape, scenes.masks.shape, scenes.masks.dtype.name, scenes.class_names[:2]
    ((2, 32, 32, 3), (2, 32, 32), 'uint8', ['background', 'T-shirt/top'])
    >>> bool(((scenes.masks > 0) == (scenes.images[..., 0] > 64)).all())
    True
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kdistill.data.sources import FASHION_MNIST_CLASSES, load_fashion_mnist

__all__ = ["SCENE_CLASSES", "Scenes", "make_scenes", "load_scenes"]

#: the classes of a scene mask: 0 is the background, `c + 1` the Fashion-MNIST class `c`
SCENE_CLASSES = ["background", *FASHION_MNIST_CLASSES]


class Scenes(NamedTuple):
    """Scenes and their masks: `images` float32 `(N, S, S, 3)` in [0, 255], `masks` uint8 `(N, S, S)`, and `class_names`."""

    images: np.ndarray
    masks: np.ndarray
    class_names: list[str]


def _check(items: np.ndarray, labels: np.ndarray, count: int, size: int, max_items: int, brightness: int) -> None:
    if items.ndim != 3 or len(items) != len(labels) or not len(items):
        raise ValueError(
            f"items must be grey images (N, height, width) with one label each, received items of shape {items.shape} "
            f"and {len(labels)} labels (e.g. kdistill.data.load_fashion_mnist()[0])."
        )
    if size < max(items.shape[1:]):
        raise ValueError(
            f"size={size} is smaller than an item ({items.shape[1]}x{items.shape[2]}); use size >= {max(items.shape[1:])}, e.g. 64."
        )
    if (
        isinstance(count, bool)
        or not isinstance(count, int)
        or count < 1
        or not isinstance(max_items, int)
        or max_items < 1
    ):
        raise ValueError(
            f"count and max_items must be positive integers, received count={count!r}, max_items={max_items!r}."
        )
    if not 0 < brightness < 255:
        raise ValueError(
            f"brightness must lie in (0, 255) (the grey value above which an item's pixel is its class), received {brightness!r}."
        )
    if labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(
            f"item labels must be Fashion-MNIST classes 0..9, received values from {labels.min()} to {labels.max()}."
        )


def make_scenes(
    items: np.ndarray,
    labels: np.ndarray,
    count: int,
    size: int = 64,
    max_items: int = 4,
    seed: int = 0,
    brightness: int = 64,
) -> Scenes:
    """`count` scenes of one to `max_items` items each, drawn from `items` with a seeded generator.

    Args:
        items: grey items `(N, h, w)` uint8 (Fashion-MNIST's 28x28 images).
        labels: their classes `(N,)` in 0..9.
        count: how many scenes.
        size: the square canvas' side, at least the items' side.
        max_items: most items per scene (each scene draws 1..max_items).
        seed: the generator's seed: the same seed gives the same scenes.
        brightness: grey value above which an item's pixel is its class (the
            background noise stays below half of it, so it is never an item).

    Returns:
        `Scenes(images, masks, class_names)`: images float32 `(count, size,
        size, 3)` (grey repeated to RGB), masks uint8 `(count, size, size)`
        with values in `0..10`, and `SCENE_CLASSES`.

    Raises:
        ValueError: for items that are not grey images, a canvas smaller than
            an item, labels outside 0..9, or counts that are not positive.
    """
    items, labels = np.asarray(items), np.asarray(labels).reshape(-1)
    _check(items, labels, count, size, max_items, brightness)
    rng = np.random.default_rng(seed)
    height, width = items.shape[1:]
    canvas = rng.integers(0, brightness // 2, (count, size, size)).astype("uint8")
    masks = np.zeros((count, size, size), "uint8")
    for scene in range(count):
        for index in rng.integers(0, len(items), rng.integers(1, max_items + 1)):
            top, left = rng.integers(0, size - height + 1), rng.integers(0, size - width + 1)
            bright = items[index] > brightness
            window = (slice(top, top + height), slice(left, left + width))
            canvas[scene][window] = np.where(bright, items[index], canvas[scene][window])
            masks[scene][window] = np.where(bright, labels[index] + 1, masks[scene][window])
    images = np.repeat(canvas[..., None], 3, axis=-1).astype("float32")
    return Scenes(images, masks, list(SCENE_CLASSES))


def load_scenes(
    data_dir: str | None = None,
    train_count: int = 2000,
    test_count: int = 500,
    size: int = 64,
    max_items: int = 4,
    seed: int = 0,
) -> tuple[Scenes, Scenes]:
    """Training and test scenes from the offline Fashion-MNIST files: training scenes from training items, test scenes from test items.

    Args:
        data_dir: where the Fashion-MNIST IDX files are (see `kdistill.data.load_fashion_mnist`).
        train_count, test_count: how many scenes of each split.
        size, max_items: see `make_scenes`.
        seed: the training scenes' seed; the test scenes use `seed + 1`.

    Returns:
        `(train, test)`, each `Scenes`.
    """
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(data_dir)
    return (
        make_scenes(x_train, y_train, train_count, size=size, max_items=max_items, seed=seed),
        make_scenes(x_test, y_test, test_count, size=size, max_items=max_items, seed=seed + 1),
    )
