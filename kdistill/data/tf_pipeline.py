"""tf.data builders: model-ready image pipelines, per-pass shuffling a resumed run replays, teacher-cache views, folders decoded by TensorFlow.

The TensorFlow twins of `kdistill.data.batches` (NumPy): `image_pipeline` of
`image_batches`, `read_image_folder` of its Pillow reader, `views_by_pass` and
`crop_and_flip` of a teacher cache's `ViewBatches` and `apply_views`. TensorFlow
is imported on first use (`kdistill.backend.LazyTensorFlow`), so importing this
module on JAX or PyTorch loads no TensorFlow.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import keras
import numpy as np

from kdistill.backend import LazyTensorFlow
from kdistill.data import batches
from kdistill.data import views as views_module
from kdistill.data import images as image_io

tf = LazyTensorFlow("kdistill.data's tf.data pipelines")

__all__ = [
    "to_model_images",
    "image_pipeline",
    "shuffled_by_pass",
    "views_by_pass",
    "crop_and_flip",
    "read_image_folder",
]


def to_model_images(images, image_size: int):
    """The TensorFlow twin of `batches.to_model_images`: float32 RGB of `image_size` (grey repeated, bilinear resize)."""
    images = tf.cast(images, tf.float32)
    if images.shape.rank == 3:  # (batch, H, W) grey
        images = images[..., tf.newaxis]
    if images.shape[-1] == 1:
        images = tf.repeat(images, 3, axis=-1)
    if images.shape[1] != image_size or images.shape[2] != image_size:
        images = tf.image.resize(images, (image_size, image_size), method="bilinear")
    return images


def image_pipeline(arrays, image_size, batch_size, training, augment, num_classes, seed):
    """A tf.data pipeline of model-ready `(images, labels)` batches from `(x, y)` arrays; the twin of `batches.image_batches`."""
    counter = None
    if training:  # pass k in the order drawn from (seed, k), so that a resumed run replays it (batches.set_pass)
        dataset, counter = shuffled_by_pass(arrays, batch_size, seed)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size, drop_remainder=False)
    dataset = dataset.map(
        lambda x, y: (to_model_images(x, image_size), tf.cast(y, tf.int32)), num_parallel_calls=tf.data.AUTOTUNE
    )
    if training and augment:
        per_image, per_batch = batches.augmentation(augment, image_size, num_classes, seed)
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
        # fit's default shuffle=True makes Keras warn that a tf.data pipeline must shuffle itself: this one does, every
        # pass
        warnings.filterwarnings("ignore", message=_SHUFFLE_IGNORED)
    return dataset


#: Keras' warning on fit(tf.data pipeline) with its default shuffle=True (keras/src/trainers/data_adapters/__init__.py)
_SHUFFLE_IGNORED = (
    r"`shuffle=True` was passed, but will be ignored since the data `x` was provided as a tf\.data\.Dataset"
)


def _batches_by_pass(count: int, batch_size: int, seed: int, shuffle: bool = True, views: int = 0):
    """tf.data batches of example indices (and with `views`, each example's view), drawn per pass from `(seed, pass)`.

    Returns:
        `(dataset of rows or (rows, views) batches, pass-number variable)`.
    """
    number = tf.Variable(0, dtype=tf.int64, trainable=False, name="kdistill_pass")

    def one_pass(_):
        current = number.assign_add(1) - 1
        order = tf.range(count, dtype=tf.int64)
        if shuffle:
            order = tf.argsort(
                tf.random.stateless_uniform([count], seed=tf.stack([tf.constant(int(seed), tf.int64), current]))
            )
            order = tf.cast(order, tf.int64)
        if not views:
            return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        # A second stream for the views: the same pass, another key than the order's.
        key = tf.stack([tf.constant(int(seed), tf.int64) + views_module.VIEW_STREAM, current])
        choice = tf.random.stateless_uniform([count], seed=key, maxval=int(views), dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((order, tf.gather(choice, order))).batch(batch_size)

    # flat_map hides the length: state it, or Keras warns that the input "ran out of data" and shows no total in its
    # progress bar.
    rows = (
        tf.data.Dataset.from_tensors(tf.constant(0, tf.int64))
        .flat_map(one_pass)
        .apply(tf.data.experimental.assert_cardinality(-(-count // int(batch_size))))
    )
    return rows, number


def shuffled_by_pass(tensors, batch_size: int, seed: int):
    """A tf.data dataset of batches of `tensors` (sliced on axis 0), in a new order each pass: pass p's order comes from `(seed, p)`.

    tf.data's own `reshuffle_each_iteration` starts again from its first order in a
    new process, so a resumed run read epoch k in epoch 0's order. Here the pass
    number is a variable that each pass reads and advances and `set_pass` sets;
    the order is a full permutation drawn statelessly from `(seed, pass)`.
    Attach the variable to the finished pipeline as `dataset.kdistill_pass`.

    Returns:
        `(dataset of batches, pass-number variable)`.
    """
    constants = keras.tree.map_structure(tf.constant, tensors)
    indices, number = _batches_by_pass(int(len(keras.tree.flatten(tensors)[0])), batch_size, seed)
    gathered = indices.map(
        lambda rows: keras.tree.map_structure(lambda t: tf.gather(t, rows), constants),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return gathered, number


def views_by_pass(images, view_params, teacher, labels, batch_size: int, seed: int, shuffle: bool = True):
    """The tf.data twin of a teacher cache's `ViewBatches`: per example and pass, one stored view, its crop and flip applied.

    The arrays are held in memory as tensors; each batch is gathered and cropped
    by TensorFlow ops inside the pipeline (`crop_and_flip`, bit-identical to
    `apply_views`), so no Python runs per batch. Pass p's order and views come
    from `(seed, p)` through the pass-number variable, as in `shuffled_by_pass`.

    Args:
        images: `(count, height, width, channels)` images as stored.
        view_params: `(count, views, 3)` view parameters (`draw_views`).
        teacher: a nested structure of `(count, views, ...)` teacher outputs.
        labels: `(count,)` labels.
        batch_size, seed, shuffle: as for `ArrayBatches`.

    Returns:
        `(dataset of ({"images", "teacher"}, labels) batches, pass-number variable)`.
    """
    images, view_params, labels = tf.constant(images), tf.constant(view_params), tf.constant(labels)
    teacher = keras.tree.map_structure(tf.constant, teacher)
    indices, number = _batches_by_pass(
        int(labels.shape[0]), batch_size, seed, shuffle=shuffle, views=int(view_params.shape[1])
    )

    def gather(rows, choice):
        at = tf.stack([rows, choice], axis=1)
        shown = crop_and_flip(tf.gather(images, rows), tf.gather_nd(view_params, at))
        return {
            "images": shown,
            "teacher": keras.tree.map_structure(lambda t: tf.gather_nd(t, at), teacher),
        }, tf.gather(labels, rows)

    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE), number


def crop_and_flip(images, params):
    """`apply_views` in TensorFlow ops (for tf.data pipelines): the same crops and flips, bit for bit.

    Example:
        >>> import numpy as np, tensorflow as tf
        >>> from kdistill.data.views import apply_views, draw_views
        >>> images = np.arange(2 * 8 * 8 * 3).reshape(2, 8, 8, 3) % 256
        >>> params = draw_views(2, 1, 8, ("crop", "flip"), seed=1)[:, 0]
        >>> bool(np.array_equal(crop_and_flip(tf.constant(images), tf.constant(params)), apply_views(images, params)))
        True
    """
    params = tf.cast(params, tf.int32)
    height, width = int(images.shape[1]), int(images.shape[2])
    pad = views_module.crop_padding(height)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    rows = params[:, :1] + tf.range(height)[None]  # (count, height)
    steps = tf.where(params[:, 2:3] == 1, tf.range(width - 1, -1, -1)[None], tf.range(width)[None])
    columns = params[:, 1:2] + steps  # (count, width), reversed where flipped
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), columns, axis=2, batch_dims=1)


def read_image_folder(folder: str, class_names: Sequence[str], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The tf.data twin of `batches.read_image_folder`: the same files (`kdistill.data.images`), decoded by TensorFlow."""
    paths, labels = image_io.image_files(folder, class_names)
    if not paths:
        raise FileNotFoundError(f"No images found under {folder!r} (jpeg, png, bmp, gif).")
    decoded = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda path: image_io.decode_tf(path, image_size), num_parallel_calls=tf.data.AUTOTUNE
    )
    try:
        images = np.concatenate(list(decoded.batch(256).as_numpy_iterator()))
    except tf.errors.OpError:
        unreadable = batches.unreadable_images(folder, class_names)  # TensorFlow's decode error names no file
        if not unreadable:
            raise
        raise ValueError(batches.unreadable_message(folder, unreadable)) from None
    return images, np.asarray(labels, dtype="int32")
