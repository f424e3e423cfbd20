"""The textbook recipe of docs/methods.md (MSE, feature KL, alpha-mixed feature KL + CE) runs as written, in Python and YAML."""

import json
import os
import re

import numpy as np
import pytest
import yaml

import kdistill
from kdistill import cli
from kdistill.losses.feature_kl import FeatureKL
from kdistill.losses.features import FeatureMSE
from kdistill.run.config import DistillConfig
from kdistill.run.config_files import read_config_file
from conftest import real_images, resnet50_shaped_teacher
from test_data import make_fashion_mnist

METHODS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "methods.md")


def _block(marker: str) -> str:
    text = open(METHODS).read()
    match = re.search(rf"<!-- {marker} -->\s*```\w+\n(.*?)```", text, re.S)
    assert match, f"docs/methods.md has no block after <!-- {marker} -->"
    return match.group(1)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("textbook")
    os.makedirs(folder / "saved_models")
    resnet50_shaped_teacher().save(str(folder / "saved_models" / "teacher.keras"))
    return folder


@pytest.mark.eager
def test_the_three_textbook_steps_run_as_written(teacher_file, monkeypatch):
    monkeypatch.chdir(teacher_file)
    x_train, y_train = real_images(32)
    code = _block("textbook-python").replace("epochs=5", "epochs=1")
    namespace = {"x_train": x_train, "y_train": y_train}
    exec(compile(code, METHODS, "exec"), namespace)
    step1, step2, step3 = namespace["step1"], namespace["step2"], namespace["step3"]
    assert isinstance(step1.feature_loss, FeatureMSE) and step1.logits_loss is not None
    assert isinstance(step2.feature_loss, FeatureKL) and step2.feature_loss.temperature == 4.0
    assert isinstance(step3.feature_loss, FeatureKL) and step3.logits_loss is None and step3.alpha == 0.9
    history = step3.history.history
    assert "kd_loss" not in history and np.isfinite(history["loss"]).all()
    # Step 3 is exactly alpha * feature KL + (1 - alpha) * CE.
    outputs = step3(x_train[:8])
    terms = step3.loss_terms(y_train[:8], outputs["teacher"], outputs["student"])
    expected = 0.9 * float(terms["feat_conv4_block6_out"]) + 0.1 * float(terms["ce_loss"])
    assert float(terms["loss"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.eager
def test_the_textbook_configs_run_as_written(teacher_file, tmp_path, monkeypatch):
    """Each block is a config file `kdistill distill --config` reads as it stands; the third runs end to end (flags only shrink it)."""
    monkeypatch.chdir(teacher_file)
    make_fashion_mnist(teacher_file / "data", train=96, test=32, seed=2)
    teacher = kdistill.teachers.load(str(teacher_file / "saved_models" / "teacher.keras"))
    built = []
    for step in (1, 2, 3):
        path = tmp_path / f"textbook{step}.yaml"
        path.write_text(_block(f"textbook-yaml-{step}"))
        # the CLI's reader: one mapping per file, teacher found
        config = DistillConfig.from_dict(read_config_file(str(path)))
        student = kdistill.students.get("resnet8x4", num_classes=10, input_shape=(32, 32, 3))
        built.append(
            kdistill.FeatureDistiller(
                teacher, student, taps={"conv4_block6_out": "stage3_out"}, **config.distiller_options()
            )
        )
    assert isinstance(built[0].feature_loss, FeatureMSE)
    assert isinstance(built[1].feature_loss, FeatureKL) and built[1].feature_loss.temperature == 4.0
    assert isinstance(built[2].feature_loss, FeatureKL) and built[2].logits_loss is None and built[2].alpha == 0.9
    # The third step end to end through the command line, the file as written.
    assert (
        cli.main(
            [
                "distill",
                "--config",
                str(tmp_path / "textbook3.yaml"),
                "--epochs",
                "1",
                "--batch-size",
                "32",
                "--train-limit",
                "32",
                "--test-limit",
                "32",
                "--student-width",
                "0.35",
                "--no-check-teacher",
            ]
        )
        == 0
    )
    history = json.loads((teacher_file / "saved_models" / "textbook3" / "history.json").read_text())
    assert "kd_loss" not in history and "feat_conv4_block6_out" in history


@pytest.mark.eager
def test_several_teachers_from_a_yaml_config(teacher_file, tmp_path):
    from conftest import small_cnn

    paths = []
    for name, seed in (("teacher_a", 1), ("teacher_b", 2)):
        # the same model name twice: the files' names tell them apart
        model = small_cnn("stand_in", widths=(8, 16), seed=seed)
        paths.append(str(tmp_path / f"{name}.keras"))
        model.save(paths[-1])
    make_fashion_mnist(tmp_path / "data", train=96, test=32, seed=3)
    config = tmp_path / "two.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "teacher": paths,
                "teacher_weights": [2, 1],
                "student": "resnet8x4",
                "taps": {"teacher_a/stand_in_stage2": "stage2_out", "teacher_b/stand_in_stage1": "stage1_out"},
                "epochs": 1,
                "batch_size": 32,
                "check_teacher": False,
            }
        )
    )
    assert cli.main(["distill", "--config", str(config), "--output-dir", str(tmp_path / "run")]) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert {"feat_teacher_a/stand_in_stage2", "feat_teacher_b/stand_in_stage1", "kd_loss"} <= set(history)
    # The same from flags: two files after --teacher; weights that are not numbers are refused before any work.
    assert (
        cli.main(["distill", "--data-dir", str(tmp_path / "data"), "--teacher", *paths, "--teacher-weights", "2,x"])
        == 2
    )
    assert not (tmp_path / "saved_models").exists()


def test_your_own_method_block_runs_as_written_and_its_name_works_in_a_config():
    from conftest import images, small_cnn
    from kdistill.losses import registry

    namespace = {}
    exec(compile(_block("own-loss"), METHODS, "exec"), namespace)
    try:
        options = DistillConfig.from_dict(
            {"feature_loss": {"name": "l1", "scale": 2}}, check_files=False
        ).distiller_options()
        distiller = kdistill.FeatureDistiller(
            small_cnn("teacher"), small_cnn("student", seed=1), taps={"teacher_stage2": "student_stage2"}, **options
        )
        assert isinstance(distiller.feature_loss, namespace["L1"])
        outputs = distiller(images(4))
        terms = distiller.loss_terms(np.zeros(4, "int64"), outputs["teacher"], outputs["student"])
        assert float(terms["feat_teacher_stage2"]) > 0
    finally:
        registry.unregister("l1")
