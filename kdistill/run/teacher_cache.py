"""Compute the frozen teacher once: store its tapped outputs and logits, then train from them.

With a deterministic input pipeline (no random augmentation), the teacher's
outputs for an image never change, so running it every epoch is wasted work.
`build` runs it once over the training images and writes NumPy `.npy` files
(read back as memory maps; no pickle) plus `meta.json` with a key made of
hashes of the teacher's weights and architecture, the images and labels, and
the tapped layers. `load` refuses a cache whose key does not match, saying
which part changed.

It needs no TensorFlow: the files are NumPy memory maps, and `dataset`
returns tf.data on the TensorFlow backend and `kdistill.data.batches.ArrayBatches`
(a `keras.utils.PyDataset` reading the memory maps batch by batch) elsewhere.

Example:
    >>> import numpy as np, tempfile, keras
    >>> from kdistill.data.batches import ArrayBatches
    >>> from kdistill.run import teacher_cache
    >>> inputs = keras.Input((8, 8, 3)); hidden = keras.layers.Conv2D(4, 3, name="hidden")(inputs)
    >>> teacher = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(hidden)))
    >>> data = ArrayBatches(np.ones((6, 8, 8, 3), "float32"), np.arange(6) % 2, batch_size=4)
    >>> cache = teacher_cache.build(teacher, ["hidden"], data, tempfile.mkdtemp(), verbose=0)
    >>> len(cache), sorted(cache.outputs)
    (6, ['hidden', 'logits'])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Sequence

import keras
import numpy as np

from kdistill.backend import LazyTensorFlow
from kdistill.data import batches as batches_module
from kdistill.data import resolve_pipeline, tf_pipeline
from kdistill.errors import UserError
from kdistill.export import atomic
from kdistill.models import taps as taps_module

__all__ = ["TeacherCache", "ViewBatches", "StaleCacheError", "build", "load", "check_augmentation", "check_writable", "rebuild_hint",
           "teacher_fingerprint"]

tf = LazyTensorFlow("the teacher cache's tf.data pipeline")
logger = logging.getLogger(__name__)
_FORMAT = 1

#: bytes of views (outputs and images) up to which `pipeline="auto"` holds a cache of views in memory for tf.data
IN_MEMORY_VIEWS_LIMIT = 1024**3


class StaleCacheError(UserError):
    """The cache was made for another teacher, other data or other taps; the message says which, and how to rebuild it."""


def teacher_fingerprint(teacher: keras.Model) -> str:
    """sha256 of the teacher's layers (names, types), weights and input shape; freezing it does not change it."""
    layers = [(layer.name, type(layer).__name__) for layer in teacher.layers]
    digest = hashlib.sha256(json.dumps([layers, list(teacher.input_shape)], default=str).encode())
    for weight in teacher.weights:
        digest.update(str(tuple(weight.shape)).encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def _first_batch(dataset):
    for batch in dataset:
        return [np.asarray(part) for part in batch]
    raise ValueError("The dataset to cache is empty.")


class TeacherCache:
    """Cached teacher outputs of one dataset: images, labels and `{output name: array}` memory maps."""

    def __init__(self, folder: str, meta: dict):
        self.folder, self.meta = folder, meta
        self.images, self.labels = self._read("images"), self._read("labels")
        self.outputs = {name: self._read(f"out_{index}") for index, name in enumerate(meta["outputs"])}
        self.views = int(meta.get("views", 0))
        self.view_params = self._read("views") if self.views else None
        examples = meta.get("examples", len(self.labels))
        short = [name for name, array in [("images", self.images), ("labels", self.labels), *self.outputs.items()] if array.shape[0] != examples]
        if short:
            raise StaleCacheError(f"The cache in {folder!r} is incomplete: {short} hold other than {examples} examples. Rebuild it "
                                  "(delete the folder, or kdistill cache-teacher).")

    def _read(self, name: str) -> np.ndarray:
        path = os.path.join(self.folder, f"{name}.npy")
        try:
            return np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise StaleCacheError(f"The cache in {self.folder!r} lacks {path!r}. Rebuild it (delete the folder, or kdistill cache-teacher).") from None
        except (ValueError, OSError) as error:  # truncated or overwritten: NumPy's message names no file
            raise StaleCacheError(f"The cache file {path!r} is truncated or corrupt ({error}). Rebuild the cache (delete the folder, "
                                  "or kdistill cache-teacher).") from None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _views_from_memory_maps(self, pipeline: str, names: Sequence[str], indices) -> bool:
        """Whether a cache of views is read from its memory maps (`ViewBatches`) rather than held in memory by tf.data.

        tf.data (the TensorFlow backend's `"auto"`) holds every view's outputs in
        memory, K times a plain cache; above `IN_MEMORY_VIEWS_LIMIT` bytes
        `"auto"` reads the memory maps instead, batch by batch.
        """
        if resolve_pipeline(pipeline) == "numpy":
            return True
        rows = len(self) if indices is None else len(np.asarray(indices).reshape(-1))
        size = rows * sum(self.outputs[name][0].nbytes for name in names) + rows * self.images[0].nbytes
        if pipeline == "auto" and size > IN_MEMORY_VIEWS_LIMIT:
            logger.info("The cache's %d views take %.1f GB: read from its memory maps batch by batch (pipeline='tf' would hold them in "
                        "memory, faster).", self.views, size / 1e9)
            return True
        return False

    def dataset(self, batch_size: int = 64, shuffle: bool = True, seed: int = 0, layers: Sequence[str] | None = None,
                indices: Sequence[int] | None = None, repeat: bool = False, pipeline: str = "auto", workers: int = 2):
        """`({"images": x, "teacher": {name: output}}, labels)` batches that `FeatureDistiller` trains from.

        Shuffling keeps each image with its own teacher outputs.

        Args:
            batch_size: images per batch.
            shuffle: reshuffle on every pass, from `seed`.
            seed: shuffling seed: the same seed gives the same order.
            layers: the tapped layers to read (logits are always read); None reads all.
            indices: read only these examples (e.g. the labelled part of a cache
                that also holds a transfer set); None reads all.
            repeat: repeat forever (then pass `steps_per_epoch` to `fit`).
            pipeline: `"tf"` (a tf.data.Dataset holding the arrays in memory),
                `"numpy"` (`ArrayBatches`, or `ViewBatches` for a cache of views, read
                from the memory maps batch by batch, no copy) or `"auto"` (tf.data on
                the TensorFlow backend; for a cache of views, only up to
                `IN_MEMORY_VIEWS_LIMIT` bytes, memory maps above).
            workers: threads preparing NumPy batches ahead of training (`keras.utils.PyDataset`).
        """
        names = list(layers) + [taps_module.LOGITS] if layers is not None else list(self.outputs)
        missing = sorted(set(names) - set(self.outputs))
        if missing:
            raise StaleCacheError(f"The cache in {self.folder!r} has no outputs for {missing}; it holds {sorted(self.outputs)}. Rebuild it with these taps.")
        if self.views and self._views_from_memory_maps(pipeline, names, indices):
            return ViewBatches(self, names, batch_size, shuffle=shuffle, seed=seed, repeat=repeat, indices=indices, workers=workers)
        if resolve_pipeline(pipeline) == "numpy":
            cast = lambda x, y: ({"images": x["images"].astype("float32"), "teacher": x["teacher"]}, y)  # noqa: E731
            return batches_module.ArrayBatches({"images": self.images, "teacher": {name: self.outputs[name] for name in names}}, self.labels,
                                               batch_size, shuffle=shuffle, seed=seed, transform=cast, repeat=repeat, indices=indices,
                                               workers=workers)
        select = slice(None) if indices is None else np.asarray(indices)
        teacher = {name: np.asarray(self.outputs[name][select]) for name in names}
        images, labels = np.asarray(self.images[select]), np.asarray(self.labels[select])
        counter = None
        if self.views:  # pass k's order and views drawn from (seed, k), crops applied by tf ops in the pipeline
            params = np.asarray(self.view_params[select])
            dataset, counter = tf_pipeline.views_by_pass(images, params, teacher, labels, batch_size, seed, shuffle=shuffle)
        elif shuffle:  # pass k in the order drawn from (seed, k): a resumed run replays it (batches.set_pass)
            dataset, counter = tf_pipeline.shuffled_by_pass(({"images": images, "teacher": teacher}, labels), batch_size, seed)
        else:
            dataset = tf.data.Dataset.from_tensor_slices(({"images": images, "teacher": teacher}, labels)).batch(batch_size)
        if repeat:
            dataset = dataset.repeat()
        # Images are stored as uint8 when they are whole pixels: cast per batch, not the whole array up front.
        dataset = dataset.map(lambda x, y: ({"images": tf.cast(x["images"], tf.float32), "teacher": x["teacher"]}, y))
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
        if counter is not None:
            dataset.kdistill_pass = counter
        return dataset


class ViewBatches(batches_module.ArrayBatches):
    """Batches from a cache of views: per image and pass, one stored view, its crop and flip applied to the image.

    The view of image `i` in pass `p` is drawn from `(seed, p)`: the same seed
    gives the same views, and each pass draws anew.
    """

    def __init__(self, cache: "TeacherCache", names: Sequence[str], batch_size: int, **options):
        inputs = {"images": cache.images, "teacher": {name: cache.outputs[name] for name in names}}
        super().__init__(inputs, cache.labels, batch_size, **options)
        self.cache = cache
        self._choice = (None, None)  # the most recent pass and its views: drawn once per pass, not per batch

    def view_choice(self, number: int) -> np.ndarray:
        """The stored view of every example in pass `number`."""
        if self._choice[0] != number:
            self._choice = (number, np.random.default_rng([self.seed, batches_module.VIEW_STREAM, number]).integers(self.cache.views, size=len(self.labels)))
        return self._choice[1]

    def __getitem__(self, index: int):
        rows, number = self.rows(index)
        choice = self.view_choice(number)[rows]
        images = self.read_rows(self.cache.images, rows).astype("float32")
        params = self.cache.view_params[rows, choice]
        # Read only the chosen view of each row from the (rows, views, ...) memory maps, in ascending row order.
        order = np.argsort(rows)
        back = np.argsort(order)
        teacher = {name: np.asarray(array[rows[order], choice[order]])[back] for name, array in self.inputs["teacher"].items()}
        return {"images": batches_module.apply_views(images, params), "teacher": teacher}, self.labels[rows]


def _dataset_digest(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def check_augmentation(augment: Sequence[str]) -> None:
    """Refuses caching when the run uses random augmentation, explaining why."""
    if augment:
        raise ValueError(
            f"The teacher cache cannot be used with random augmentation ({', '.join(augment)}) unless it stores views: each epoch "
            "shows the teacher different views of an image, so outputs computed once would not match the images trained on. For "
            "crop and flip, store several views per image (--cache-views K, teacher_cache.build(views=K)); otherwise train with "
            "the live teacher, or drop augmentation."
        )


def rebuild_hint(folder: str) -> str:
    """How to rebuild the cache in `folder`, for the messages."""
    return (f"To rebuild it, delete {folder!r} (kdistill distill --teacher-cache builds it again on first use) or run "
            f"`kdistill cache-teacher --output {folder}` with this run's teacher, data, --seed and taps; or point --teacher-cache at a new folder.")


def check_writable(folder: str) -> None:
    """UserError, before any work, when no cache is in `folder` yet and none can be built there (a finished one is only read)."""
    if os.path.exists(os.path.join(folder, "meta.json")):
        return
    parent = os.path.dirname(os.path.abspath(folder))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    reason = (f"{folder!r} is a file" if os.path.isfile(folder) else f"{parent!r} is a file, not a folder" if not os.path.isdir(parent)
              else f"no permission to write in {parent!r}" if not os.access(parent, os.W_OK | os.X_OK) else None)
    if reason:
        raise UserError(f"Cannot build the teacher cache in {folder!r}: {reason}. Point --teacher-cache at a folder you can write "
                        "(or build the cache elsewhere with kdistill cache-teacher and copy it there).")


def build(teacher: keras.Model, layers: Sequence[str], dataset, folder: str, augment: Sequence[str] = (),
          dtype: str = "float32", verbose: int = 1, views: int = 0, seed: int = 0, source: dict | None = None) -> TeacherCache:
    """Runs the teacher once over `dataset` and stores its tapped outputs and logits in `folder`.

    With `views=K` (Fast Knowledge Distillation, Shen & Xing 2021) it stores K
    randomly cropped and/or flipped views per image instead: each view's crop
    offset and flip (`views.npy`) and the teacher's outputs on it. Training then
    draws one stored view per image per epoch and applies the same crop and
    flip to the student's input (`TeacherCache.dataset`), so random crop and
    flip work with a cached teacher. The disk cost per view is logged first.

    Args:
        teacher: the frozen teacher.
        layers: teacher layers to store (the distiller's tap keys); logits are always stored.
        dataset: `(images, labels)` batches in a fixed order, without random
            augmentation (e.g. `Splits.train_plain`: tf.data or NumPy batches).
        folder: where to write; replaced atomically.
        augment: the augmentations the run uses: none, or with `views` a subset of
            `crop` and `flip` (the others cannot be stored).
        dtype: storage dtype of the outputs ("float32", or "float16" for half the disk).
        verbose: progress bar.
        views: stored views per image (0: the images as they are).
        seed: draws the views' crops and flips.
        source: where the images came from (e.g. `{"data": ..., "seed": ..., "train_limit": ...}`), stored so
            that `load` can say what changed when other images are given.

    Raises:
        ValueError: with augmentation it cannot replay, or when two passes over `dataset` differ.
        kdistill.errors.UserError: when the cache cannot be written in `folder` (checked before any work).
    """
    _check_build_options(dataset, augment, views)
    check_writable(folder)
    # Compiled (predict_on_batch), not eager calls. Not folded (kdistill.models.folding): a folded view does not own the
    # teacher's variables, so JAX's predict would bake them into the compiled function as constants.
    features = taps_module.feature_model(teacher, list(layers), role="teacher", name="teacher_cache_features")
    names = list(layers) + [taps_module.LOGITS]
    images, labels = zip(*[(np.asarray(x), np.asarray(y)) for x, y in dataset])
    batch_size = len(images[0])
    images, labels = np.concatenate(images), np.concatenate(labels)
    integral = np.array_equal(images, np.round(images)) and images.min() >= 0 and images.max() <= 255
    stored_images = images.astype("uint8" if integral else "float32")  # raw pixels store losslessly as uint8
    params = batches_module.draw_views(len(labels), views, images.shape[1], augment, seed) if views else None
    shapes = {name: tuple(features.output[name].shape[1:]) for name in names}
    per_view = len(labels) * sum(int(np.prod(shape)) for shape in shapes.values()) * np.dtype(dtype).itemsize
    logger.info("Teacher cache: %.1f MB of outputs per view%s, plus %.1f MB of images", per_view / 1e6,
                f", {views} views: {views * per_view / 1e6:.1f} MB" if views else "", stored_images.nbytes / 1e6)
    meta = {
        "format": _FORMAT, "teacher": teacher_fingerprint(teacher), "data": _dataset_digest(stored_images, labels),
        "outputs": names, "examples": int(len(labels)), "dtype": dtype, "image_shape": list(stored_images.shape[1:]),
    }
    if source:
        meta["source"] = dict(source)
    if views:
        meta.update(views=int(views), augment=sorted(augment), seed=int(seed))
    parent = os.path.dirname(os.path.abspath(folder))
    atomic.check_free_space(parent, stored_images.nbytes + labels.nbytes + max(views, 1) * per_view, "the teacher cache",
                            hint="Free some space, pass another --output, or --dtype float16 (half the size).")
    with atomic.staging_folder(parent, prefix=".cache-") as staging:
        np.save(os.path.join(staging, "images.npy"), stored_images)
        np.save(os.path.join(staging, "labels.npy"), labels)
        _write_outputs(staging, features, shapes, images, params, batch_size, dtype, verbose)
        with open(os.path.join(staging, "meta.json"), "w") as handle:
            json.dump(meta, handle, indent=2)
        atomic.replace(staging, folder)
    logger.info("Cached the teacher's outputs for %d images%s in %s", len(labels), f" x {views} views" if views else "", folder)
    return TeacherCache(folder, meta)


def _check_build_options(dataset, augment: Sequence[str], views: int) -> None:
    """Refuses, before any work, augmentation a cache cannot replay and a dataset whose two passes differ."""
    if views:
        batches_module.draw_views(1, 1, 8, augment)  # refuses what cannot be replayed, before any work
        if not augment:
            raise ValueError("views > 0 stores randomly augmented views: name them with augment (crop, flip).")
    else:
        check_augmentation(augment)
    first, again = _first_batch(dataset), _first_batch(dataset)
    if any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(first, again)):
        raise ValueError("The dataset is not deterministic (it is shuffled or randomly augmented): two passes gave different first "
                         "batches, so cached outputs could not be matched to images. Pass an unshuffled, unaugmented pipeline.")


def _write_outputs(staging: str, features: keras.Model, shapes: dict, images: np.ndarray, params: np.ndarray | None, batch_size: int,
                   dtype: str, verbose: int) -> None:
    """Runs the teacher's feature model over the images (each stored view of them) into `out_<k>.npy` memory maps, and `views.npy`."""
    count, views = len(images), (0 if params is None else params.shape[1])
    lead = (count, views) if views else (count,)
    outputs = {name: np.lib.format.open_memmap(os.path.join(staging, f"out_{index}.npy"), mode="w+", dtype=dtype, shape=lead + shapes[name])
               for index, name in enumerate(shapes)}
    progress = keras.utils.Progbar(max(views, 1) * -(-count // batch_size), verbose=verbose, unit_name="batch")
    for view in range(max(views, 1)):
        for start in range(0, count, batch_size):
            batch = images[start:start + batch_size].astype("float32")
            if views:
                batch = batches_module.apply_views(batch, params[start:start + batch_size, view])
            result = features.predict_on_batch(batch)
            for name in shapes:
                target = outputs[name][start:start + batch_size]
                (target[:, view] if views else target)[...] = np.asarray(result[name]).astype(dtype)
            progress.add(1)
    for array in outputs.values():
        array.flush()
    del outputs
    if views:
        np.save(os.path.join(staging, "views.npy"), params)


def load(folder: str, teacher: keras.Model, layers: Sequence[str] = (), dataset=None, source: dict | None = None) -> TeacherCache:
    """Opens a cache after checking it was made by this teacher (and, if given, these images and taps).

    Args:
        source: where this run's images come from (as given to `build`): a refusal then names what changed (`--seed`, ...).

    Raises:
        FileNotFoundError: no cache in `folder`.
        StaleCacheError: the teacher's weights, the data or the taps differ; the message says which and how to rebuild.
    """
    meta_path = os.path.join(folder, "meta.json")
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"No teacher cache in {folder!r}; make one with `kdistill cache-teacher` or teacher_cache.build(...).")
    with open(meta_path) as handle:
        meta = json.load(handle)
    if meta.get("format") != _FORMAT:
        raise StaleCacheError(f"The cache in {folder!r} has format {meta.get('format')}, this kdistill reads {_FORMAT}. {rebuild_hint(folder)}")
    if meta["teacher"] != teacher_fingerprint(teacher):
        raise StaleCacheError(f"Stale teacher cache in {folder!r}: it was made by a teacher with other weights or architecture (another "
                              f"--teacher, or the teacher file was trained again). {rebuild_hint(folder)}")
    missing = sorted(set(layers) - set(meta["outputs"]))
    if missing:
        raise StaleCacheError(f"The cache in {folder!r} has no outputs for the taps {missing}; it holds {meta['outputs']} (it was built for "
                              f"other taps). {rebuild_hint(folder)}")
    cache = TeacherCache(folder, meta)
    if dataset is not None:
        images = np.concatenate([np.asarray(x) for x, _ in dataset])
        labels = np.concatenate([np.asarray(y) for _, y in dataset])
        if meta["data"] != _dataset_digest(images.astype(cache.images.dtype), labels):
            raise StaleCacheError(f"Stale teacher cache in {folder!r}: it was made from other images or labels: {_data_change(meta, images, source)}. "
                                  f"{rebuild_hint(folder)}")
    return cache


#: a data setting -> what another value of it changes
_SOURCE_CHANGES = {"seed": "another --seed draws another training/validation split", "train_limit": "another --train-limit keeps other images",
                   "image_size": "another --image-size gives other pixels"}


def _data_change(meta: dict, images: np.ndarray, source: dict | None) -> str:
    """What differs between the cache's images and this run's, as far as the stored settings tell."""
    stored = meta.get("source") or {}
    changed = [f"{_SOURCE_CHANGES.get(key, 'another ' + key)} ({stored.get(key)!r} when built, {(source or {}).get(key)!r} now)"
               for key in sorted(set(stored) | set(source or {})) if stored and source and stored.get(key) != source.get(key)]
    if changed:
        return "; ".join(changed)
    if list(images.shape[1:]) != meta.get("image_shape", list(images.shape[1:])):
        return f"images of {tuple(meta['image_shape'])} when built, {tuple(images.shape[1:])} now (another --image-size)"
    if len(images) != meta["examples"]:
        return f"{meta['examples']} images when built, {len(images)} now (another --train-limit, --seed or data)"
    return "the same number of images, but other pixels or labels (the image files changed, or another --seed drew another split)"
