"""The commands on a user's own image folder (no test folder), with one run config for all of them, as docs/cli-and-configs.md shows."""

import os
import re

import pytest
import yaml

from kdistill import cli
from conftest import real_images, small_cnn

CLASSES = ("boot", "coat", "shirt", "trouser")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """4 class folders of 10 real images each (PNG and JPEG), no test folder; and a 4-class model saved beside it."""
    from PIL import Image

    root = tmp_path_factory.mktemp("own_data")
    x, _ = real_images(40)
    for index, image in enumerate(x.astype("uint8")):
        folder = root / "images" / CLASSES[index % 4]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / (f"{index}.png" if index % 2 else f"{index}.jpg"))
    small_cnn("four", num_classes=4).save(str(root / "four.keras"))
    small_cnn("ten", num_classes=10).save(str(root / "ten.keras"))
    return root


def _config(folder, **values) -> str:
    path = os.path.join(folder, "run.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(dict({"data": str(folder / "images"), "image_size": 32, "batch_size": 8}, **values), handle)
    return path


def test_evaluate_on_a_folder_without_test_images_uses_its_validation_split(image_folder, capsys, tmp_path):
    report = tmp_path / "report.json"
    assert (
        cli.main(
            ["evaluate", str(image_folder / "four.keras"), "--config", _config(image_folder), "--json", str(report)]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "no test split" in captured.err and "validation split: the 4 images" in captured.err
    assert "trouser" in captured.out and '"examples": 4' in report.read_text()


def test_evaluate_refuses_a_model_for_another_number_of_classes_in_one_line(image_folder, capsys):
    assert cli.main(["evaluate", str(image_folder / "ten.keras"), "--data", str(image_folder / "images")]) == 2
    err = capsys.readouterr().err
    assert "predicts 10 classes but the data has 4 (boot, coat, shirt, trouser)" in err and "Traceback" not in err


def test_flags_override_the_config_and_a_typo_in_it_is_refused(image_folder, capsys):
    args = cli.build_parser().parse_args(
        ["evaluate", "m.keras", "--config", _config(image_folder, seed=3), "--batch-size", "4"]
    )
    cli.fill_from_config(args, cli.DATA_FLAGS)
    assert (args.data, args.seed, args.batch_size, args.image_size) == (str(image_folder / "images"), 3, 4, 32)
    assert cli.main(["evaluate", "m.keras", "--config", _config(image_folder, epoch=2)]) == 2
    assert "Unknown config key 'epoch'. Did you mean 'epochs'?" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train-teacher", "evaluate", "export", "cache-teacher", "taps suggest"])
def test_every_command_that_reads_data_takes_config(command):
    words = (
        command.split()
        + (["m.keras"] if command in ("evaluate", "export") else [])
        + (["--teacher", "t.keras"] if command == "cache-teacher" else [])
    )
    args = cli.build_parser().parse_args(words + ["--config", "run.yaml"])
    assert args.config == "run.yaml" and args.data is None  # left out: filled from the file, else the config's default


def test_taps_suggest_prints_a_pasteable_taps_value_and_takes_the_student_width(image_folder, capsys):
    from kdistill.run import options

    assert (
        cli.main(
            [
                "taps",
                "suggest",
                "--config",
                _config(image_folder, teacher="resnet50"),
                "--student",
                "mobilenet_v2",
                "--student-width",
                "0.35",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("--taps "))
    assert options.taps_flag(line.split(" ", 1)[1]) == {
        "conv3_block4_out": "block_6_expand_relu",
        "conv4_block6_out": "block_13_expand_relu",
    }
    # width 0.35: 6 x 32 channels (the default 0.5 has 6 x 48 = 288)
    assert re.search(r"block_13_expand_relu\s+2x2x192 ", out)


def test_export_on_a_folder_without_test_images_reports_parity_on_its_validation_split(
    image_folder, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "saved_models" / "export"
    # used to fail in the parity report (TypeError)
    assert (
        cli.main(
            [
                "export",
                str(image_folder / "four.keras"),
                "--data",
                str(image_folder / "images"),
                "--output-dir",
                str(output),
                "--formats",
                "int8",
                "--int8-io",
                "--calibration-images",
                "20",
            ]
        )
        == 0
    )
    assert "Parity on 4 test images" in capsys.readouterr().out
    assert (output / "labels.txt").read_text() == "".join(f"{name}\n" for name in CLASSES)
    # docs/export-and-quantization.md's "Run the exported file" as written, on this file
    block = re.search(
        r"<!-- run-tflite -->\s*```python\n(.*?)```",
        open(os.path.join(ROOT, "docs", "export-and-quantization.md")).read(),
        re.S,
    )
    exec(compile(block.group(1), "docs/export-and-quantization.md", "exec"), {})
    assert capsys.readouterr().out.strip() in CLASSES


def test_parity_note_advises_int16x8_only_where_it_reached_the_bar():
    from kdistill.export import format_report

    row = {"size_mb": 0.1, "parameters": 10, "top1": 0.5, "max_abs_diff": 1.0, "latency_ms": 0.1}
    low, high = dict(row, agreement=0.90), dict(row, agreement=0.99)
    assert "Try int16x8" in format_report({"examples": 36, "formats": {"tflite_int8": low}})
    assert "Try int16x8" in format_report({"examples": 36, "formats": {"tflite_int8": low, "tflite_int16x8": high}})
    note = format_report({"examples": 36, "formats": {"tflite_int8": low, "tflite_int16x8": low}})
    assert "int16x8 agrees" in note and "Try int16x8" not in note and "--calibration-images" in note


def test_two_teachers_without_a_preset_show_the_teacher_layer_form_and_taps_suggest_lists_their_stages():
    import kdistill
    from conftest import resnet50_shaped_teacher

    members = [resnet50_shaped_teacher(seed=seed) for seed in (1, 2)]
    for member, name in zip(members, ("teacher_a", "teacher_b")):
        member.name = name
    teacher = kdistill.teachers.ensemble(members)
    student = small_cnn("student")
    with pytest.raises(ValueError, match=r"'<teacher>/<layer>', e.g. taps=\{'teacher_a/conv5_block3_out'") as raised:
        kdistill.taps.preset(teacher, student)
    assert "teacher_b: conv2_block3_out, conv3_block4_out" in str(raised.value)
    stages = [name for name, _ in kdistill.tap_suggest.suggest(teacher, student).teacher_stages]
    assert (
        stages[:2] == ["teacher_a/conv2_block3_out", "teacher_a/conv3_block4_out"]
        and "teacher_b/conv5_block3_out" in stages
    )


def _doc_block(marker: str) -> str:
    text = open(os.path.join(ROOT, "docs", "cli-and-configs.md"), encoding="utf-8").read()
    return re.search(rf"<!-- {marker} -->\s*```\w+\n(.*?)```", text, re.S).group(1)


def test_the_own_folder_config_and_commands_of_the_docs_run_as_written(image_folder, tmp_path, monkeypatch, capsys):
    """docs/cli-and-configs.md: its run.yaml is read as written by every command; `taps suggest` runs as written and prints the
    --taps value that the page's `distill` line pastes."""
    import shlex

    from conftest import resnet50_shaped_teacher

    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").symlink_to(image_folder / "images")
    (tmp_path / "photos_test").symlink_to(image_folder / "images")
    (tmp_path / "saved_models").mkdir()
    # what the page's train-teacher line writes, small
    resnet50_shaped_teacher(num_classes=4).save("saved_models/teacher.keras")
    (tmp_path / "run.yaml").write_text(_doc_block("own-data-config"))
    commands = [
        shlex.split(line)[1:] for line in _doc_block("own-data-commands").splitlines() if line.startswith("kdistill ")
    ]
    assert [words[0] for words in commands] == ["train-teacher", "taps", "distill", "evaluate", "export"]
    for words in commands:  # every command reads the file as written
        args = cli.build_parser().parse_args(words)
        if words[0] != "distill":
            cli.fill_from_config(args, cli.DATA_FLAGS)
            assert (args.data, args.data_dir, args.image_size, args.batch_size) == ("photos", "photos_test", 64, 32)
    assert cli.main(commands[1]) == 0  # taps suggest
    printed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("--taps "))
    assert printed == "--taps " + commands[2][commands[2].index("--taps") + 1]
