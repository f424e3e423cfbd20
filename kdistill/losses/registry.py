"""The registry of distillation losses: names a config file can use, and the classes they build.

A leaf module: it imports nothing from kdistill, so every loss module can
register itself with a decorator, and a user's own loss becomes usable by name
(in Python and in YAML configs) the same way.

Example:
    >>> import keras
    >>> from kdistill.losses import registry
    >>> @registry.register("my_l1", kind="feature")
    ... @keras.saving.register_keras_serializable(package="my_project")
    ... class MyL1(keras.losses.Loss):
    ...     def call(self, teacher, student, labels=None):
    ...         return keras.ops.mean(keras.ops.abs(teacher - student), axis=-1)
    >>> "my_l1" in registry.available("feature")
    True
    >>> registry.unregister("my_l1")
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["KINDS", "register", "unregister", "lookup", "available"]

#: what a loss compares: "feature" (tapped maps or vectors) or "logits"
KINDS = ("feature", "logits")

# name -> (class, kind, keyword arguments the name implies)
_REGISTRY: dict[str, tuple[type, str, dict[str, Any]]] = {}


def register(*names: str, kind: str, **implied: Any) -> Callable[[type], type]:
    """Class decorator: makes a loss class available under `names`.

    Args:
        *names: one or more names (lower case), e.g. `"mse", "fitnets"`.
        kind: "feature" or "logits".
        **implied: options every one of these names sets (`normalize=True`).

    Raises:
        ValueError: for an unknown kind or a name already taken by another class.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, received {kind!r}.")
    if not names:
        raise ValueError("register needs at least one name.")

    def decorator(cls: type) -> type:
        for name in names:
            key = name.lower()
            if key in _REGISTRY and _REGISTRY[key][0] is not cls:
                raise ValueError(f"The loss name {key!r} is already registered to {_REGISTRY[key][0].__name__}; pick another name.")
            _REGISTRY[key] = (cls, kind, dict(implied))
        return cls

    return decorator


def unregister(name: str) -> None:
    """Removes a name (tests and interactive sessions)."""
    _REGISTRY.pop(name.lower(), None)


def lookup(name: str) -> tuple[type, str, dict[str, Any]]:
    """`(class, kind, implied options)` of a registered name; KeyError if unknown."""
    return _REGISTRY[name.lower()]


def available(kind: str | None = None) -> list[str]:
    """Registered names, optionally only those of one kind ("feature" or "logits")."""
    return sorted(name for name, (_, registered_kind, _) in _REGISTRY.items() if kind in (None, registered_kind))
