"""Models: teachers, students, their tap tables, tap suggestion, preprocessing layers, saving.

* `teachers` — a registry of teachers: Keras ResNets with a logits head (random, ImageNet, or a file), CIFAR ResNets;
* `students` — a registry of small students (MobileNetV2/V3, CIFAR ResNets, ...);
* `segmenters` — a registry of small segmenters (a MobileNetV2 student with a pyramid decoder, a convolutional teacher);
* `stages` — the stage tables the registries declare beside their builders (as timm's `feature_info`);
* `taps` — presets, the one tap resolution and the multi-output feature models;
* `ensemble` — several teachers as one model (averaged probabilities, taps per member);
* `checks` — checks on the models and data a distiller is given;
* `folding` — a teacher's inference graph with BatchNormalization folded into its convolutions;
* `hub` — KerasHub presets as teachers and students (`"keras_hub:<preset or folder>"`), stages from their pyramid outputs;
* `tap_suggest` — proposes tap pairs by shape and CKA;
* `preprocessing` — the serializable input-scaling layer;
* `saving` — safe loading and inference copies of models.
"""

from kdistill.models import (
    checks,
    ensemble,
    folding,
    hub,
    preprocessing,
    saving,
    segmenters,
    stages,
    students,
    tap_suggest,
    taps,
    teachers,
)

__all__ = [
    "checks",
    "ensemble",
    "folding",
    "hub",
    "preprocessing",
    "saving",
    "segmenters",
    "stages",
    "students",
    "tap_suggest",
    "taps",
    "teachers",
]
