"""kdistill: knowledge distillation for Keras 3.

The package is grouped by concern: `models` (teachers, students, taps),
`adapters` (projections, ReviewKD fusion), `losses` (one registry of methods),
`distiller` (FeatureDistiller), `run` (config, jobs, callbacks, distribution,
teacher cache), `export` (writers, parity report), plus `data`, `evaluation`,
`plots`, `statistics` and the `cli`.

Example:
    >>> import kdistill
    >>> sorted(kdistill.students.available())[:2]
    ['mobilenet_v2', 'mobilenet_v3_small']
"""

from kdistill import adapters, data, evaluation, export, losses, models, statistics
from kdistill.distiller import UNLABELED, FeatureDistiller
from kdistill.models import preprocessing, students, tap_suggest, taps, teachers

__version__ = "0.1.0"

__all__ = ["FeatureDistiller", "UNLABELED", "adapters", "data", "evaluation", "export", "losses", "models", "preprocessing", "statistics",
           "students", "tap_suggest", "taps", "teachers", "__version__"]
