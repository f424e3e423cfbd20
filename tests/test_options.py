"""Options declared once (kdistill.run.options): config fields drive the CLI's flags, the number checks and the distiller's options."""

import dataclasses
import inspect

import pytest

from kdistill import cli
from kdistill.errors import UserError
from kdistill.run import commands, flag_checks, options
from kdistill.run.config import DistillConfig

#: FeatureDistiller arguments that are no option of get_config: the models, taps, name, and several teachers' weights
#: (kept in the ensemble)
NOT_OPTIONS = {"self", "teacher", "student", "taps", "teacher_weights", "name", "kwargs"}


def _distiller_fields():
    return {field.name: field for field in dataclasses.fields(DistillConfig) if field.metadata.get("distiller")}


def _flags(parser):
    return {action.dest: action for action in parser._actions if action.option_strings and action.dest != "help"}


def _subparser(name):
    commands = next(action for action in cli.build_parser()._actions if action.dest == "command")
    return commands.choices[name]


def test_config_distiller_fields_are_the_distillers_options_with_its_defaults():
    from kdistill.distiller import FeatureDistiller

    signature = inspect.signature(FeatureDistiller.__init__).parameters
    assert set(FeatureDistiller.OPTIONS) == set(signature) - NOT_OPTIONS
    assert set(_distiller_fields()) == set(FeatureDistiller.OPTIONS)
    for name, field in _distiller_fields().items():
        assert field.default == signature[name].default, name


def test_distiller_options_of_a_config_are_its_distiller_fields():
    config = DistillConfig(feature_loss="at", temperature=2.0, adapter="review", review_channels=8)
    assert config.distiller_options() == {name: getattr(config, name) for name in _distiller_fields()}
    assert config.distiller_options()["adapter"] == "review" and "epochs" not in config.distiller_options()


def test_get_config_saves_every_option_and_round_trips():
    import kdistill
    from conftest import small_cnn

    teacher, student = small_cnn("teacher", widths=(8, 16)), small_cnn("student", widths=(4, 8), seed=1)
    config = DistillConfig(
        feature_loss="at", logits_loss=None, temperature=2.0, alpha=0.7, tap_weights=3.0, logits_weight=0.5
    )
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps={"teacher_stage2": "student_stage2"}, **config.distiller_options()
    )
    saved = distiller.get_config()
    assert list(saved) == ["name", "teacher", "student", "taps", *kdistill.FeatureDistiller.OPTIONS]
    assert (
        saved["tap_weights"] == {"teacher_stage2": 3.0} and saved["logits_loss"] is None and saved["temperature"] == 2.0
    )
    assert "review" not in saved and saved["adapter"] == "projection" and saved["fold_batch_norm"] is True
    restored = kdistill.FeatureDistiller.from_config(saved)
    assert {
        name: getattr(restored, name) for name in ("alpha", "temperature", "logits_weight", "adapter", "tap_weights")
    } == {
        name: getattr(distiller, name) for name in ("alpha", "temperature", "logits_weight", "adapter", "tap_weights")
    }


def test_distill_flags_are_the_config_fields_with_their_help():
    flags = _flags(_subparser("distill"))
    assert set(flags) - {"config", "restart"} == set(options.flag_names(DistillConfig))
    fields = {field.name: field for field in dataclasses.fields(DistillConfig)}
    for name in options.flag_names(DistillConfig):
        assert flags[name].help == fields[name].metadata["help"] and flags[name].default is None, name
    assert flags["check_teacher"].option_strings == ["--no-check-teacher"] and flags["tensorboard"].metavar == "DIR"
    assert flags["image_size"].type is int and flags["alpha"].type is float and flags["taps"].type is options.taps_flag
    # config file only
    assert not {"tap_weights", "alignment", "optimizer", "weight_decay", "lr_decay_epochs"} & set(flags)


def test_data_flags_of_other_commands_default_to_the_config_defaults():
    for command in ("train-teacher", "evaluate", "cache-teacher", "export"):
        words = (
            [command]
            + (["m.keras"] if command in ("evaluate", "export") else [])
            + (["--teacher", "t.keras"] if command == "cache-teacher" else [])
        )
        args = cli.build_parser().parse_args(words)
        # so that --config can fill them
        assert args.config is None and all(getattr(args, name) is None for name in cli.DATA_FLAGS)
        cli.fill_from_config(args, cli.DATA_FLAGS)
        for name in cli.DATA_FLAGS:
            assert getattr(args, name) == getattr(DistillConfig, name), (command, name)


