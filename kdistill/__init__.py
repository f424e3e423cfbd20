"""kdistill: knowledge distillation for Keras 3.

The package is grouped by concern: `models` (teachers, students, taps),
`adapters` (projections, ReviewKD fusion), `losses` (one registry of methods),
`distiller` (FeatureDistiller), `run` (config, jobs, callbacks, distribution,
teacher cache), `export` (writers, parity report), plus `data` (and its `batches`),
`evaluation` (and `segmentation_metrics` for segmenters), `plots`, `statistics` and the `cli`.

Submodules load on first use, so `import kdistill` does not load Keras: the
`kdistill --backend jax` command sets `KERAS_BACKEND` before Keras picks its
backend (it does so once, on import).

Example:
    >>> import kdistill
    >>> sorted(kdistill.students.available())[:2]
    ['mobilenet_v2', 'mobilenet_v3_small']
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it (a module itself where the two are equal)
_LAZY = {
    "FeatureDistiller": "kdistill.distiller",
    "UNLABELED": "kdistill.labels",
    "adapters": "kdistill.adapters",
    "batches": "kdistill.data.batches",
    "data": "kdistill.data",
    "evaluation": "kdistill.evaluation",
    "export": "kdistill.export",
    "losses": "kdistill.losses",
    "models": "kdistill.models",
    "quantize": "kdistill.quantize",
    "segmentation_metrics": "kdistill.segmentation_metrics",
    "statistics": "kdistill.statistics",
    "preprocessing": "kdistill.models.preprocessing",
    "segmenters": "kdistill.models.segmenters",
    "students": "kdistill.models.students",
    "tap_suggest": "kdistill.models.tap_suggest",
    "taps": "kdistill.models.taps",
    "teachers": "kdistill.models.teachers",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'kdistill' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
