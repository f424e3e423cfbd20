import numpy as np
import pytest

import kdistill
from kdistill.models import taps

from conftest import small_cnn


def test_bad_teacher_layer_names_closest_match_and_stage_outputs(resnet50_teacher):
    with pytest.raises(ValueError) as info:
        taps.validate(resnet50_teacher, ["conv4_block7_out"])
    message = str(info.value)
    assert "Unknown teacher layer 'conv4_block7_out'" in message
    assert "Did you mean" in message and "conv4_block" in message
    assert "conv2_block3_out (8x8x256)" in message and "conv5_block3_out (1x1x2048)" in message


def test_feature_model_returns_every_tap_and_logits_in_one_call(resnet50_teacher):
    model = taps.feature_model(resnet50_teacher, ["conv3_block4_out", "conv4_block6_out"])
    out = model(np.zeros((2, 32, 32, 3), "float32"), training=False)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "conv3_block4_out": (2, 4, 4, 512),
        "conv4_block6_out": (2, 2, 2, 1024),
        "logits": (2, 10),
    }
    np.testing.assert_allclose(
        out["logits"], resnet50_teacher(np.zeros((2, 32, 32, 3), "float32"), training=False), rtol=1e-5, atol=1e-5
    )


def test_presets_pair_stages_by_depth():
    assert taps.preset("resnet50", "mobilenet_v2") == {
        "conv3_block4_out": "block_6_expand_relu",
        "conv4_block6_out": "block_13_expand_relu",
    }
    assert taps.preset("resnet50", "resnet20", stages=None) == {
        "conv2_block3_out": "stage1_out",
        "conv3_block4_out": "stage2_out",
        "conv4_block6_out": "stage3_out",
    }
    with pytest.raises(ValueError, match="Unknown student family"):
        taps.preset("resnet50", "mobilenet_v9")
    with pytest.raises(ValueError, match="out of range"):
        taps.preset("resnet50", "resnet20", stages=(5,))


def test_stage_outputs_of_an_unknown_model_are_the_last_layer_per_resolution():
    model = small_cnn("net")
    assert [name for name, _ in taps.stage_outputs(model)] == ["net_stage1", "net_stage2"]
    assert taps.family(model) is None


@pytest.mark.parametrize("name", kdistill.students.available())
def test_every_bundled_student_has_its_preset_stages(name):
    student = kdistill.students.get(name, num_classes=10, input_shape=(32, 32, 3))
    assert taps.family(student) == name
    shapes = [shape for _, shape in taps.stage_outputs(student)]
    assert all(len(shape) == 4 for shape in shapes)
    assert [s[1] for s in shapes] == sorted([s[1] for s in shapes], reverse=True)


#: the stage tables the presets of 0.3 used for the bundled networks: published runs (the demo, the studies) read these
#: pairs, so every preset of a bundled pair must stay exactly this. ResNet101/152 kept ResNet50's table
#: (conv4_block6_out, not their deeper last conv4 block).
_PUBLISHED_STAGES = {
    "resnet50": ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"],
    "resnet20": ["stage1_out", "stage2_out", "stage3_out"],
    "mobilenet_v2": ["block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu"],
    "mobilenet_v3_small": [
        "expanded_conv_project_bn",
        "expanded_conv_2_add",
        "expanded_conv_7_add",
        "expanded_conv_10_add",
    ],
}
_PUBLISHED_STAGES.update({name: _PUBLISHED_STAGES["resnet50"] for name in ("resnet101", "resnet152")})
_PUBLISHED_STAGES.update({name: _PUBLISHED_STAGES["resnet20"] for name in ("resnet8x4", "resnet32", "resnet56")})


def _published_preset(teacher: str, student: str, stages) -> dict:
    teacher_stages, student_stages = _PUBLISHED_STAGES[teacher], _PUBLISHED_STAGES[student]
    indices = range(min(len(teacher_stages), len(student_stages))) if stages is None else stages
    return {teacher_stages[i]: student_stages[i] for i in indices}


@pytest.fixture(scope="module")
def bundled_students():
    return {
        name: kdistill.students.get(name, num_classes=10, input_shape=(32, 32, 3))
        for name in ("mobilenet_v2", "mobilenet_v3_small", "resnet8x4", "resnet20")
    }


@pytest.mark.parametrize("teacher_name", ["resnet50", "resnet20", "resnet32", "resnet56"])
def test_presets_of_bundled_models_are_the_published_pairs(teacher_name, bundled_students, resnet50_teacher):
    teacher = (
        resnet50_teacher
        if teacher_name == "resnet50"
        else kdistill.teachers.get(teacher_name, num_classes=10, input_shape=(32, 32, 3))
    )
    for student_name, student in bundled_students.items():
        for stages in [(1, 2), None, (0,)]:
            assert taps.preset(teacher, student, stages=stages) == _published_preset(
                teacher_name, student_name, stages
            ), (student_name, stages)


@pytest.mark.parametrize("teacher_name", sorted(set(_PUBLISHED_STAGES) & set(kdistill.teachers.available())))
def test_presets_of_bundled_names_are_the_published_pairs(teacher_name):
    for student_name in kdistill.students.available():
        for stages in [(1, 2), None]:
            assert taps.preset(teacher_name, student_name, stages=stages) == _published_preset(
                teacher_name, student_name, stages
            )


def test_one_tap_resolution_for_python_and_the_cli_fails_clearly_for_a_pair_without_preset():
    teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
    for taps_option in (None, "preset"):  # FeatureDistiller(taps=None), `--taps preset`
        with pytest.raises(
            ValueError,
            match=r"No tap preset knows the teacher 'teacher'.*taps=\{teacher_layer: student_layer\}.*--taps.*kdistill taps suggest",
        ):
            taps.resolve(taps_option, teacher, student)
    with pytest.raises(ValueError, match="kdistill taps suggest"):
        kdistill.FeatureDistiller(teacher, student)
    assert taps.resolve("none", teacher, student) == taps.resolve({}, teacher, student) == {}
    assert kdistill.FeatureDistiller(teacher, student, taps={}).taps == {}
    assert taps.resolve({"teacher_stage2": "student_stage2"}, teacher, student) == {"teacher_stage2": "student_stage2"}
    with pytest.raises(ValueError, match="received 'presets'"):
        taps.resolve("presets", teacher, student)