@pytest.mark.parametrize(
    "argv, values",
    [
        ([], {}),
        (["--teacher", "a.keras"], {"teacher": "a.keras"}),
        (
            ["--teacher", "a.keras", "b.keras", "--teacher-weights", "2,1"],
            {"teacher": ["a.keras", "b.keras"], "teacher_weights": [2.0, 1.0]},
        ),
        (
            ["--taps", "t1:s1, t2:s2", "--augment", "flip, crop", "--no-check-teacher", "--adapter", "review"],
            {
                "taps": {"t1": "s1", "t2": "s2"},
                "augment": ["flip", "crop"],
                "check_teacher": False,
                "adapter": "review",
            },
        ),
        (
            ["--feature-loss", "None", "--logits-loss", "dkd", "--epochs", "3", "--alpha", "0.25", "--augment", ""],
            {"feature_loss": None, "logits_loss": "dkd", "epochs": 3, "alpha": 0.25},
        ),
    ],
)
def test_flags_override_only_what_they_set(argv, values):
    args = cli.build_parser().parse_args(["distill", *argv])
    assert options.merge_flags({}, args, DistillConfig) == values
    merged = options.merge_flags({"student": "resnet8x4", "logits_loss": "none", "epochs": 9}, args, DistillConfig)
    assert (
        merged["student"] == "resnet8x4"
        and merged["epochs"] == values.get("epochs", 9)
        and merged["logits_loss"] == values.get("logits_loss")
    )


def test_teacher_weights_flag_says_what_it_takes():
    args = cli.build_parser().parse_args(["distill", "--teacher-weights", "2,x"])
    with pytest.raises(
        UserError, match="--teacher-weights takes numbers separated by commas, e.g. 2,1; received '2,x'"
    ):
        options.flag_values(args, DistillConfig)


def test_number_flags_of_other_commands_follow_the_config_rules_and_their_own():
    parse = cli.build_parser().parse_args
    with pytest.raises(UserError, match=r"^--train-limit must be a positive whole number, received 0\.$"):
        flag_checks.check_numbers(parse(["train-teacher", "--train-limit", "0"]))
    with pytest.raises(UserError, match="--warmup-epochs must be a non-negative number"):
        flag_checks.check_numbers(parse(["train-teacher", "--warmup-epochs", "-1"]))
    flag_checks.check_numbers(parse(["export", "model.keras", "--seed", "0", "--version", "0"]))
    flag_checks.check_numbers(parse(["distill", "--epochs", "0"]))  # distill's numbers are checked by DistillConfig


def test_number_rules_are_the_config_checks():
    rules = options.number_rules(DistillConfig)
    assert rules["epochs"] == {"integer": True, "positive": True} and rules["cache_views"]["allow_zero"]
    with pytest.raises(UserError, match="cache_views must be a non-negative whole number"):
        DistillConfig(cache_views=-1)


def test_every_command_has_its_own_handler():
    commands = next(action for action in cli.build_parser()._actions if action.dest == "command")
    handlers = {name: parser.get_default("func") for name, parser in commands.choices.items() if name != "taps"}
    taps_commands = next(action for action in commands.choices["taps"]._actions if action.dest == "taps_command")
    handlers["taps suggest"] = taps_commands.choices["suggest"].get_default("func")
    assert all(callable(handler) for handler in handlers.values()) and len(set(handlers.values())) == len(handlers)


def test_main_reports_user_errors_in_one_line_and_leaves_bugs_their_traceback(monkeypatch, capsys):
    def refuse(args):
        raise UserError("nothing to evaluate")

    monkeypatch.setattr(cli, "_evaluate", refuse)
    assert cli.main(["evaluate", "model.keras"]) == 2
    assert capsys.readouterr().err.strip().endswith("kdistill evaluate: error: nothing to evaluate")

    def bug(args):
        raise TypeError("a bug, not a user's mistake")

    monkeypatch.setattr(cli, "_evaluate", bug)
    with pytest.raises(TypeError, match="a bug"):
        cli.main(["evaluate", "model.keras"])


def _command_words(command: str) -> list[str]:
    """The words that parse for `command` (its positional model, cache-teacher's required teacher)."""
    return (
        command.split()
        + (["m.keras"] if command in ("evaluate", "export") else [])
        + (["--teacher", "t.keras"] if command == "cache-teacher" else [])
    )


def _command_parser(command: str):
    parser = _subparser(command.split()[0])
    if command == "taps suggest":
        parser = next(action for action in parser._actions if action.dest == "taps_command").choices["suggest"]
    return parser


