"""Opening a teacher cache: checks that it was made by this teacher, from these images and for these taps, and says what changed."""

from __future__ import annotations

import json
import os
from typing import Sequence

import keras
import numpy as np

from kdistill.run.teacher_cache.build import FORMAT, dataset_digest, teacher_fingerprint
from kdistill.run.teacher_cache.cache import StaleCacheError, TeacherCache

__all__ = ["load", "rebuild_hint"]

#: a data setting -> what another value of it changes
_SOURCE_CHANGES = {
    "seed": "another --seed draws another training/validation split",
    "train_limit": "another --train-limit keeps other images",
    "image_size": "another --image-size gives other pixels",
}


def rebuild_hint(folder: str) -> str:
    """How to rebuild the cache in `folder`, for the messages."""
    return (
        f"To rebuild it, delete {folder!r} (kdistill distill --teacher-cache builds it again on first use) or run "
        f"`kdistill cache-teacher --output {folder}` with this run's teacher, data, --seed and taps; or point --teacher-cache at a new folder."
    )


def load(
    folder: str, teacher: keras.Model, layers: Sequence[str] = (), dataset=None, source: dict | None = None
) -> TeacherCache:
    """Opens a cache after checking it was made by this teacher (and, if given, these images and taps).

    Args:
        folder: the cache's folder.
        teacher: the teacher the run distils from.
        layers: the tapped teacher layers the run reads.
        dataset: this run's training images, unshuffled (`Splits.train_plain`), to check against the cache's.
        source: where this run's images come from (as given to `build`): a refusal then names what changed (`--seed`, ...).

    Raises:
        FileNotFoundError: no cache in `folder`.
        StaleCacheError: the teacher's weights, the data or the taps differ; the message says which and how to rebuild.
    """
    meta_path = os.path.join(folder, "meta.json")
    if not os.path.exists(meta_path):
        raise FileNotFoundError(
            f"No teacher cache in {folder!r}; make one with `kdistill cache-teacher` or teacher_cache.build(...)."
        )
    with open(meta_path) as handle:
        meta = json.load(handle)
    if meta.get("format") != FORMAT:
        raise StaleCacheError(
            f"The cache in {folder!r} has format {meta.get('format')}, this kdistill reads {FORMAT}. {rebuild_hint(folder)}"
        )
    if meta["teacher"] != teacher_fingerprint(teacher):
        raise StaleCacheError(
            f"Stale teacher cache in {folder!r}: it was made by a teacher with other weights or architecture (another "
            f"--teacher, or the teacher file was trained again). {rebuild_hint(folder)}"
        )
    missing = sorted(set(layers) - set(meta["outputs"]))
    if missing:
        raise StaleCacheError(
            f"The cache in {folder!r} has no outputs for the taps {missing}; it holds {meta['outputs']} (it was built for "
            f"other taps). {rebuild_hint(folder)}"
        )
    cache = TeacherCache(folder, meta)
    if dataset is not None:
        images = np.concatenate([np.asarray(x) for x, _ in dataset])
        labels = np.concatenate([np.asarray(y) for _, y in dataset])
        if meta["data"] != dataset_digest(images.astype(cache.images.dtype), labels):
            raise StaleCacheError(
                f"Stale teacher cache in {folder!r}: it was made from other images or labels: {_data_change(meta, images, source)}. "
                f"{rebuild_hint(folder)}"
            )
    return cache


def _data_change(meta: dict, images: np.ndarray, source: dict | None) -> str:
    """What differs between the cache's images and this run's, as far as the stored settings tell."""
    stored = meta.get("source") or {}
    changed = [
        f"{_SOURCE_CHANGES.get(key, 'another ' + key)} ({stored.get(key)!r} when built, {(source or {}).get(key)!r} now)"
        for key in sorted(set(stored) | set(source or {}))
        if stored and source and stored.get(key) != source.get(key)
    ]
    if changed:
        return "; ".join(changed)
    if list(images.shape[1:]) != meta.get("image_shape", list(images.shape[1:])):
        return (
            f"images of {tuple(meta['image_shape'])} when built, {tuple(images.shape[1:])} now (another --image-size)"
        )
    if len(images) != meta["examples"]:
        return f"{meta['examples']} images when built, {len(images)} now (another --train-limit, --seed or data)"
    return "the same number of images, but other pixels or labels (the image files changed, or another --seed drew another split)"
