"""Training batches replayed from a teacher cache: the images the teacher saw, with its outputs on them."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kdistill.data import batches as batches_module
from kdistill.data import views as views_module

__all__ = ["ViewBatches"]


class ViewBatches(batches_module.ArrayBatches):
    """Batches from a cache: per image and pass one stored view, rebuilt exactly as the teacher saw it, with its outputs.

    The view of image `i` in pass `p` is drawn from `(seed, p)`: the same seed
    gives the same views, and each pass draws anew. A view's crop and flip are
    applied to the image, and a mixed view is mixed with the same partner (itself
    cropped and flipped as stored) by the same ratio or box
    (`kdistill.data.views.render`); its labels are mixed alike. A cache without
    views gives the images as stored.

    Args:
        cache: an open `TeacherCache`.
        names: the outputs to read (tapped layers and `"logits"`).
        batch_size: images per batch.
        **options: as for `kdistill.data.batches.ArrayBatches` (shuffle, seed, repeat, indices, workers).
    """

    def __init__(self, cache, names: Sequence[str], batch_size: int, **options):
        # memory maps, read batch by batch
        teacher = {name: cache.outputs[name] for name in names if name in cache.outputs}
        super().__init__({"images": cache.images, "teacher": teacher}, cache.labels, batch_size, **options)
        self.cache, self.names = cache, list(names)
        self._choice = (None, None)  # the most recent pass and its views: drawn once per pass, not per batch

    def view_choice(self, number: int) -> np.ndarray:
        """The stored view of every example in pass `number`."""
        if self._choice[0] != number:
            rng = np.random.default_rng([self.seed, views_module.VIEW_STREAM, number])
            self._choice = (number, rng.integers(self.cache.views, size=len(self.labels)))
        return self._choice[1]

    def __getitem__(self, index: int):
        rows, number = self.rows(index)
        cache = self.cache
        labels = np.asarray(cache.labels[rows])
        if not cache.views:
            images = self.read_rows(cache.images, rows).astype("float32")
            return {"images": images, "teacher": cache.teacher_outputs(self.names, rows)}, labels
        choice = self.view_choice(number)[rows]
        mixes = None if cache.mixes is None else cache.mixes.rows(rows).view(choice)
        images = views_module.render(cache.images, rows, np.asarray(cache.view_params[rows, choice]), mixes)
        if mixes is not None:
            labels = views_module.mixed_labels(labels, cache.labels[np.asarray(mixes.partner)], mixes, cache.classes)
        return {"images": images, "teacher": cache.teacher_outputs(self.names, rows, choice)}, labels
