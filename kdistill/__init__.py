"""kdistill: knowledge distillation for Keras 3 / TensorFlow.

Example:
    >>> import kdistill
    >>> sorted(kdistill.students.available())[:2]
    ['mobilenet_v2', 'mobilenet_v3_small']
"""

from kdistill import data, evaluation, export, losses, preprocessing, projections, students, tap_suggest, taps, teachers
from kdistill.distiller import FeatureDistiller

__version__ = "0.1.0"

__all__ = ["FeatureDistiller", "data", "evaluation", "export", "losses", "preprocessing", "projections", "students", "tap_suggest", "taps", "teachers", "__version__"]
