"""Segmentation data: the training and test images and masks that `--data` names, and unlabelled images added to them.

Data:
    scenes                      the offline synthetic scenes (`kdistill.data.load_scenes`) from the Fashion-MNIST files
                                in `--data-dir`; `--train-limit` / `--test-limit` scenes (default 2000 / 500) of `--image-size`
    masks:FOLDER                `FOLDER/images` and `FOLDER/masks` (PNG masks with the images' file names); a
                                `FOLDER/test/images` + `FOLDER/test/masks` pair is the test split, else the last fifth
    masks:IMAGES_DIR,MASKS_DIR  the same with the two folders named

Unlabelled images (a transfer set only the teacher labels) get masks that hold only the ignore label:
`add_unlabelled_scenes` draws new scenes, `with_transfer_images` reads a `.npy` file (`transfer_data`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from kdistill.errors import UserError

__all__ = ["MaskSplits", "is_mask_data", "load", "add_unlabelled_scenes", "with_transfer_images"]

_SCENE_COUNTS = (2000, 500)  # training and test scenes when no limit is given


class MaskSplits(NamedTuple):
    """Images `(N, S, S, 3)` in [0, 255] and integer masks `(N, S, S)` of the training and test splits, and the class names."""

    train_images: np.ndarray
    train_masks: np.ndarray
    test_images: np.ndarray
    test_masks: np.ndarray
    class_names: list


def is_mask_data(data: str | None) -> bool:
    """Whether a data source holds masks: `scenes` or `masks:...`."""
    return isinstance(data, str) and (data == "scenes" or data.startswith("masks:"))


def _mask_folders(spec: str) -> tuple[tuple[str, str], tuple[str, str] | None]:
    """(images, masks) folders of the training split and of the test split (None: none) that `masks:...` names."""
    parts = spec[len("masks:") :].split(",")
    if len(parts) == 2:
        return (parts[0], parts[1]), None
    if len(parts) != 1 or not parts[0]:
        raise UserError(
            f"--data {spec!r}: write masks:FOLDER (with FOLDER/images and FOLDER/masks) or masks:IMAGES_DIR,MASKS_DIR."
        )
    folder = parts[0]
    test = os.path.join(folder, "test")
    has_test = os.path.isdir(os.path.join(test, "images"))
    return (os.path.join(folder, "images"), os.path.join(folder, "masks")), (
        (os.path.join(test, "images"), os.path.join(test, "masks")) if has_test else None
    )


def _class_names(folder: str, masks: np.ndarray, num_classes: int | None, ignore_label: int | None) -> list:
    """Names from `labels.txt` beside the masks folder, else the numbers `0..classes-1` (classes from the model or the masks)."""
    labels = os.path.join(os.path.dirname(os.path.normpath(folder)), "labels.txt")
    if os.path.exists(labels):
        with open(labels) as file:
            return [line.strip() for line in file if line.strip()]
    values = masks[masks != ignore_label] if ignore_label is not None else masks
    return [str(index) for index in range(num_classes or int(values.max()) + 1)]


def load(
    data: str,
    data_dir: str | None = None,
    image_size: int | None = 32,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
    num_classes: int | None = None,
    ignore_label: int | None = 255,
) -> MaskSplits:
    """The training and test images and masks that `data` names (`scenes` or `masks:...`, see the module docstring)."""
    from kdistill.data import load_scenes, read_mask_folders

    if data == "scenes":
        train, test = load_scenes(
            data_dir,
            train_count=train_limit or _SCENE_COUNTS[0],
            test_count=test_limit or _SCENE_COUNTS[1],
            size=image_size or 64,
            seed=seed,
        )
        return MaskSplits(train.images, train.masks, test.images, test.masks, train.class_names)
    if not is_mask_data(data):
        raise UserError(f"Segmentation reads masks: --data scenes or --data masks:FOLDER, received {data!r}.")
    (images_dir, masks_dir), test_dirs = _mask_folders(data)
    classes = num_classes or 256  # without a model the masks tell the classes (values up to 254, 255 the ignore label)
    images, masks, _ = read_mask_folders(images_dir, masks_dir, classes, image_size, ignore_label)
    if test_dirs is not None:
        test_images, test_masks, _ = read_mask_folders(*test_dirs, classes, image_size, ignore_label)
    else:
        order = np.random.default_rng(seed).permutation(len(images))
        cut = len(images) - max(1, len(images) // 5) if len(images) > 1 else len(images)
        images, masks, test_images, test_masks = (
            images[order[:cut]],
            masks[order[:cut]],
            images[order[cut:]],
            masks[order[cut:]],
        )
    names = _class_names(masks_dir, np.concatenate([masks, test_masks]), num_classes, ignore_label)
    images, masks = images[:train_limit] if train_limit else images, masks[:train_limit] if train_limit else masks
    return MaskSplits(
        images,
        masks,
        test_images[:test_limit] if test_limit else test_images,
        test_masks[:test_limit] if test_limit else test_masks,
        names,
    )


def add_unlabelled_scenes(
    splits: MaskSplits, count: int, data_dir: str | None = None, seed: int = 100, ignore_label: int = 255
) -> MaskSplits:
    """`splits` with `count` more training scenes whose masks are all `ignore_label`: a transfer set that only a teacher labels.

    The scenes are drawn from the Fashion-MNIST training items with their own `seed` (other scenes than the labelled ones).
    An image without a valid pixel gets no cross-entropy and is distilled over all its pixels (`kdistill.losses.dense`).
    """
    from kdistill.data import load_scenes

    if count <= 0:
        return splits
    extra = load_scenes(data_dir, train_count=count, test_count=1, size=splits.train_images.shape[1], seed=seed)[0]
    masks = np.full(extra.masks.shape, ignore_label, splits.train_masks.dtype)
    return splits._replace(
        train_images=np.concatenate([splits.train_images, extra.images]),
        train_masks=np.concatenate([splits.train_masks, masks]),
    )


def with_transfer_images(
    splits: MaskSplits, path: str | None, ignore_label: int | None = 255
) -> tuple[MaskSplits, int]:
    """`splits` with the unlabelled images of the `.npy` file `path` (`transfer_data`) added to training, their masks all
    ignored (only the teacher labels them); returns them and how many were added (0 without `path`).

    Raises:
        UserError: for `transfer_data: rest` (masks have no images beyond the training ones: give a .npy file), or
            images of another shape than the training images.
    """
    if not path:
        return splits, 0
    if not path.endswith(".npy"):
        raise UserError(
            f"For segmentation, transfer_data is a .npy file of unlabelled images (N, H, W, 3) at the training images' "
            f"size, received {path!r}; scenes for it: kdistill.run.segmentation_data.add_unlabelled_scenes."
        )
    images = np.load(path)
    if images.ndim != 4 or images.shape[1:] != splits.train_images.shape[1:]:
        raise UserError(
            f"The transfer images in {path!r} have shape {images.shape}, but the training images are "
            f"(N, {', '.join(map(str, splits.train_images.shape[1:]))}): resize them to that size (or set image_size)."
        )
    fill, dtype = (ignore_label, splits.train_masks.dtype) if ignore_label is not None else (-1, "int32")
    masks = np.full(images.shape[:3], fill, dtype)
    return splits._replace(
        train_images=np.concatenate([splits.train_images, images.astype(splits.train_images.dtype)]),
        train_masks=np.concatenate([splits.train_masks.astype(dtype), masks]),
    ), len(images)
