import pytest

from kdistill.config import DistillConfig


def test_valid_config_with_coercion_and_defaults():
    config = DistillConfig.from_dict({"student": "resnet20", "alpha": 1, "taps": {"conv3_block4_out": "stage2_out"}, "augment": ["flip"]})
    assert config.alpha == 1.0 and isinstance(config.alpha, float)
    assert config.resolved_output_dir().endswith("saved_models/distill")


def test_unknown_key_names_the_closest_one():
    with pytest.raises(ValueError, match=r"Unknown config key 'temprature'. Did you mean 'temperature'"):
        DistillConfig.from_dict({"temprature": 4})


@pytest.mark.parametrize(
    "values, pattern",
    [
        ({"epochs": "two"}, r"'epochs' must be int, received str 'two'"),
        ({"alpha": True}, r"'alpha' must be float"),
        ({"alpha": 2.0}, r"alpha must be in \[0, 1\]"),
        ({"temperature": 0}, "temperature must be positive"),
        ({"taps": "all"}, "taps must be 'preset', 'none'"),
        ({"student": None}, "may not be empty"),
    ],
)
def test_wrong_types_and_values_are_explained(values, pattern):
    with pytest.raises(ValueError, match=pattern):
        DistillConfig.from_dict(values)


def test_missing_teacher_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="kdistill train-teacher"):
        DistillConfig.from_dict({"teacher": str(tmp_path / "teacher.keras")})
