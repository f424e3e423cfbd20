"""Data for distillation: the offline Fashion-MNIST default, TFDS names, image folders, NumPy arrays.

Every pipeline yields `(images, labels)` batches with images as float32 RGB
pixels in [0, 255] at the requested size (grey images repeated to 3 channels)
and integer labels. Models built by kdistill apply their own preprocessing
(ResNet50's Caffe-style mean subtraction, MobileNet's [-1, 1]) as their first
layer, so the same batch feeds teacher and student.

The modules: `sources` (Fashion-MNIST IDX files, TFDS, image folders, `load`),
`arrays` (`from_arrays`: the splits and `Splits`), `batches` (NumPy batches, a
`keras.utils.PyDataset`, no TensorFlow), `tf_pipeline` (the tf.data twins, which
import TensorFlow on first use), `images` (how an image file becomes pixels), and for segmentation `scenes` (offline
scenes built from Fashion-MNIST items, with masks), `mask_folders` (a folder of images and one of PNG masks) and
`tfds_masks` (a prepared TFDS segmentation set such as `oxford_iiit_pet`).

Example:
    >>> import numpy as np
    >>> x = np.zeros((10, 28, 28), "uint8"); y = np.arange(10) % 3
    >>> splits = from_arrays(x, y, x[:4], y[:4], image_size=32, batch_size=4, validation_fraction=0.2)
    >>> images, labels = next(iter(splits.train))
    >>> tuple(images.shape), splits.num_classes, splits.counts
    ((4, 32, 32, 3), 3, {'train': 8, 'validation': 2, 'test': 4})
"""

from __future__ import annotations

from kdistill.data.arrays import PIPELINES, Splits, from_arrays, resolve_pipeline
from kdistill.data.batches import AUGMENTATIONS, augmentation
from kdistill.data.sources import (
    FASHION_MNIST_CLASSES,
    fashion_mnist_dirs,
    from_image_folder,
    from_tfds,
    load,
    load_fashion_mnist,
    read_idx,
)
from kdistill.data.mask_folders import read_mask_folders
from kdistill.data.scenes import SCENE_CLASSES, Scenes, load_scenes, make_scenes
from kdistill.data.tfds_masks import SEGMENTATION_SETS, read_tfds_masks

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
    "SCENE_CLASSES",
    "Scenes",
    "make_scenes",
    "load_scenes",
    "read_mask_folders",
    "read_tfds_masks",
    "SEGMENTATION_SETS",
]
