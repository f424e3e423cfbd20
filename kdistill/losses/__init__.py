"""Distillation losses: one registry of names, one protocol, one file per family.

* `base` — the protocol (`DistillationLoss`: `call(teacher, student, labels=None)`
  returns per-sample values) and `per_sample_loss`, the one place losses are called;
* `registry` — names a config can use (`register` decorator, `available`);
* `logits` (KD, DKD, logit-standardised KD), `features` (FitNets, AT, SP, RKD,
  PKT, HCL), `feature_kl` (softened KL over a feature's channels), `cwd`
  (channel-wise distillation), `contrastive` (CRD), `dist_relation` (DIST), `standardized_dkd`;
* `combined` — weighted lists such as `[("crd", 0.8), ("at", 1000.0)]`.
* `dense` — segmenters' logit maps: per-pixel terms over the valid pixels of each sample (`ignore_label`), sizes;
* `objective` and `labels` — the distiller's weighted total, and the cross-entropy with labels.

A new method is one file here that defines its function and class and decorates
the class with `@register("name", kind=...)`, plus an import below. Names are
unique per kind: `"kl"` is the logits KD loss and, with `kind="feature"`, the
feature KL; without a kind a shared name means the logits loss.

Example:
    >>> import numpy as np, kdistill
    >>> teacher = np.array([[2.0, 0.5, -1.0]], dtype="float32")
    >>> student = np.array([[1.0, 1.0, 0.0]], dtype="float32")
    >>> loss = kdistill.losses.get("kl", temperature=2.0)
    >>> float(loss(teacher, student)) > 0
    True
    >>> type(loss).__name__, type(kdistill.losses.get("kl", kind="feature")).__name__
    ('LogitsKL', 'FeatureKL')
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import keras

from kdistill.errors import did_you_mean, shown
from kdistill.losses import (  # noqa: F401 - each registers its names
    adversarial,
    contrastive,
    cwd,
    dist_relation,
    feature_kl,
    features,
    irg,
    logits,
    standardized_dkd,
)
from kdistill.losses._utils import check_temperature
from kdistill.losses.adversarial import AdversarialLoss
from kdistill.losses.base import DistillationLoss, per_sample_loss
from kdistill.losses.combined import Combined
from kdistill.losses.contrastive import ContrastiveRepresentationLoss
from kdistill.losses.cwd import ChannelWiseDivergence
from kdistill.losses.dist_relation import DIST
from kdistill.losses.feature_kl import FeatureKL
from kdistill.losses.features import (
    AttentionTransfer,
    FeatureMSE,
    HierarchicalContextLoss,
    PKT,
    RKD,
    SimilarityPreserving,
    feature_mse,
)
from kdistill.losses.irg import IRG
from kdistill.losses.logits import DKD, LogitsKL, StandardizedKD, kd_kl_divergence
from kdistill.losses.registry import available, lookup, register
from kdistill.losses.standardized_dkd import StandardizedDKD

__all__ = [
    "get",
    "available",
    "register",
    "per_sample_loss",
    "check_temperature",
    "DistillationLoss",
    "Combined",
    "FeatureMSE",
    "AttentionTransfer",
    "SimilarityPreserving",
    "RKD",
    "PKT",
    "HierarchicalContextLoss",
    "ContrastiveRepresentationLoss",
    "LogitsKL",
    "DKD",
    "StandardizedKD",
    "StandardizedDKD",
    "DIST",
    "FeatureKL",
    "ChannelWiseDivergence",
    "IRG",
    "AdversarialLoss",
    "feature_mse",
    "kd_kl_divergence",
]


def _accepts(cls: type, option: str) -> bool:
    return option in inspect.signature(cls.__init__).parameters


def _is_weighted_pair(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[0], (str, dict))
        and isinstance(value[1], (int, float))
        and not isinstance(value[1], bool)
    )


def get(identifier: str | keras.losses.Loss | Callable | dict | list, kind: str | None = None, **kwargs) -> Any:
    """Returns a distillation loss from a name, a config dict, a weighted list or an instance.

    Args:
        identifier: a registered name (see `available()`), `{"name": ...,
            option: value}`, a list of names / `(name, weight)` pairs / such
            dicts with a `"weight"` (a `Combined` weighted sum), a serialized
            loss config, a loss object (`keras.losses.Loss` or loss layer) or a
            callable `fn(teacher, student) -> per-sample loss`.
        kind: `"feature"` or `"logits"`: look the name up among that kind's
            losses. None searches both; a name registered under both kinds
            (`"kl"`) then builds the logits loss.
        **kwargs: options for a named loss, e.g. `temperature=4.0`; options a
            loss does not take (temperature for a feature loss) are ignored.
            A name may carry its own options as `"name:option=value,..."`
            (`"cwd:temperature=1"`, what `--feature-loss` takes); they win over these.

    Returns:
        A loss following the protocol of `kdistill.losses.base`.

    Raises:
        ValueError: for an unknown name, listing the known ones (and the closest).

    Example:
        >>> get("kl", temperature=2.0).temperature
        2.0
        >>> get("cwd:temperature=1", kind="feature", temperature=4.0).temperature
        1.0
        >>> get("klx")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Unknown distillation loss 'klx'. Did you mean 'kl'? Known: ..., kd, kl, ...
    """
    if isinstance(identifier, (keras.losses.Loss, keras.layers.Layer)) or (
        callable(identifier) and not isinstance(identifier, (str, dict, list, tuple))
    ):
        return identifier
    if _is_weighted_pair(identifier):
        return get([identifier], kind=kind, **kwargs)
    if isinstance(identifier, (list, tuple)):
        parts, weights = [], []
        for entry in identifier:
            weight = 1.0
            if _is_weighted_pair(entry):
                entry, weight = entry
            elif isinstance(entry, dict) and "name" in entry:
                entry = dict(entry)
                weight = entry.pop("weight", 1.0)
            parts.append(get(entry, kind=kind, **kwargs))
            weights.append(weight)
        if not parts:
            raise ValueError("An empty list of losses was given; name at least one, e.g. ['mse'].")
        return Combined(parts, weights)
    if isinstance(identifier, dict) and "name" in identifier and "class_name" not in identifier:
        options = dict(identifier)
        if "weight" in options:
            return get([options], kind=kind, **kwargs)
        name = options.pop("name")
        return get(name, kind=kind, **{**kwargs, **options})
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if not isinstance(identifier, str):
        raise TypeError(
            f"A distillation loss must be a name, a config dict, a keras.losses.Loss or a callable; "
            f"received {type(identifier).__name__}: {shown(identifier)}."
        )
    if ":" in identifier:  # "cwd:temperature=1,tau=..." (how a command-line flag gives options)
        return get(_name_with_options(identifier), kind=kind, **kwargs)
    key = identifier.lower()
    known = available(kind)
    if key not in known:
        label = f"{kind} loss" if kind else "distillation loss"
        raise ValueError(f"Unknown {label} {shown(identifier)}.{did_you_mean(key, known)} Known: {', '.join(known)}.")
    cls, _, implied = lookup(key, kind)
    options = dict(implied)
    for option, value in kwargs.items():
        if option == "temperature" and not _accepts(cls, "temperature"):
            continue
        options[option] = value
    return cls(**options)


def _name_with_options(text: str) -> dict:
    """`"cwd:temperature=1,spatial=mean"` -> `{"name": "cwd", "temperature": 1, "spatial": "mean"}` (values read as YAML)."""
    import yaml

    from kdistill.errors import number_from_yaml

    name, _, rest = text.partition(":")
    options = {"name": name.strip()}
    for pair in (part for part in rest.split(",") if part.strip()):
        if "=" not in pair:
            raise ValueError(
                f"Loss options go as name:option=value,option=value (e.g. cwd:temperature=1), received {text!r}."
            )
        option, value = pair.split("=", 1)
        options[option.strip()] = number_from_yaml(yaml.safe_load(value.strip()))
    return options