@pytest.mark.parametrize("command", sorted(commands.COMMANDS))
def test_every_commands_flags_are_its_declaration_and_the_shared_config_fields(command):
    """Each subcommand's flags, defaults, choices and help come from its options class (and DistillConfig for the shared data flags)."""
    declared = commands.COMMANDS[command]
    flags = {action.dest: action for action in _command_parser(command)._actions if action.dest != "help"}
    assert set(flags) == set(options.flag_names(declared)) | set(declared.shared) | (
        {"config"} if declared.shared else set()
    )
    for field in dataclasses.fields(declared):
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        assert flags[field.name].help == field.metadata["help"], (command, field.name)
        assert flags[field.name].choices == field.metadata["argparse"].get("choices"), (command, field.name)
        if default is not dataclasses.MISSING:
            assert flags[field.name].default == default, (command, field.name)
    config_fields = {field.name: field for field in dataclasses.fields(DistillConfig)}
    for name in declared.shared:
        # None: --config fills it
        assert flags[name].help == config_fields[name].metadata["help"] and flags[name].default is None, (
            command,
            name,
        )
    args = cli.build_parser().parse_args(_command_words(command))
    assert {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(declared)
        if field.default is not dataclasses.MISSING
    } == {
        field.name: field.default for field in dataclasses.fields(declared) if field.default is not dataclasses.MISSING
    }


@pytest.mark.parametrize(
    "command, name",
    [
        (command, name)
        for command, declared in sorted(commands.COMMANDS.items())
        for name in options.number_rules(declared)
    ],
)
def test_each_declared_number_is_checked_by_its_declaration(command, name):
    declared = commands.COMMANDS[command]
    flag = options.flag_of(declared, name)
    args = cli.build_parser().parse_args(_command_words(command) + [f"{flag}=-1"])
    with pytest.raises(UserError, match=f"^{flag} must be a (positive|non-negative)"):
        flag_checks.check_numbers(args)


@pytest.mark.parametrize(
    "command, name",
    [
        (command, name)
        for command, declared in sorted(commands.COMMANDS.items())
        for name in options.output_paths(declared)
    ],
)
def test_each_declared_output_path_is_checked_before_any_work(command, name, tmp_path):
    """A folder output given an existing file, a file output given an existing folder: refused by the kind the declaration names."""
    declared = commands.COMMANDS[command]
    kind = options.output_paths(declared)[name]
    existing = tmp_path / "file.txt"
    existing.write_text("")
    path = str(existing if kind == "folder" else tmp_path)
    args = cli.build_parser().parse_args(_command_words(command) + [options.flag_of(declared, name), path])
    with pytest.raises(ValueError, match=f"Cannot write the output {kind} "):
        flag_checks.check_outputs(args)


@pytest.mark.parametrize("command, handler", [("taps suggest", "_taps_suggest"), ("train-teacher", "_train_teacher")])
def test_config_file_fills_the_shared_flags_and_the_fields_declared_from_config(
    command, handler, tmp_path, monkeypatch
):
    """taps suggest takes the config's teacher and student (declared `from_config`); train-teacher its data keys but not `epochs`."""
    config = tmp_path / "run.yaml"
    config.write_text("teacher: t.keras\nstudent: resnet8x4\nstudent_width: 0.35\nbatch_size: 16\nepochs: 9\n")
    seen = {}
    monkeypatch.setattr(cli, handler, lambda args: seen.update(vars(args)) or 0)
    assert cli.main(_command_words(command) + ["--config", str(config), "--seed", "3"]) == 0
    assert (seen["batch_size"], seen["seed"], seen["image_size"]) == (16, 3, 32)
    if command == "taps suggest":
        assert options.config_keys(commands.TapsSuggestOptions) == ("teacher", "student")
        assert (seen["teacher"], seen["student"], seen["student_width"]) == ("t.keras", "resnet8x4", 0.35)
    else:
        # the config's epochs are the student's
        assert options.config_keys(commands.TrainTeacherOptions) == () and seen["epochs"] == 4


def test_every_commands_help_is_built_from_the_declarations_without_loading_keras():
    """`kdistill --help` and each subcommand's help read only the declarations: no backend loads before `--backend` is read."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\nfrom kdistill import cli\nparser = cli.build_parser()\n"
        "for words in ([], ['demo'], ['train-teacher'], ['distill'], ['evaluate'], ['cache-teacher'], ['taps', 'suggest'], ['export']):\n"
        "    try:\n        parser.parse_args([*words, '--help'])\n    except SystemExit as done:\n        assert done.code == 0, words\n"
        "print(sorted(name for name in ('keras', 'tensorflow', 'jax', 'torch') if name in sys.modules))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])),
    )
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "[]", result.stderr[-2000:]
    for command in commands.COMMANDS:
        assert f"usage: kdistill {command}" in result.stdout
