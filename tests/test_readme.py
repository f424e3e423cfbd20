"""README.md's "Use it from Python" runs as written, on tiny settings: the data, a teacher trained in Python, the distiller, the saved student."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _block(page: str, marker: str) -> str:
    text = open(os.path.join(ROOT, page), encoding="utf-8").read()
    match = re.search(rf"<!-- {marker} -->\s*```\w+\n(.*?)```", text, re.S)
    assert match, f"{page} has no block after <!-- {marker} -->"
    return match.group(1)


@pytest.mark.eager
def test_the_readme_python_block_runs_as_written(tmp_path, fake_fashion_mnist, monkeypatch):
    import kdistill
    from conftest import resnet50_shaped_teacher

    # ResNet50's stage names and resolutions at a fraction of its cost
    def small_resnet50(num_classes, input_shape, weights):
        assert input_shape == (32, 32, 3) and weights is None
        return resnet50_shaped_teacher(num_classes)

    monkeypatch.setattr(kdistill.teachers, "resnet50", small_resnet50)
    monkeypatch.chdir(tmp_path)
    os.symlink(fake_fashion_mnist, tmp_path / "data")  # where `make data` puts Fashion-MNIST
    code = _block("README.md", "readme-python")
    tiny = (
        code.replace("train_limit=10000", "train_limit=32")
        .replace("epochs=4", "epochs=1")
        .replace("epochs=2", "epochs=1")
    )
    assert tiny.count("epochs=1") == 2 and "train_limit=32" in tiny  # only the sizes change
    namespace = {}
    exec(compile(tiny, "README.md", "exec"), namespace)
    assert (tmp_path / "saved_models" / "student.keras").exists()
    assert namespace["history"].history["kd_loss"] and namespace["teacher"].loss.get_config()["from_logits"]
    # docs/python-api.md's checkpoint block goes on from the README's example
    checkpoint = _block("docs/python-api.md", "python-checkpoint")
    assert "epochs=2" in checkpoint
    exec(compile(checkpoint.replace("epochs=2", "epochs=1"), "docs/python-api.md", "exec"), namespace)
    assert namespace["student"].count_params() == namespace["distiller"].student.count_params()
