import os

import pytest

from kdistill.run.config import DistillConfig


def test_valid_config_with_coercion_and_defaults():
    config = DistillConfig.from_dict(
        {"student": "resnet20", "alpha": 1, "taps": {"conv3_block4_out": "stage2_out"}, "augment": ["flip"]}
    )
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
        ({"alpha": 2.0}, r"alpha must be a number in \[0, 1\]"),
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


def test_cifar100_recipe_config_parses_with_its_schedule():
    import os

    import pytest
    import yaml

    from kdistill.run import optimizers
    from kdistill.run.config import DistillConfig

    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "configs", "cifar100_r50_mv2.yaml"
    )
    config = DistillConfig.from_dict(yaml.safe_load(open(path)), check_files=False)
    assert config.lr_decay_epochs == [150, 180, 210] and config.weight_decay == 5e-4 and config.epochs == 240
    optimizer = optimizers.make_optimizer(
        config.optimizer, config.learning_rate, config.weight_decay, config.lr_decay_epochs, steps_per_epoch=10
    )
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    optimizer.iterations.assign(1499)  # the last step of epoch 149
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    optimizer.iterations.assign(1800)  # the first step of epoch 180: decayed twice
    assert float(optimizer.learning_rate) == pytest.approx(0.0001)
    with pytest.raises(ValueError, match="strategy must be one of"):
        DistillConfig.from_dict({"strategy": "mirored"})


def test_the_function_matching_recipe_config_reads_as_documented():
    """examples/configs/fashion_mnist_function_matching.yaml: KL only at T = 1, consistent cached views with mixup, cosine, clipping."""
    import yaml

    from kdistill.run import optimizers
    from kdistill.run.config import DistillConfig

    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "examples",
        "configs",
        "fashion_mnist_function_matching.yaml",
    )
    with open(path) as handle:
        config = DistillConfig.from_dict(yaml.safe_load(handle), check_files=False)
    assert (config.alpha, config.temperature, config.logits_loss, config.feature_loss) == (1.0, 1.0, "kl", None)
    assert config.cache_views == 16 and "mixup" in config.augment and config.cache_top_k == 5
    optimizer = optimizers.make_optimizer(
        config.optimizer,
        config.learning_rate,
        steps_per_epoch=10,
        schedule=config.schedule,
        warmup_epochs=config.warmup_epochs,
        epochs=config.epochs,
        global_clipnorm=config.global_clipnorm,
    )
    assert optimizer.global_clipnorm == 1.0 and float(optimizer.learning_rate) == 0.0  # warm-up starts from 0
    optimizer.iterations.assign(10)  # the end of the warm-up: the peak
    assert abs(float(optimizer.learning_rate) - 1e-3) < 1e-9
    optimizer.iterations.assign(449)
    assert float(optimizer.learning_rate) < 1e-6  # cosine decay to zero at the end
