"""Help choosing taps: candidate stage outputs of both networks, a pairing, and linear-CKA scores.

Linear CKA (Kornblith et al., "Similarity of Neural Network Representations
Revisited", ICML 2019) compares two layers' representations of the same
images: `CKA(X, Y) = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)` on centred, flattened
features; 1 means the same representation up to rotation and scale.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(16, 5))
    >>> round(linear_cka(x, 3 * x), 6)
    1.0
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from kdistill.models import hub, taps as taps_module

__all__ = [
    "linear_cka",
    "Suggestion",
    "suggest",
    "format_suggestion",
    "taps_flag_value",
    "build_pair",
    "build_segmenter_pair",
]


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two `(samples, ...)` feature arrays of the same images."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    if len(x) != len(y):
        raise ValueError(f"CKA compares the same images: {len(x)} teacher vs {len(y)} student samples.")
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    # ‖YᵀX‖²_F = tr(K L) with Gram matrices K = XXᵀ, L = YYᵀ (cheaper for wide features).
    gram_x, gram_y = x @ x.T, y @ y.T
    denominator = np.sqrt((gram_x * gram_x).sum() * (gram_y * gram_y).sum())
    return float((gram_x * gram_y).sum() / denominator) if denominator > 0 else 0.0


@dataclasses.dataclass
class Suggestion:
    """Candidate taps of both networks, a proposed pairing, and optional CKA scores."""

    teacher_stages: list[tuple[str, tuple]]
    student_stages: list[tuple[str, tuple]]
    pairs: dict[str, str]
    cka: np.ndarray | None = None  # (teacher stages, student stages)

    def best_by_cka(self) -> dict[str, str]:
        """For each teacher stage, the student stage with the highest CKA."""
        if self.cka is None:
            raise ValueError("No CKA scores: call suggest(..., images=batch).")
        return {t: self.student_stages[int(np.argmax(row))][0] for (t, _), row in zip(self.teacher_stages, self.cka)}


def _pair_by_depth(teacher_stages, student_stages) -> dict[str, str]:
    """Pairs the deepest stages of both networks, then the next ones up (projections align the sizes)."""
    count = min(len(teacher_stages), len(student_stages))
    return {
        teacher_stages[len(teacher_stages) - count + i][0]: student_stages[len(student_stages) - count + i][0]
        for i in range(count)
    }


def suggest(teacher: keras.Model, student: keras.Model, images: np.ndarray | None = None) -> Suggestion:
    """Lists stage outputs of both networks, proposes a pairing, and scores all pairs by CKA on `images`.

    Args:
        teacher: the teacher model.
        student: the student model.
        images: optional batch (32–256 images of the input shape) to score every
            teacher/student stage pair with linear CKA.

    Returns:
        A `Suggestion`; `format_suggestion` prints it, `kdistill.plots.cka_heatmap` plots it.
    """
    teacher_stages = taps_module.stage_outputs(teacher)
    student_stages = taps_module.stage_outputs(student)
    if not teacher_stages or not student_stages:
        raise ValueError(
            "No stage outputs found (a model without 4-D feature maps?); pick taps by name from model.summary()."
        )
    try:
        pairs = taps_module.preset(teacher, student)
    except ValueError:
        pairs = _pair_by_depth(teacher_stages, student_stages)
    cka = None
    if images is not None:
        teacher_features = taps_module.feature_model(teacher, [n for n, _ in teacher_stages], role="teacher")(
            images, training=False
        )
        student_features = taps_module.feature_model(student, [n for n, _ in student_stages], role="student")(
            images, training=False
        )
        cka = np.array(
            [
                [
                    linear_cka(
                        keras.ops.convert_to_numpy(teacher_features[t]), keras.ops.convert_to_numpy(student_features[s])
                    )
                    for s, _ in student_stages
                ]
                for t, _ in teacher_stages
            ]
        )
    return Suggestion(teacher_stages, student_stages, pairs, cka)


def build_pair(
    teacher: str | list[str], student: str, image_size: int = 32, student_width: float | None = None
) -> tuple[keras.Model, keras.Model]:
    """The teacher and student `kdistill taps suggest` compares, from what a run config names.

    Args:
        teacher: a saved teacher file, a list of them (their ensemble, taps '<file stem>/<layer>' as in
            `kdistill distill`), or a teacher name (`resnet50`: random weights).
        student: a registered student name (built for the teacher's classes) or a saved model.
        image_size: the square input size.
        student_width: the width multiplier of a MobileNet student (None: its default).
    """
    from kdistill.models import saving, students, teachers

    shape, names = (image_size, image_size, 3), [teacher] if isinstance(teacher, str) else list(teacher)
    if len(names) > 1:
        members = [teachers.load(str(path), input_shape=shape) for path in names]
        for member, path in zip(members, names):
            member.name = os.path.splitext(os.path.basename(str(path)))[0]
        teacher_model = teachers.ensemble(members)
    else:
        teacher_model = (
            teachers.load(names[0], input_shape=shape)
            if os.path.exists(names[0])
            else teachers.get(names[0], num_classes=10, input_shape=shape)
        )
    width = {} if student_width is None else {"width": student_width}
    student_model = (
        saving.load_model(student, role="student")
        if os.path.exists(student)
        else students.get(student, num_classes=teacher_model.outputs[0].shape[-1], input_shape=shape, **width)
    )
    return teacher_model, student_model


def _segmenter(name: str, role: str, num_classes: int | None, shape: tuple, **options) -> keras.Model:
    """A saved segmenter, or one `kdistill.segmenters.get` builds (a registered name: random weights; `keras_hub:<folder>`: a DeepLabV3 preset)."""
    from kdistill.models import checks, saving, segmenters

    if os.path.isfile(name):
        model = saving.load_model(name, role=role, classifier=False)
    else:
        model = segmenters.get(name, num_classes, shape, **options)
    checks.check_segmenter(model, role, why="the taps are for segmentation")
    return model


def build_segmenter_pair(
    teacher: str, student: str, image_size: int = 64, student_width: float | None = None
) -> tuple[keras.Model, keras.Model]:
    """The teacher and student segmenters `kdistill taps suggest --task segmentation` compares.

    Args:
        teacher: a saved segmenter (`.keras`), a `kdistill.segmenters` name (random
            weights: the stages, not their scores, are what it shows) or
            `"keras_hub:<folder>"` (a DeepLabV3 preset).
        student: likewise; a name is built for the teacher's classes and input size.
        image_size: the square input size when the teacher file does not fix one.
        student_width: the width multiplier of `mobilenet_v2_segmenter` (None: its default).

    Example:
        teacher, student = build_segmenter_pair("conv_segmenter", "mobilenet_v2_segmenter", image_size=64)
    """
    shape = (image_size, image_size, 3)
    # a name's classes do not change its stages
    teacher_model = _segmenter(teacher, "teacher", None if hub.is_hub_name(teacher) else 2, shape)
    if None not in teacher_model.inputs[0].shape[1:]:
        shape = tuple(teacher_model.inputs[0].shape[1:])
    width = {} if student_width is None else {"width": student_width}
    return teacher_model, _segmenter(student, "student", int(teacher_model.outputs[0].shape[-1]), shape, **width)


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape[1:])


def format_suggestion(suggestion: Suggestion) -> str:
    """A plain-text table: teacher stage, shape, proposed student stage, shape, CKA (when scored), best by CKA."""
    student_shapes = dict(suggestion.student_stages)
    best = suggestion.best_by_cka() if suggestion.cka is not None else {}
    header = f"{'teacher stage':<24} {'shape':<12} {'proposed student stage':<26} {'shape':<12} {'CKA':>6}  best by CKA"
    lines = [header, "-" * len(header)]
    student_index = {name: i for i, (name, _) in enumerate(suggestion.student_stages)}
    for row, (teacher_name, teacher_shape) in enumerate(suggestion.teacher_stages):
        partner = suggestion.pairs.get(teacher_name)
        cka = f"{suggestion.cka[row, student_index[partner]]:.3f}" if suggestion.cka is not None and partner else "-"
        lines.append(
            f"{teacher_name:<24} {_shape(teacher_shape):<12} {partner or '-':<26} "
            f"{_shape(student_shapes[partner]) if partner else '-':<12} {cka:>6}  {best.get(teacher_name, '-')}"
        )
    lines += [
        "",
        "--taps " + taps_flag_value(suggestion.pairs),
        "(config: taps: {"
        + ", ".join(f"{t}: {s}" for t, s in suggestion.pairs.items())
        + "}; Python: taps="
        + repr(suggestion.pairs)
        + ")",
    ]
    return "\n".join(lines)


def taps_flag_value(pairs: dict[str, str]) -> str:
    """`{teacher_layer: student_layer}` as the value `kdistill distill --taps` takes.

    Example:
        >>> taps_flag_value({"conv3_block4_out": "block_6_expand_relu", "conv4_block6_out": "block_13_expand_relu"})
        'conv3_block4_out:block_6_expand_relu,conv4_block6_out:block_13_expand_relu'
    """
    return ",".join(f"{teacher_layer}:{student_layer}" for teacher_layer, student_layer in pairs.items())
