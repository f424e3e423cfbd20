"""ReviewKD: attention-based fusion of student taps from the deepest up, trained with HCL."""

import keras
import numpy as np
import pytest

import kdistill
from conftest import images, labels, small_cnn
from harness import run_distiller_saving
from kdistill.adapters.review import AttentionFusion

TAPS = {"teacher_stage1": "student_stage1", "teacher_stage2": "student_stage2"}


def test_attention_fusion_shapes_weights_and_errors():
    deep = AttentionFusion((4, 4, 16), mid_channels=6, fuse=False)
    shallow = AttentionFusion((8, 8, 8), mid_channels=6, fuse=True)
    deep_out, deep_fused = deep(np.ones((2, 4, 4, 5), "float32"))
    assert tuple(deep_out.shape) == (2, 4, 4, 16) and tuple(deep_fused.shape) == (2, 4, 4, 6)
    # The shallower tap is 16x16 here: its fused map stays 16x16, its output is resized to the teacher's 8x8.
    out, fused = shallow(np.ones((2, 16, 16, 3), "float32"), residual=deep_fused)
    assert tuple(out.shape) == (2, 8, 8, 8) and tuple(fused.shape) == (2, 16, 16, 6)
    assert deep.attention is None and len(shallow.attention.weights) == 2
    with pytest.raises(ValueError, match="pass residual="):
        shallow(np.ones((2, 16, 16, 3), "float32"))
    restored = AttentionFusion.from_config(shallow.get_config())
    assert restored.get_config() == shallow.get_config()


def test_attention_weights_mix_the_tap_and_the_deeper_map():
    fusion = AttentionFusion((4, 4, 2), mid_channels=3, fuse=True)
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype("float32")
    residual = np.random.default_rng(1).normal(size=(1, 2, 2, 3)).astype("float32")
    _, fused = fusion(x, residual=residual)
    reduced = fusion.reduce_bn(fusion.reduce(x), training=False)
    upsampled = np.repeat(np.repeat(residual, 2, axis=1), 2, axis=2)  # nearest-neighbour resize 2x2 -> 4x4
    weights = np.asarray(fusion.attention(np.concatenate([np.asarray(reduced), upsampled], axis=-1)))
    assert ((weights > 0) & (weights < 1)).all()
    expected = np.asarray(reduced) * weights[..., :1] + upsampled * weights[..., 1:]
    np.testing.assert_allclose(np.asarray(fused), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.eager
def test_review_distiller_trains_with_hcl_and_reloads(tmp_path):
    teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps=TAPS, feature_loss="hcl", adapter="review", review_channels=8, alpha=0.7
    )
    assert distiller.student_adapter.order == ["teacher_stage2", "teacher_stage1"]  # deepest student tap first
    summary = {row["teacher_layer"]: row["projection"] for row in distiller.projection_summary()}
    assert "attention fusion" in summary["teacher_stage1"] and "attention fusion" not in summary["teacher_stage2"]
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
    x, y = images(64, 0), labels(64, 0)
    before = [w.numpy().copy() for w in distiller.projections["teacher_stage1"].attention.weights]
    history = distiller.fit(x, y, batch_size=16, epochs=3, verbose=0).history
    for key in ("loss", "feat_teacher_stage1", "feat_teacher_stage2"):
        assert np.isfinite(history[key]).all(), (key, history[key])
    assert history["feat_teacher_stage1"][-1] < history["feat_teacher_stage1"][0]
    after = distiller.projections["teacher_stage1"].attention.weights
    assert any(np.abs(a - b.numpy()).max() > 0 for a, b in zip(before, after))  # the fusion is trained

    restored = run_distiller_saving(distiller, str(tmp_path / "review.keras"), x[:8], y[:8])
    assert (
        restored.adapter == "review"
        and restored.review_channels == 8
        and restored.student_adapter.order == distiller.student_adapter.order
    )
    outputs, reloaded = distiller(x[:4], training=False)["student"], restored(x[:4], training=False)["student"]
    for key in TAPS:
        np.testing.assert_allclose(np.asarray(reloaded[key]), np.asarray(outputs[key]), rtol=1e-5, atol=1e-5)


def test_review_needs_feature_maps():
    teacher, student = small_cnn("teacher", seed=1), small_cnn("student", seed=2)
    with pytest.raises(ValueError, match="adapter=.review. fuses feature maps"):
        kdistill.FeatureDistiller(
            teacher, student, taps={"teacher_pool": "student_pool"}, feature_loss="hcl", adapter="review"
        )
    with pytest.raises(ValueError, match="review_channels must be a positive integer"):
        kdistill.FeatureDistiller(teacher, student, taps=TAPS, feature_loss="hcl", adapter="review", review_channels=0)


@pytest.mark.eager
def test_cli_distill_with_review_and_hcl(tmp_path, capsys):
    import json

    from conftest import resnet50_shaped_teacher
    from kdistill import cli
    from test_data import make_fashion_mnist

    make_fashion_mnist(tmp_path / "data", train=64, test=16, seed=3)
    teacher = str(tmp_path / "teacher.keras")
    resnet50_shaped_teacher().save(teacher)
    status = cli.main(
        [
            "distill",
            "--data-dir",
            str(tmp_path / "data"),
            "--teacher",
            teacher,
            "--student",
            "resnet8x4",
            "--taps",
            "preset",
            "--feature-loss",
            "hcl",
            "--adapter",
            "review",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert status == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["adapter"] == "review" and summary["config"]["feature_loss"] == "hcl"
    # the deeper tap fuses nothing
    assert [("attention fusion" in row["projection"]) for row in summary["projections"]] == [
        True,
        False,
    ]
    assert 0.0 <= summary["test"]["top1"] <= 1.0
