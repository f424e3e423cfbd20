"""Mixed precision for distillation: build under a dtype policy, run the teacher in the compute dtype.

Losses are always computed in float32 (`FeatureDistiller` casts every term),
and `FeatureDistiller.compile` wraps the optimizer in a `LossScaleOptimizer`
when the student computes in float16.

Example:
    >>> import keras
    >>> from kdistill.run import precision
    >>> with precision.policy_scope("mixed_bfloat16"):
    ...     layer = keras.layers.Dense(2)
    >>> layer.compute_dtype, layer.variable_dtype, keras.config.dtype_policy().name
    ('bfloat16', 'float32', 'float32')
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras

__all__ = ["POLICIES", "policy_scope", "cast_model", "check_policy"]

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def check_policy(name: str) -> str:
    """Returns `name` if it is one of `POLICIES`, else raises a clear error."""
    if name not in POLICIES:
        raise ValueError(f"Unknown precision {name!r}; use one of {', '.join(POLICIES)}.")
    return name


@contextlib.contextmanager
def policy_scope(name: str) -> Iterator[None]:
    """Layers created inside use dtype policy `name`; the previous global policy is restored on exit."""
    check_policy(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def cast_model(model: keras.Model, policy: str) -> keras.Model:
    """A copy of a functional model whose layers compute under `policy`, with the same weights.

    Used for a teacher loaded from a float32 file, so it runs in the compute
    dtype (float16/bfloat16) like the student. Variables stay float32.
    """
    check_policy(policy)
    if getattr(model.dtype_policy, "name", None) == policy:
        return model

    def clone(layer):
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    with policy_scope(policy):
        copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    copy.trainable = model.trainable
    return copy
