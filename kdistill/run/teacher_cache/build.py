"""Building a teacher cache: run the teacher once over the training images (or each stored view of them) and write its outputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Sequence

import keras
import numpy as np

from kdistill import files
from kdistill.data import views as views_module
from kdistill.errors import UserError
from kdistill.models import taps as taps_module
from kdistill.run.teacher_cache import top_k as top_k_module
from kdistill.run.teacher_cache.cache import MIX_FIELDS, TeacherCache

__all__ = ["build", "check_augmentation", "check_writable", "teacher_fingerprint", "dataset_digest", "FORMAT"]

logger = logging.getLogger(__name__)
FORMAT = 1


def teacher_fingerprint(teacher: keras.Model) -> str:
    """sha256 of the teacher's layers (names, types), weights and input shape; freezing it does not change it."""
    layers = [(layer.name, type(layer).__name__) for layer in teacher.layers]
    digest = hashlib.sha256(json.dumps([layers, list(teacher.input_shape)], default=str).encode())
    for weight in teacher.weights:
        digest.update(str(tuple(weight.shape)).encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def dataset_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the images and labels a cache was built from."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def check_augmentation(augment: Sequence[str]) -> None:
    """Refuses caching when the run uses random augmentation, explaining why."""
    if augment:
        raise ValueError(
            f"The teacher cache cannot be used with random augmentation ({', '.join(augment)}) unless it stores views: each epoch "
            "shows the teacher different views of an image, so outputs computed once would not match the images trained on. For "
            f"{', '.join(views_module.VIEW_AUGMENTATIONS)}, store several views per image (--cache-views K, teacher_cache.build(views=K)); "
            "otherwise train with the live teacher, or drop augmentation."
        )


def check_writable(folder: str) -> None:
    """UserError, before any work, when no cache is in `folder` yet and none can be built there (a finished one is only read)."""
    if os.path.exists(os.path.join(folder, "meta.json")):
        return
    parent = os.path.dirname(os.path.abspath(folder))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    reason = (
        f"{folder!r} is a file"
        if os.path.isfile(folder)
        else f"{parent!r} is a file, not a folder"
        if not os.path.isdir(parent)
        else f"no permission to write in {parent!r}"
        if not os.access(parent, os.W_OK | os.X_OK)
        else None
    )
    if reason:
        raise UserError(
            f"Cannot build the teacher cache in {folder!r}: {reason}. Point --teacher-cache at a folder you can write "
            "(or build the cache elsewhere with kdistill cache-teacher and copy it there)."
        )


def build(
    teacher: keras.Model,
    layers: Sequence[str],
    dataset,
    folder: str,
    augment: Sequence[str] = (),
    dtype: str = "float32",
    verbose: int = 1,
    views: int = 0,
    seed: int = 0,
    source: dict | None = None,
    top_k: int | None = None,
) -> TeacherCache:
    """Runs the teacher once over `dataset` and stores its tapped outputs and logits in `folder`.

    With `views=K` (Fast Knowledge Distillation, Shen & Xing 2021) it stores K random
    views per image, what rebuilds each (`kdistill.data.views`: crop, flip, mix partner,
    ratio or box) and the teacher's outputs on it; training shows the student exactly
    the image the teacher saw (consistent teaching, Beyer et al. 2022). With `top_k=k`
    the logits are stored as their k largest values and one filler logit (`top_k`
    module). Feature maps are stored whole for every view: they are the expensive part.
    The bytes per image per view are logged first and kept in `meta["bytes_per_view"]`.

    Args:
        teacher: the frozen teacher.
        layers: teacher layers to store (the distiller's tap keys); logits are always stored.
        dataset: `(images, labels)` batches in a fixed order, without random
            augmentation (e.g. `Splits.train_plain`: tf.data or NumPy batches).
        folder: where to write; replaced atomically.
        augment: the augmentations the run uses: none, or with `views` a subset of
            `crop`, `flip`, `mixup` and `cutmix` (the others cannot be stored).
        dtype: storage dtype of the dense outputs ("float32", or "float16" for half the disk).
        verbose: progress bar.
        views: stored views per image (0: the images as they are).
        seed: draws the views.
        source: where the images came from (e.g. `{"data": ..., "seed": ..., "train_limit": ...}`), stored so
            that `load` can say what changed when other images are given.
        top_k: store only the top k logits per view (None: every logit).

    Raises:
        ValueError: with augmentation it cannot replay, a `top_k` out of range, or when two passes over `dataset` differ.
        kdistill.errors.UserError: when the cache cannot be written in `folder` (checked before any work).

    Example:
        >>> import numpy as np, tempfile, keras
        >>> from kdistill.data.batches import ArrayBatches
        >>> inputs = keras.Input((8, 8, 3))
        >>> teacher = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs)))
        >>> data = ArrayBatches(np.ones((6, 8, 8, 3), "float32"), np.arange(6) % 5, batch_size=4)
        >>> cache = build(teacher, [], data, tempfile.mkdtemp(), views=2, augment=("flip", "mixup"), top_k=2, verbose=0)
        >>> cache.views, cache.top_k, cache.meta["bytes_per_view"]
        (2, 2, 39)
    """
    _check_build_options(dataset, augment, views)
    check_writable(folder)
    features, names, classes = _teacher_outputs(teacher, layers, top_k)
    stored_images, labels, batch_size = _read_images(dataset)
    crops, mixes = (
        views_module.draw(len(labels), views, stored_images.shape[1], augment, seed) if views else (None, None)
    )
    layout = _Layout(
        {name: tuple(features.output[name].shape[1:]) for name in names}, dtype, classes, top_k, crops, mixes
    )
    per_view = layout.bytes_per_view()
    _log_sizes(per_view, len(labels), views, stored_images.nbytes)
    meta = _meta(teacher, stored_images, labels, names, layout, views, augment, seed, source)
    _write(folder, features, stored_images, labels, batch_size, layout, meta, verbose)
    logger.info(
        "Cached the teacher's outputs for %d images%s in %s", len(labels), f" x {views} views" if views else "", folder
    )
    return TeacherCache(folder, meta)


def _teacher_outputs(teacher: keras.Model, layers: Sequence[str], top_k: int | None) -> tuple[keras.Model, list, int]:
    """The model giving the tapped outputs and the logits, their names, and the number of classes (`top_k` checked)."""
    # Compiled (predict_on_batch), not eager calls. Not folded (kdistill.models.folding): a folded view does not own the
    # teacher's variables, so JAX's predict would bake them into the compiled function as constants.
    features = taps_module.feature_model(teacher, list(layers), role="teacher", name="teacher_cache_features")
    classes = int(features.output[taps_module.LOGITS].shape[-1])
    top_k_module.check_top_k(top_k, classes)
    return features, list(layers) + [taps_module.LOGITS], classes


def _meta(
    teacher: keras.Model,
    stored_images: np.ndarray,
    labels: np.ndarray,
    names: list,
    layout: _Layout,
    views: int,
    augment: Sequence[str],
    seed: int,
    source: dict | None,
) -> dict:
    """`meta.json`: what the cache holds and what made it (teacher, images, views), so that `load` can check it."""
    meta = {
        "format": FORMAT,
        "teacher": teacher_fingerprint(teacher),
        "data": dataset_digest(stored_images, labels),
        "outputs": names,
        "examples": int(len(labels)),
        "dtype": layout.dtype,
        "image_shape": list(stored_images.shape[1:]),
        "classes": layout.classes,
        "bytes_per_view": int(layout.bytes_per_view()["total"]),
    }
    meta.update({"source": dict(source)} if source else {}, **({"top_k": int(layout.top_k)} if layout.top_k else {}))
    if views:
        meta.update(views=int(views), augment=sorted(augment), seed=int(seed), mixes=layout.mixes is not None)
    return meta


def _log_sizes(per_view: dict[str, int], examples: int, views: int, image_bytes: int) -> None:
    """Says what the cache will take: bytes per image per view by output, and in all."""
    logger.info(
        "Teacher cache: %d bytes per image per view (%s); %.1f MB for %d images x %d view(s), plus %.1f MB of images",
        per_view["total"],
        ", ".join(f"{name} {size}" for name, size in per_view.items() if name != "total"),
        examples * max(views, 1) * per_view["total"] / 1e6,
        examples,
        max(views, 1),
        image_bytes / 1e6,
    )


def _write(
    folder: str,
    features: keras.Model,
    stored_images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    layout: _Layout,
    meta: dict,
    verbose: int,
) -> None:
    """Runs the teacher over the images and writes the cache whole into `folder` (after checking the free space)."""
    parent = os.path.dirname(os.path.abspath(folder))
    files.check_free_space(
        parent,
        stored_images.nbytes + labels.nbytes + len(labels) * max(meta.get("views", 0), 1) * meta["bytes_per_view"],
        "the teacher cache",
        hint="Free some space, pass another --output, --top-k for the logits, or --dtype float16 (half the size).",
    )
    with files.staging_folder(parent, prefix=".cache-") as staging:
        np.save(os.path.join(staging, "images.npy"), stored_images)
        np.save(os.path.join(staging, "labels.npy"), labels)
        writer = _OutputWriter(staging, layout, len(labels))
        _run_teacher(features, stored_images, batch_size, writer, verbose)
        writer.close()
        with open(os.path.join(staging, "meta.json"), "w") as handle:
            json.dump(meta, handle, indent=2)
        files.replace(staging, folder)


def _check_build_options(dataset, augment: Sequence[str], views: int) -> None:
    """Refuses, before any work, augmentation a cache cannot replay and a dataset whose two passes differ."""
    if views:
        views_module.check(augment)
        if not augment:
            raise ValueError(
                f"views > 0 stores randomly augmented views: name them with augment ({', '.join(views_module.VIEW_AUGMENTATIONS)})."
            )
    else:
        check_augmentation(augment)
    first, again = _first_batch(dataset), _first_batch(dataset)
    if any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(first, again)):
        raise ValueError(
            "The dataset is not deterministic (it is shuffled or randomly augmented): two passes gave different first "
            "batches, so cached outputs could not be matched to images. Pass an unshuffled, unaugmented pipeline."
        )


