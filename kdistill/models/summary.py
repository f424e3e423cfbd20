"""A model summary that lists each weight's owner once, for models that also hold views of their sub-models.

`FeatureDistiller` tracks its teacher and student and also the feature models
built on them (and an adapter with its projections): Keras' `summary()` listed
those views too, the teacher twice. `listing` gives `summary()` the layers less
the views; `layers` itself, which saving walks, stays whole.

Example:
    >>> import keras
    >>> dense = keras.layers.Dense(2)
    >>> dense.build((None, 3))
    >>> view = keras.Sequential([dense])
    >>> [layer.name == dense.name for layer in distinct_owners([dense, view])]
    [True]
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

__all__ = ["distinct_owners", "listing", "listed"]

#: id(model) -> the layers its running summary() lists
_LISTINGS: dict[int, list] = {}


def distinct_owners(layers: Sequence) -> list:
    """`layers` less each one whose weights all belong to layers before it (a layer without weights is kept)."""
    seen, kept = set(), []
    for layer in layers:
        owned = {id(variable) for variable in layer.weights}
        if not owned or not owned <= seen:
            kept.append(layer)
        seen |= owned
    return kept


@contextlib.contextmanager
def listing(model, layers: Sequence) -> Iterator[None]:
    """While the block runs, `listed(model)` is `distinct_owners(layers)`."""
    _LISTINGS[id(model)] = distinct_owners(layers)
    try:
        yield
    finally:
        _LISTINGS.pop(id(model), None)


def listed(model) -> list | None:
    """The layers `model`'s running summary lists, or None outside `listing`."""
    return _LISTINGS.get(id(model))
