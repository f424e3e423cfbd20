"""The demo's schedule declared once (kdistill.run.demo_settings): its defaults, `--set` overrides and their checks."""

import dataclasses

import pytest

from kdistill import cli
from kdistill.errors import UserError
from kdistill.run import options
from kdistill.run.demo_settings import DEMO_FULL, DEMO_QUICK, DemoSettings, check_settings

#: the demo's schedule as the dict it was before it became DemoSettings (transcribed): the committed demo figures were
#: made with it
BEFORE_QUICK = {
    "train_limit": 10_000,
    "transfer": True,
    "teacher": "resnet20",
    "teacher_epochs": 8,
    "teacher_input_size": 32,
    "student_epochs": 15,
    "student": "mobilenet_v2",
    "student_width": 0.35,
    "alpha": 0.9,
    "temperature": 4.0,
    "feature_loss": "normalized_mse",
    "tap_weight": 10.0,
    "batch_size": 64,
    "export": True,
    "latency_plot": True,
    "latency_images": 500,
    "qat_epochs": 1,
    "qat_learning_rate": 1e-4,
}
BEFORE_FULL = dict(BEFORE_QUICK, train_limit=None, transfer=False, teacher_epochs=10, student_epochs=15)


def test_defaults_are_the_schedule_the_demo_ran_before_in_its_order():
    assert list(DEMO_QUICK.to_dict().items()) == list(BEFORE_QUICK.items())
    assert [field.name for field in dataclasses.fields(DemoSettings)] == [
        *BEFORE_QUICK,
        "test_limit",
    ] and DEMO_QUICK.test_limit is None
    assert list(DEMO_FULL.to_dict().items()) == list(BEFORE_FULL.items())
    assert {key: type(value) for key, value in DEMO_QUICK.to_dict().items()} == {
        key: type(value) for key, value in BEFORE_QUICK.items()
    }


def test_set_overrides_one_entry_and_leaves_the_defaults_alone():
    settings = DEMO_QUICK.replaced(
        options.parse_overrides(["student_epochs=2", "qat_learning_rate=1e-3", "export=false", "test_limit=50"])
    )
    assert (settings.student_epochs, settings.qat_learning_rate, settings.export, settings.test_limit) == (
        2,
        1e-3,
        False,
        50,
    )
    assert settings.to_dict() == dict(
        BEFORE_QUICK, student_epochs=2, qat_learning_rate=1e-3, export=False, test_limit=50
    )
    assert DEMO_QUICK.to_dict() == BEFORE_QUICK  # replaced, not changed in place


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"epochs": 3},
            "Unknown demo setting(s) ['epochs']; known: alpha, batch_size, export, feature_loss, latency_images, latency_plot, "
            "qat_epochs, qat_learning_rate, student, student_epochs, student_width, tap_weight, teacher, teacher_epochs, "
            "teacher_input_size, temperature, test_limit, train_limit, transfer.",
        ),
        ({"export": "maybe"}, "export must be a bool, received the str 'maybe'."),
        ({"student": 3}, "student must be a str, received the int 3."),
        ({"alpha": 2}, "alpha must be a number in [0, 1], received 2."),
        ({"qat_epochs": -1}, "qat_epochs must be a non-negative whole number, received -1."),
    ],
)
def test_an_unknown_key_lists_the_known_ones_and_a_bad_value_names_the_key_and_type(overrides, message):
    with pytest.raises(UserError) as error:
        DEMO_QUICK.replaced(overrides)
    assert str(error.value) == message
    assert check_settings({"qat_epochs": 0, "train_limit": None}) == {"qat_epochs": 0, "train_limit": None}


@pytest.mark.parametrize("words, base", [([], DEMO_QUICK), (["--full"], DEMO_FULL)])
def test_kdistill_demo_runs_the_declared_schedule_with_its_set_overrides(words, base, monkeypatch, tmp_path):
    """In-process up to the data: the settings `kdistill demo` hands on are the declared defaults with `--set` applied."""
    from kdistill.run import demo

    seen = []

    def stop(settings, data_dir, seed):
        seen.append(settings)
        raise UserError("stopped before the data")

    monkeypatch.setattr(demo, "_load_data", stop)
    assert (
        cli.main(
            [
                "demo",
                "--output-dir",
                str(tmp_path / "demo"),
                *words,
                "--set",
                "student_epochs=2",
                "--set",
                "tap_weight=3",
            ]
        )
        == 2
    )
    assert seen == [dataclasses.replace(base, student_epochs=2, tap_weight=3)]


def test_the_segmentation_demo_declares_its_schedule_and_checks_overrides_by_it():
    from kdistill.run.demo_settings import SEGMENTATION_DEMO

    assert SEGMENTATION_DEMO.to_dict() == {
        "image_size": 32,
        "train_scenes": 2000,
        "test_scenes": 500,
        "transfer_scenes": 6000,
        "teacher_epochs": 20,
        "student_epochs": 16,
        "batch_size": 32,
        "learning_rate": 2e-3,
    }
    assert (
        SEGMENTATION_DEMO.replaced({"transfer_scenes": 0}).transfer_scenes == 0
        and SEGMENTATION_DEMO.transfer_scenes == 6000
    )
    with pytest.raises(UserError, match="teacher_epochs must be a positive whole number"):
        SEGMENTATION_DEMO.replaced({"teacher_epochs": 0})
    with pytest.raises(UserError, match="known: batch_size, image_size"):
        SEGMENTATION_DEMO.replaced({"qat_epochs": 1})  # the classification demo's setting