def _read_images(dataset) -> tuple[np.ndarray, np.ndarray, int]:
    """The images (uint8 when they are whole pixels: stored losslessly), the labels and the batch size of `dataset`."""
    images, labels = zip(*[(np.asarray(x), np.asarray(y)) for x, y in dataset])
    batch_size = len(images[0])
    images, labels = np.concatenate(images), np.concatenate(labels)
    integral = np.array_equal(images, np.round(images)) and images.min() >= 0 and images.max() <= 255
    return images.astype("uint8" if integral else "float32"), labels, batch_size


def _first_batch(dataset):
    for batch in dataset:
        return [np.asarray(part) for part in batch]
    raise ValueError("The dataset to cache is empty.")


@dataclasses.dataclass
class _Layout:
    """What a cache stores per image: each output (`{name: shape}`) in `dtype`, the logits whole or as their top k, and each view.

    Attributes:
        crops: every view's `[dy, dx, flip]`, shape `(count, views, 3)`, or None for the images as they are.
        mixes: every view's mix (`kdistill.data.views.Mixes`), or None when no view mixes.
    """

    shapes: dict
    dtype: str
    classes: int
    top_k: int | None
    crops: np.ndarray | None
    mixes: views_module.Mixes | None

    @property
    def views(self) -> int:
        """Stored views per image (0: the images as they are)."""
        return 0 if self.crops is None else self.crops.shape[1]

    def bytes_per_view(self) -> dict:
        """Bytes one view of one image takes on disk, by part: each output, the logits, and what rebuilds the view."""
        sizes = {name: int(np.prod(shape)) * np.dtype(self.dtype).itemsize for name, shape in self.shapes.items()}
        if self.top_k:
            sizes[taps_module.LOGITS] = top_k_module.bytes_per_view(self.top_k, self.classes)
        if self.crops is not None:
            sizes["view"] = self.crops[0, 0].nbytes + (
                sum(np.asarray(getattr(self.mixes, name))[0, 0].nbytes for name in MIX_FIELDS) if self.mixes else 0
            )
        return dict(sizes, total=sum(sizes.values()))


