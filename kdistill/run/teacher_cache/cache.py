"""A teacher cache on disk, opened: its images, labels, stored views and teacher outputs, and the batches to train from."""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from kdistill.backend import LazyTensorFlow
from kdistill.data import resolve_pipeline, tf_pipeline
from kdistill.data import views as views_module
from kdistill.errors import UserError
from kdistill.models import taps as taps_module
from kdistill.run.teacher_cache import top_k as top_k_module

__all__ = ["TeacherCache", "StaleCacheError", "IN_MEMORY_VIEWS_LIMIT"]

tf = LazyTensorFlow("the teacher cache's tf.data pipeline")
logger = logging.getLogger(__name__)

#: bytes of views (outputs and images) up to which `pipeline="auto"` holds a cache of views in memory for tf.data
IN_MEMORY_VIEWS_LIMIT = 1024**3
#: the files of top-k logits (`top_k.compress`) and of mixed views (`kdistill.data.views.Mixes`)
SPARSE_LOGITS = ("values", "indices", "filler")
MIX_FIELDS = ("kind", "partner", "partner_crop", "ratio", "box")


class StaleCacheError(UserError):
    """The cache was made for another teacher, other data or other taps; the message says which, and how to rebuild it."""


class TeacherCache:
    """Cached teacher outputs of one dataset: images, labels, views and `{output name: array}` memory maps.

    Attributes:
        views: stored views per image (0: the images as they are).
        view_params: `(count, views, 3)` crops and flips, or None.
        mixes: the views' mixes (`kdistill.data.views.Mixes`), or None when no view mixes.
        top_k: logits stored as their top k (`top_k.compress`), or None for every logit.
        outputs: the densely stored outputs (tapped maps, and logits unless `top_k`).
    """

    def __init__(self, folder: str, meta: dict):
        self.folder, self.meta = folder, meta
        self.images, self.labels = self._read("images"), self._read("labels")
        self.top_k = meta.get("top_k")
        dense = [name for name in meta["outputs"] if not (self.top_k and name == taps_module.LOGITS)]
        self.outputs = {name: self._read(f"out_{meta['outputs'].index(name)}") for name in dense}
        self.sparse_logits = {part: self._read(f"logits_{part}") for part in SPARSE_LOGITS} if self.top_k else None
        self.views = int(meta.get("views", 0))
        self.view_params = self._read("views") if self.views else None
        self.mixes = (
            views_module.Mixes(**{name: self._read(f"mix_{name}") for name in MIX_FIELDS})
            if meta.get("mixes")
            else None
        )
        examples = meta.get("examples", len(self.labels))
        arrays = [
            ("images", self.images),
            ("labels", self.labels),
            *self.outputs.items(),
            *(self.sparse_logits or {}).items(),
        ]
        short = [name for name, array in arrays if array.shape[0] != examples]
        if short:
            raise StaleCacheError(
                f"The cache in {folder!r} is incomplete: {short} hold other than {examples} examples. Rebuild it "
                "(delete the folder, or kdistill cache-teacher)."
            )

    def _read(self, name: str) -> np.ndarray:
        path = os.path.join(self.folder, f"{name}.npy")
        try:
            return np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise StaleCacheError(
                f"The cache in {self.folder!r} lacks {path!r}. Rebuild it (delete the folder, or kdistill cache-teacher)."
            ) from None
        except (ValueError, OSError) as error:  # truncated or overwritten: NumPy's message names no file
            raise StaleCacheError(
                f"The cache file {path!r} is truncated or corrupt ({error}). Rebuild the cache (delete the folder, "
                "or kdistill cache-teacher)."
            ) from None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def describe(self) -> str:
        """`'96 images x 2 views x teacher_stage2, logits in cache (0.5 MB; 4139 bytes per image per view, logits as top 3)'`."""
        size = sum(os.path.getsize(os.path.join(self.folder, name)) for name in os.listdir(self.folder)) / 1e6
        views = f" x {self.views} views" if self.views else ""
        top = f", logits as top {self.top_k}" if self.top_k else ""
        return (
            f"{len(self)} images{views} x {', '.join(self.meta['outputs'])} in {self.folder} ({size:.1f} MB; "
            f"{self.meta.get('bytes_per_view', '?')} bytes per image per view{top})"
        )

    @property
    def classes(self) -> int:
        """The teacher's class count (the width of its logits)."""
        return int(self.meta["classes"]) if "classes" in self.meta else int(self.outputs[taps_module.LOGITS].shape[-1])

    def teacher_outputs(self, names: Sequence[str], rows: np.ndarray, choice: np.ndarray | None = None) -> dict:
        """`{name: float array}` of the stored outputs of `rows` (view `choice[i]` of row i in a cache of views); logits dense."""
        rows = np.asarray(rows)
        order = np.argsort(rows, kind="stable")  # memory maps read fastest in ascending order
        back = np.argsort(order, kind="stable")
        at = (rows[order],) if choice is None else (rows[order], np.asarray(choice)[order])

        def gather(array):
            return np.asarray(array[at])[back]

        found = {name: gather(self.outputs[name]) for name in names if name in self.outputs}
        if self.top_k and taps_module.LOGITS in names:
            parts = {part: gather(array) for part, array in self.sparse_logits.items()}
            found[taps_module.LOGITS] = top_k_module.expand(
                parts["values"], parts["indices"], parts["filler"], self.classes
            )
        return found

    def _views_from_memory_maps(self, pipeline: str, names: Sequence[str], indices) -> bool:
        """Whether batches are read from the memory maps (`ViewBatches`) rather than held in memory by tf.data.

        Mixed views and top-k logits are always rebuilt by NumPy. tf.data (the
        TensorFlow backend's `"auto"`) holds every view's outputs in memory, K times
        a plain cache; above `IN_MEMORY_VIEWS_LIMIT` bytes `"auto"` reads the
        memory maps instead, batch by batch.
        """
        if resolve_pipeline(pipeline) == "numpy" or self.mixes is not None or self.top_k:
            return True
        rows = len(self) if indices is None else len(np.asarray(indices).reshape(-1))
        size = rows * sum(self.outputs[name][0].nbytes for name in names) + rows * self.images[0].nbytes
        if pipeline == "auto" and size > IN_MEMORY_VIEWS_LIMIT:
            logger.info(
                "The cache's %d views take %.1f GB: read from its memory maps batch by batch (pipeline='tf' would hold them in "
                "memory, faster).",
                self.views,
                size / 1e9,
            )
            return True
        return False

    def dataset(
        self,
        batch_size: int = 64,
        shuffle: bool = True,
        seed: int = 0,
        layers: Sequence[str] | None = None,
        indices: Sequence[int] | None = None,
        repeat: bool = False,
        pipeline: str = "auto",
        workers: int = 2,
    ):
        """`({"images": x, "teacher": {name: output}}, labels)` batches that `FeatureDistiller` trains from.

        Shuffling keeps each image with its own teacher outputs. With mixed views the
        labels are one-hot rows mixed as the images were (`views.mixed_labels`).

        Args:
            batch_size: images per batch.
            shuffle: reshuffle on every pass, from `seed`.
            seed: shuffling seed: the same seed gives the same order (and the same views).
            layers: the tapped layers to read (logits are always read); None reads all.
            indices: read only these examples (e.g. the labelled part of a cache
                that also holds a transfer set); None reads all.
            repeat: repeat forever (then pass `steps_per_epoch` to `fit`).
            pipeline: `"tf"` (a tf.data.Dataset holding the arrays in memory),
                `"numpy"` (`ArrayBatches`, or `ViewBatches` for a cache of views, read
                from the memory maps batch by batch, no copy) or `"auto"` (tf.data on
                the TensorFlow backend; for a cache of views, only up to
                `IN_MEMORY_VIEWS_LIMIT` bytes, memory maps above; mixed views and
                top-k logits always memory maps).
            workers: threads preparing NumPy batches ahead of training (`keras.utils.PyDataset`).
        """
        from kdistill.run.teacher_cache.replay import ViewBatches

        names = list(layers) + [taps_module.LOGITS] if layers is not None else list(self.meta["outputs"])
        missing = sorted(set(names) - set(self.meta["outputs"]))
        if missing:
            raise StaleCacheError(
                f"The cache in {self.folder!r} has no outputs for {missing}; it holds {sorted(self.meta['outputs'])}. "
                "Rebuild it with these taps."
            )
        if self._views_from_memory_maps(pipeline, names, indices):
            return ViewBatches(
                self, names, batch_size, shuffle=shuffle, seed=seed, repeat=repeat, indices=indices, workers=workers
            )
        select = slice(None) if indices is None else np.asarray(indices)
        teacher = {name: np.asarray(self.outputs[name][select]) for name in names}
        images, labels = np.asarray(self.images[select]), np.asarray(self.labels[select])
        counter = None
        if self.views:  # pass k's order and views drawn from (seed, k), crops applied by tf ops in the pipeline
            params = np.asarray(self.view_params[select])
            dataset, counter = tf_pipeline.views_by_pass(
                images, params, teacher, labels, batch_size, seed, shuffle=shuffle
            )
        elif shuffle:  # pass k in the order drawn from (seed, k): a resumed run replays it (batches.set_pass)
            dataset, counter = tf_pipeline.shuffled_by_pass(
                ({"images": images, "teacher": teacher}, labels), batch_size, seed
            )
        else:
            dataset = tf.data.Dataset.from_tensor_slices(({"images": images, "teacher": teacher}, labels)).batch(
                batch_size
            )
        if repeat:
            dataset = dataset.repeat()
        # Images are stored as uint8 when they are whole pixels: cast per batch, not the whole array up front.
        dataset = dataset.map(lambda x, y: ({"images": tf.cast(x["images"], tf.float32), "teacher": x["teacher"]}, y))
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
        if counter is not None:
            dataset.kdistill_pass = counter
        return dataset
