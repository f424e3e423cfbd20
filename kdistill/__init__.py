"""kdistill: knowledge distillation for Keras 3.

The package is grouped by concern: `models` (teachers, students, taps),
`adapters` (projections, ReviewKD fusion), `losses` (one registry of methods),
`distiller` (FeatureDistiller), `run` (config, jobs, callbacks, distribution,
teacher cache), `export` (writers, parity report), plus `data` (and its `batches`),
`evaluation` (and `segmentation_metrics` for segmenters), `plots`, `statistics` and the `cli`.

Submodules load on first use, so `import kdistill` does not load Keras: the
`kdistill --backend jax` command sets `KERAS_BACKEND` before Keras picks its
backend (it does so once, on import). kdistill's Keras objects (the distiller,
its layers and losses) are registered as soon as Keras is loaded, before or
after `import kdistill`, so `keras.saving.load_model("run.keras")` finds them.

Example:
    >>> import kdistill
    >>> sorted(kdistill.students.available())[:2]
    ['mobilenet_v2', 'mobilenet_v3_small']
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import sys

__version__ = "0.3.0"  # as pyproject.toml and CHANGELOG.md (tests/test_docs.py)

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


#: the modules that register kdistill's Keras objects (`register_keras_serializable`): the distiller with its losses,
#: adapters and model layers, and the quantization-aware layers
_SERIALIZABLE = ("kdistill.distiller", "kdistill.quantize.layers")


def _register_keras_objects() -> None:
    """Imports the modules whose classes a saved kdistill model names (cheap once Keras is loaded)."""
    for name in _SERIALIZABLE:
        try:
            importlib.import_module(name)
        except ImportError as error:  # e.g. a Keras backend whose package is missing: the first use reports it
            logging.getLogger(__name__).debug("kdistill's Keras objects not registered: %s", error)


class _AfterKerasLoads(importlib.abc.MetaPathFinder):
    """Runs `_register_keras_objects` once `import keras` has finished (a one-shot post-import hook; it imports nothing itself)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")  # the finders after this one
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            load = spec.loader.exec_module

            def exec_module(module):
                load(module)
                _register_keras_objects()

            spec.loader.exec_module = exec_module
        return spec


if getattr(sys.modules.get("keras"), "saving", None) is not None:
    _register_keras_objects()
elif not any(isinstance(finder, _AfterKerasLoads) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterKerasLoads())