def _run_teacher(
    features: keras.Model, images: np.ndarray, batch_size: int, writer: "_OutputWriter", verbose: int
) -> None:
    """Shows the teacher every view the writer's layout stores (or each image as it is) and hands its outputs to `writer`."""
    count, views, crops, mixes = len(images), writer.layout.views, writer.layout.crops, writer.layout.mixes
    progress = keras.utils.Progbar(max(views, 1) * -(-count // batch_size), verbose=verbose, unit_name="batch")
    for view in range(max(views, 1)):
        for start in range(0, count, batch_size):
            rows = np.arange(start, min(start + batch_size, count))
            if views:
                shown = views_module.render(
                    images, rows, crops[rows, view], None if mixes is None else mixes.rows(rows).view(view)
                )
            else:
                shown = images[rows].astype("float32")
            writer.write(rows, view if views else None, features.predict_on_batch(shown))
            progress.add(1)


class _OutputWriter:
    """The cache's output files as memory maps: `out_<k>.npy` per dense output, `logits_{values,indices,filler}.npy` for top k."""

    def __init__(self, staging: str, layout: _Layout, count: int):
        self.staging, self.layout, self.top_k, self.dtype = staging, layout, layout.top_k, layout.dtype
        lead = (count, layout.views) if layout.views else (count,)
        self.arrays = {}
        for index, (name, shape) in enumerate(layout.shapes.items()):
            if self.top_k and name == taps_module.LOGITS:
                classes = shape[-1]
                for part, part_shape, part_dtype in (
                    ("values", (self.top_k,), "float16"),
                    ("indices", (self.top_k,), top_k_module.index_dtype(classes)),
                    ("filler", (), "float16"),
                ):
                    self.arrays[("logits", part)] = self._open(f"logits_{part}", lead + part_shape, part_dtype)
            else:
                self.arrays[name] = self._open(f"out_{index}", lead + shape, self.dtype)

    def _open(self, name: str, shape: tuple, dtype: str) -> np.ndarray:
        return np.lib.format.open_memmap(os.path.join(self.staging, f"{name}.npy"), mode="w+", dtype=dtype, shape=shape)

    def write(self, rows: np.ndarray, view: int | None, result: dict) -> None:
        at = (rows,) if view is None else (rows, view)
        sparse = top_k_module.compress(np.asarray(result[taps_module.LOGITS]), self.top_k) if self.top_k else {}
        for key, array in self.arrays.items():
            if isinstance(key, tuple):
                array[at] = sparse[key[1]]
            else:
                array[at] = np.asarray(result[key]).astype(self.dtype)

    def close(self) -> None:
        """Flushes the outputs and writes what rebuilds each view (`views.npy`, `mix_<field>.npy`)."""
        for array in self.arrays.values():
            array.flush()
        self.arrays = {}
        if self.layout.crops is not None:
            np.save(os.path.join(self.staging, "views.npy"), self.layout.crops)
        mixes = self.layout.mixes
        for name, array in mixes.arrays().items() if mixes is not None else ():
            np.save(os.path.join(self.staging, f"mix_{name}.npy"), array)
