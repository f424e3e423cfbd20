"""A user's segmentation data: a folder of images and a folder of PNG masks with the same file names.

The common layout (Pascal VOC's `JPEGImages/` and `SegmentationClass/`, most
exported annotation tools):

    images/scene_001.jpg    masks/scene_001.png
    images/scene_002.png    masks/scene_002.png

A mask is matched to its image by file name without the suffix, and holds one
class index per pixel: a grey (`L`) or palette (`P`, as VOC's) PNG, whose
values are read as they are stored (a palette PNG's indices, not its colours),
with the ignore label (255 by default) for pixels no loss or metric counts.
Everything is checked before training, and each problem is one line naming the
file: an image without a mask, a mask whose size differs from its image, a
colour (RGB) mask, or a class value outside the classes other than the ignore
label. Images are decoded as the image-folder readers do (`kdistill.data.images`)
and resized bilinearly; masks by nearest neighbour, so no new class values appear.

Example:
    >>> import numpy as np
    >>> resize_mask(np.array([[0, 1], [2, 255]], "uint8"), 4).tolist()[3]
    [2, 2, 255, 255]
"""

from __future__ import annotations

import os

import numpy as np

from kdistill.data import images as image_io
from kdistill.errors import UserError

__all__ = ["IGNORE_LABEL", "resize_mask", "read_mask", "read_mask_folders"]

#: the mask value of pixels to skip (as `FeatureDistiller(ignore_label=...)`)
IGNORE_LABEL = 255


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A `(height, width)` mask at `(size, size)` by nearest neighbour at half-pixel centres (`tf.image.resize(method="nearest")`)."""
    mask = np.asarray(mask)
    rows = np.minimum(((np.arange(size) + 0.5) * mask.shape[0] / size).astype("int64"), mask.shape[0] - 1)
    columns = np.minimum(((np.arange(size) + 0.5) * mask.shape[1] / size).astype("int64"), mask.shape[1] - 1)
    return mask[rows][:, columns]


def read_mask(path: str) -> np.ndarray:
    """The class indices `(height, width)` of a grey or palette PNG mask (a palette's indices, not its colours).

    Raises:
        UserError: for a colour mask, naming the file and the fix.
    """
    from PIL import Image

    with Image.open(path) as mask:
        mask.load()
        if mask.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
            raise UserError(
                f"Mask {path!r} is a {mask.mode} image; masks hold one class index per pixel (a grey or palette PNG). "
                "Convert colour-coded masks to indices first (one value per class, 255 for pixels to ignore)."
            )
        return np.asarray(mask).astype("int64")


def _pairs(images_dir: str, masks_dir: str) -> list[tuple[str, str]]:
    """`(image path, mask path)` for every image of `images_dir` (sorted, hidden files left out); an image without a mask is an error."""
    for folder, what in ((images_dir, "images"), (masks_dir, "masks")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"The {what} folder {folder!r} does not exist. Expected a folder of images and a folder of PNG masks "
                "with the same file names."
            )
    masks = {
        os.path.splitext(name)[0]: name
        for name in os.listdir(masks_dir)
        if name.lower().endswith(".png") and not name.startswith(".")
    }
    names = sorted(
        name
        for name in os.listdir(images_dir)
        if name.lower().endswith(image_io.IMAGE_SUFFIXES) and not name.startswith(".")
    )
    if not names:
        raise FileNotFoundError(f"{images_dir!r} holds no images ({', '.join(image_io.IMAGE_SUFFIXES)}).")
    pairs = []
    for name in names:
        stem = os.path.splitext(name)[0]
        if stem not in masks:
            raise UserError(
                f"Image {os.path.join(images_dir, name)!r} has no mask: expected {os.path.join(masks_dir, stem + '.png')!r}. "
                "Add its mask or move the image out of the folder."
            )
        pairs.append((os.path.join(images_dir, name), os.path.join(masks_dir, masks[stem])))
    return pairs


def _check_mask(path: str, mask: np.ndarray, image_shape: tuple, num_classes: int, ignore_label: int | None) -> None:
    if mask.shape != tuple(image_shape[:2]):
        raise UserError(
            f"Mask {path!r} is {mask.shape[1]}x{mask.shape[0]} but its image is {image_shape[1]}x{image_shape[0]} "
            "(width x height): a mask labels each pixel of its image, so both must have one size."
        )
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != (ignore_label if ignore_label is not None else -1))]
    if len(bad):
        raise UserError(
            f"Mask {path!r} holds value(s) {', '.join(str(v) for v in bad[:5].tolist())} outside the {num_classes} classes "
            f"[0, {num_classes}) and the ignore label {ignore_label}: give num_classes to cover them, or map them to "
            "the ignore label."
        )


def read_mask_folders(
    images_dir: str,
    masks_dir: str,
    num_classes: int,
    image_size: int | None = None,
    ignore_label: int | None = IGNORE_LABEL,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images and their masks from two folders, checked and (when `image_size` is given) resized.

    Args:
        images_dir: a folder of images (`.jpg .jpeg .png .bmp .gif`).
        masks_dir: a folder of PNG masks, one per image, with the image's file name (and `.png`).
        num_classes: the number of classes (background included); mask values
            must lie in `[0, num_classes)` or be the ignore label.
        image_size: the square side to resize to (images bilinear, masks
            nearest); None keeps the files' size, which must then be one size.
        ignore_label: the mask value of pixels to skip (None: none).

    Returns:
        `(images, masks, file names)`: float32 `(N, S, S, 3)` pixels in [0,
        255], uint8 (or int32 for values above 255) masks `(N, S, S)`, and the
        images' file names.

    Raises:
        UserError: for an image without a mask, a mask of another size than its
            image, a colour mask, a value outside the classes, or files of
            several sizes without `image_size`; each names the file.
        FileNotFoundError: for a missing folder or a folder without images.
    """
    images, masks, names = [], [], []
    for image_path, mask_path in _pairs(images_dir, masks_dir):
        pixels, mask = image_io.decode(image_path), read_mask(mask_path)
        _check_mask(mask_path, mask, pixels.shape, num_classes, ignore_label)
        if image_size is not None:
            pixels, mask = image_io.resize(pixels, image_size), resize_mask(mask, image_size)
        elif images and pixels.shape != images[0].shape:
            raise UserError(
                f"Image {image_path!r} is {pixels.shape[1]}x{pixels.shape[0]} but {names[0]!r} is {images[0].shape[1]}x"
                f"{images[0].shape[0]}: give image_size to resize them all to one size."
            )
        images.append(pixels.astype("float32"))
        masks.append(mask)
        names.append(os.path.basename(image_path))
    stacked = np.stack(masks)
    return np.stack(images), stacked.astype("uint8" if stacked.max() <= 255 else "int32"), names
