"""Stage tables: each network's stage outputs as `(layer name, total stride)`, shallow to deep, as timm's `feature_info`.

A table is declared where its network is built: `kdistill.teachers.register`,
`kdistill.students.register` and `kdistill.models.segmenters.register` take
`stages=...` beside the builder and record it here under the registered name,
which the builders give their models (a name survives `.keras` save and load).
A builder whose stages depend on its options (a KerasHub backbone's pyramid,
a flattened KerasHub model) attaches the table to the model it returns
(`attach`), as keras-hub's backbones carry `pyramid_outputs`.

Example:
    >>> import kdistill
    >>> from kdistill.models import stages
    >>> stages.get("mobilenet_v2")[:2]
    [('block_3_expand_relu', 4), ('block_6_expand_relu', 8)]
"""

from __future__ import annotations

from typing import Sequence

import keras

from kdistill.errors import did_you_mean, shown

__all__ = ["Table", "register", "registering", "get", "names", "attach", "attached", "by_name", "by_layer_names"]

#: a stage table: (layer name, total stride), shallow to deep
Table = list[tuple[str, int]]

# registered network name -> its stage table (filled by the registries' `register(name, builder, stages=...)`)
_TABLES: dict[str, Table] = {}

#: the attribute a model built with its own stage table carries it in (kept in memory; a loaded file is found by its
#: name)
_ATTRIBUTE = "_kdistill_stages"


def registering(registry: dict, name: str, builder=None, stages: Sequence[tuple[str, int]] | None = None):
    """`register` of a model registry (teachers, students): puts `builder` in `registry` under `name`, with its stage table.

    Returns the builder, or, without one, a decorator that registers the function it decorates.
    """

    def decorator(function):
        if stages is not None:
            register(name, stages)
        registry[name] = function
        return function

    return decorator if builder is None else decorator(builder)


def _checked(name: str, stages: Sequence[tuple[str, int]]) -> Table:
    table = [(str(layer), int(stride)) for layer, stride in stages]
    if not table:
        raise ValueError(f"Stage table of {name!r} is empty; give [(layer name, total stride), ...] shallow to deep.")
    strides = [stride for _, stride in table]
    if strides != sorted(strides):
        raise ValueError(f"Stage strides of {name!r} must grow from shallow to deep, received {strides}.")
    return table


def register(name: str, stages: Sequence[tuple[str, int]]) -> None:
    """Records the stage table of the network registered as `name` (the registries' `register` call this).

    A teacher and a student of one name (the CIFAR `resnet20`) share one table;
    registering a name again replaces its table, as redefining a builder in a
    notebook replaces the builder.

    Raises:
        ValueError: for an empty table or strides that do not grow.
    """
    _TABLES[name] = _checked(name, stages)


def get(name: str) -> Table:
    """The stage table registered under `name`.

    Raises:
        ValueError: for a name without a table, listing the registered ones.
    """
    if name not in _TABLES:
        raise ValueError(
            f"Unknown network {shown(name)}.{did_you_mean(str(name), _TABLES, count=2)} Networks with stage tables: "
            f"{', '.join(names())}."
        )
    return list(_TABLES[name])


def names() -> list[str]:
    """Names with a registered stage table."""
    return sorted(_TABLES)


def attach(model: keras.Model, stages: Sequence[tuple[str, int]]) -> keras.Model:
    """Gives `model` its own stage table (for a network whose stages depend on how it was built); returns the model."""
    setattr(model, _ATTRIBUTE, _checked(model.name, stages))
    return model


def attached(model: keras.Model) -> Table | None:
    """The stage table `attach` gave the model, or None."""
    return getattr(model, _ATTRIBUTE, None)


def _has_layers(model: keras.Model, table: Table) -> bool:
    layer_names = {layer.name for layer in getattr(model, "layers", [])}
    return all(layer in layer_names for layer, _ in table)


def by_name(model: keras.Model) -> Table | None:
    """The table registered under the model's name, when the model has its layers; else None."""
    table = _TABLES.get(model.name)
    return list(table) if table is not None and _has_layers(model, table) else None


def by_layer_names(model: keras.Model) -> tuple[str, Table] | None:
    """The last resort: `(name, table)` of the first registered table whose layers the model has, or None.

    For models that lost their registered name: an int8 twin (`<name>_int8`),
    a teacher loaded from a file renamed after it (an ensemble's members), a
    builder that named its model otherwise.
    """
    return next(((name, list(table)) for name, table in _TABLES.items() if _has_layers(model, table)), None)
