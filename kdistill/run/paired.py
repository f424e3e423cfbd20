"""Students trained from a teacher cache under the paired protocol: same initial weights, same steps, same data order.

The demo and `benchmarks/accuracy.py --paired` compare a student trained on
labels alone with the same student distilled: both start from the same
weights, take the same number of steps of the same batch size in an order
drawn from the same seed, and read the teacher's outputs from one cache, so
the only difference is the loss (and, when said, the unlabelled images of a
transfer set).

Example:
    >>> from kdistill.run import paired
    >>> paired.ALONE["alpha"]
    0.0
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kdistill.distiller import FeatureDistiller

__all__ = ["ALONE", "LEARNING_RATE", "cosine_adam", "labelled_indices", "train_from_cache"]

#: the options that make a FeatureDistiller train on labels alone (the teacher's outputs are read and ignored)
ALONE = {"taps": {}, "logits_loss": "kl", "alpha": 0.0}
#: Adam's starting rate; it decays to zero along a cosine over the run
LEARNING_RATE = 1e-3


def cosine_adam(steps: int, learning_rate: float = LEARNING_RATE) -> keras.optimizers.Optimizer:
    """Adam whose rate falls from `learning_rate` to zero along a cosine over `steps`."""
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(int(steps), 1)))


def labelled_indices(cache) -> np.ndarray:
    """Positions of the cache's labelled examples (a transfer set's images carry `UNLABELED`)."""
    return np.flatnonzero(np.asarray(cache.labels) >= 0)


def train_from_cache(
    teacher: keras.Model,
    student: keras.Model,
    cache,
    *,
    options: dict[str, Any],
    epochs: int,
    steps_per_epoch: int,
    seed: int,
    batch_size: int = 64,
    indices=None,
    validation=None,
    learning_rate: float = LEARNING_RATE,
    pipeline: str = "numpy",
    verbose: int = 1,
) -> FeatureDistiller:
    """Trains `student` from `cache` for `epochs` x `steps_per_epoch` steps; returns the fitted distiller.

    Args:
        teacher: the teacher the cache was built from.
        student: the student, already holding its initial weights.
        cache: a `kdistill.run.teacher_cache.TeacherCache`.
        options: `FeatureDistiller` options (`ALONE` for labels alone).
        epochs: passes of `steps_per_epoch` steps.
        steps_per_epoch: steps per pass (the same for every student compared).
        seed: the order of the examples (the same seed, the same order).
        batch_size: images per step.
        indices: the cache's examples to draw from (e.g. `labelled_indices(cache)`); None draws from all.
        validation: batches evaluated after each pass, or None.
        learning_rate: Adam's starting rate (cosine decay to zero).
        pipeline: how batches are read (`TeacherCache.dataset`): `"numpy"` reads them from the cache's memory maps batch
            by batch, so memory stays flat whatever the cache's size; `"tf"` holds the cache in memory.
        verbose: Keras progress bars.
    """
    distiller = FeatureDistiller(teacher, student, **options)
    distiller.compile(optimizer=cosine_adam(epochs * steps_per_epoch, learning_rate), metrics=["accuracy"])
    layers = list(distiller.taps)
    train = cache.dataset(batch_size, seed=seed, layers=layers, indices=indices, repeat=True, pipeline=pipeline)
    distiller.fit(
        train,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation,
        verbose=verbose,
        shuffle=False,
    )
    return distiller
