"""Segmentation sets from TensorFlow Datasets: the images and masks of a prepared TFDS folder (e.g. `oxford_iiit_pet`).

Run time never downloads (see `kdistill.data.sources.tfds_builder`): the set is
prepared on a machine with network (`tfds build oxford_iiit_pet --data_dir DIR`)
and read here from DIR. A known set's mask feature, the offset from its stored
values to class indices and its class names are data in `SEGMENTATION_SETS`;
any other set names them by argument. Images are resized bilinearly and masks
by nearest neighbour, so no new class values appear.

Example:
    >>> SEGMENTATION_SETS["oxford_iiit_pet"]["class_names"]
    ['pet', 'background', 'border']
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kdistill.backend import LazyTensorFlow
from kdistill.data.sources import tfds_builder

tf = LazyTensorFlow("kdistill.data's TFDS segmentation reader")

__all__ = ["SEGMENTATION_SETS", "read_tfds_masks"]

#: TFDS segmentation sets kdistill knows: the mask feature, the value added to stored mask values to give class indices,
#: and the class names. Oxford-IIIT Pet stores a trimap 1 (pet), 2 (background), 3 (border), as TensorFlow's tutorial
#: reads it.
SEGMENTATION_SETS = {
    "oxford_iiit_pet": {"mask_key": "segmentation_mask", "offset": -1, "class_names": ["pet", "background", "border"]},
}


def _options(
    name: str, mask_key: str | None, offset: int | None, class_names: Sequence[str] | None
) -> tuple[str, int, list[str] | None]:
    known = SEGMENTATION_SETS.get(name.split(":")[0].split("/")[0], {})
    mask_key = mask_key or known.get("mask_key")
    if mask_key is None:
        raise ValueError(
            f"kdistill does not know the mask feature of the TFDS set {name!r} (it knows {', '.join(SEGMENTATION_SETS)}); "
            "pass mask_key='<feature name>' (and offset, class_names when its values are not class indices)."
        )
    names = class_names if class_names is not None else known.get("class_names")
    return (
        mask_key,
        int(offset if offset is not None else known.get("offset", 0)),
        (list(names) if names is not None else None),
    )


def read_tfds_masks(
    name: str,
    data_dir: str | None = None,
    split: str = "train",
    image_size: int = 128,
    limit: int | None = None,
    mask_key: str | None = None,
    offset: int | None = None,
    class_names: Sequence[str] | None = None,
    image_key: str = "image",
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Images and masks of one split of a prepared TFDS segmentation set, resized to `image_size`.

    Args:
        name: a TFDS name (`"oxford_iiit_pet"`, or with a version `"oxford_iiit_pet:4.0.0"`).
        data_dir: the prepared TFDS folder (default `~/tensorflow_datasets`).
        split: a TFDS split (`"train"`, `"test"`, `"train[:10%]"`).
        image_size: the square side (images bilinear, masks nearest neighbour).
        limit: read at most this many examples.
        mask_key, offset, class_names: the mask feature, the value added to its
            stored values, and the class names; by default those of
            `SEGMENTATION_SETS` for a known set.
        image_key: the image feature.

    Returns:
        `(images, masks, class_names)`: float32 `(N, S, S, 3)` pixels in [0,
        255], uint8 masks `(N, S, S)`, and the class names (None when unknown).

    Raises:
        FileNotFoundError: when the set is not prepared (with the offline steps).
        ValueError: for an unknown mask feature, or mask values below 0 after the offset.
    """
    mask_key, offset, names = _options(name, mask_key, offset, class_names)
    builder = tfds_builder(name, data_dir)
    features = builder.info.features
    for key in (image_key, mask_key):
        if key not in features:
            raise ValueError(
                f"The TFDS set {name!r} has no feature {key!r}; its features: {', '.join(features.keys())}."
            )
    dataset = builder.as_dataset(split=split)
    if limit:
        dataset = dataset.take(limit)

    def resize(example):
        image = tf.image.resize(example[image_key], (image_size, image_size), method="bilinear")
        mask = tf.image.resize(
            tf.reshape(example[mask_key], tf.concat([tf.shape(example[mask_key])[:2], [1]], 0)),
            (image_size, image_size),
            method="nearest",
        )
        return image, tf.cast(mask[..., 0], tf.int32) + offset

    images, masks = [], []
    for image, mask in dataset.map(resize).as_numpy_iterator():
        images.append(image)
        masks.append(mask)
    if not images:
        raise ValueError(f"The split {split!r} of {name!r} holds no examples.")
    masks = np.stack(masks)
    if masks.min() < 0:
        raise ValueError(
            f"Mask values of {name!r} fall below 0 after adding offset={offset} (lowest {masks.min()}); check offset."
        )
    return np.stack(images).astype("float32"), masks.astype("uint8" if masks.max() <= 255 else "int32"), names
