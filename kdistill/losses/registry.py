"""The registry of distillation losses: names a config file can use, and the classes they build.

A leaf module: it imports nothing from kdistill, so every loss module can
register itself with a decorator, and a user's own loss becomes usable by name
(in Python and in YAML configs) the same way.

Names are unique per kind, not overall: `"kl"` is Hinton's logits KD under
`kind="logits"` and the feature KL under `kind="feature"`. A lookup without a
kind resolves such a shared name to the logits loss; the distiller always
looks up by kind.

Example:
    >>> import keras
    >>> from kdistill.losses import registry
    >>> @registry.register("my_l1", kind="feature")
    ... @keras.saving.register_keras_serializable(package="my_project")
    ... class MyL1(keras.losses.Loss):
    ...     def call(self, teacher, student, labels=None):
    ...         return keras.ops.mean(keras.ops.abs(teacher - student), axis=-1)
    >>> "my_l1" in registry.available("feature"), "my_l1" in registry.available("logits")
    (True, False)
    >>> registry.lookup("my_l1")[1]
    'feature'
    >>> registry.unregister("my_l1")
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["KINDS", "register", "unregister", "lookup", "available"]

#: what a loss compares: "feature" (tapped maps or vectors) or "logits"; a lookup without a kind tries them in reverse
#: order
KINDS = ("feature", "logits")

# kind -> name -> (class, keyword arguments the name implies)
_REGISTRY: dict[str, dict[str, tuple[type, dict[str, Any]]]] = {kind: {} for kind in KINDS}


def _check_kind(kind: str | None, allow_none: bool = True) -> None:
    if (kind is None and not allow_none) or (kind is not None and kind not in KINDS):
        raise ValueError(f"kind must be one of {KINDS}{' or None' if allow_none else ''}, received {kind!r}.")


def register(*names: str, kind: str, **implied: Any) -> Callable[[type], type]:
    """Class decorator: makes a loss class available under `names` for one kind.

    Args:
        *names: one or more names (lower case), e.g. `"mse", "fitnets"`.
        kind: "feature" or "logits". A name may be registered once per kind.
        **implied: options every one of these names sets (`normalize=True`).

    Raises:
        ValueError: for an unknown kind, or a name already taken by another
            class within the same kind.
    """
    _check_kind(kind, allow_none=False)
    if not names:
        raise ValueError("register needs at least one name.")

    def decorator(cls: type) -> type:
        table = _REGISTRY[kind]
        for name in names:
            key = name.lower()
            if key in table and table[key][0] is not cls:
                raise ValueError(
                    f"The {kind} loss name {key!r} is already registered to {table[key][0].__name__}; pick another name."
                )
            table[key] = (cls, dict(implied))
        return cls

    return decorator


def unregister(name: str, kind: str | None = None) -> None:
    """Removes a name from one kind, or from every kind when `kind` is None (tests and interactive sessions)."""
    _check_kind(kind)
    for registered_kind in KINDS if kind is None else (kind,):
        _REGISTRY[registered_kind].pop(name.lower(), None)


def lookup(name: str, kind: str | None = None) -> tuple[type, str, dict[str, Any]]:
    """`(class, kind, implied options)` of a registered name.

    Args:
        name: a registered name (any case).
        kind: "feature" or "logits"; None searches both, and a name registered
            under both kinds (such as `"kl"`) resolves to the logits loss.

    Raises:
        KeyError: if the name is not registered (under `kind`, when given).
    """
    _check_kind(kind)
    key = name.lower()
    for registered_kind in (kind,) if kind is not None else reversed(KINDS):
        if key in _REGISTRY[registered_kind]:
            cls, implied = _REGISTRY[registered_kind][key]
            return cls, registered_kind, dict(implied)
    raise KeyError(name)


def available(kind: str | None = None) -> list[str]:
    """Registered names, sorted and unique, optionally only those of one kind ("feature" or "logits")."""
    _check_kind(kind)
    return sorted(
        {name for registered_kind in KINDS if kind in (None, registered_kind) for name in _REGISTRY[registered_kind]}
    )
