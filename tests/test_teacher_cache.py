"""Teacher cache: same first-step loss as the live teacher, stale caches refused, augmentation refused, CLI."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill import cli
from kdistill.run import teacher_cache
from conftest import images, labels, small_cnn
from test_data import make_fashion_mnist

TAPS = {"teacher_stage1": "student_stage1", "teacher_stage2": "student_stage2"}


def _plain(x, y, batch=16):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _distiller(teacher):
    keras.utils.set_random_seed(5)
    student = small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(teacher, student, taps=TAPS, alpha=0.7)
    return distiller.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"])


@pytest.mark.eager
def test_training_from_the_cache_gives_the_live_teachers_first_step_loss(tmp_path):
    teacher = small_cnn("teacher", widths=(8, 16), seed=1)
    x, y = np.round(images(32, 3)), labels(32, 3)  # integer pixels, as real images
    cache = teacher_cache.build(teacher, list(TAPS), _plain(x, y), str(tmp_path / "cache"), verbose=0)
    assert len(cache) == 32 and set(cache.outputs) == {"teacher_stage1", "teacher_stage2", "logits"}
    assert cache.images.dtype == np.uint8  # raw pixels stored losslessly
    live = _distiller(teacher).fit(x, y, batch_size=16, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0).history
    cached = _distiller(teacher).fit(cache.dataset(16, shuffle=False), epochs=1, steps_per_epoch=1, verbose=0).history
    for key in ("loss", "ce_loss", "kd_loss", "feat_teacher_stage1", "feat_teacher_stage2"):
        assert cached[key][0] == pytest.approx(live[key][0], rel=1e-5), key
    # Shuffled batches keep each image with its own outputs.
    batch, _ = next(iter(cache.dataset(8, shuffle=True, seed=1)))
    recomputed = kdistill.taps.feature_model(teacher, list(TAPS))(batch["images"], training=False)["logits"]
    np.testing.assert_allclose(batch["teacher"]["logits"], recomputed, rtol=1e-5, atol=1e-5)


def test_stale_caches_and_augmentation_are_refused_with_the_reason(tmp_path):
    teacher = small_cnn("teacher", widths=(8, 16), seed=1)
    x, y = images(16, 4), labels(16, 4)
    folder = str(tmp_path / "cache")
    teacher_cache.build(teacher, list(TAPS), _plain(x, y), folder, verbose=0)
    teacher_cache.load(folder, teacher, list(TAPS), dataset=_plain(x, y))  # matches
    other = small_cnn("teacher", widths=(8, 16), seed=9)
    with pytest.raises(teacher_cache.StaleCacheError, match="other weights"):
        teacher_cache.load(folder, other, list(TAPS))
    with pytest.raises(teacher_cache.StaleCacheError, match="other images or labels"):
        teacher_cache.load(folder, teacher, list(TAPS), dataset=_plain(x, (y + 1) % 10))
    with pytest.raises(teacher_cache.StaleCacheError, match="no outputs for the taps"):
        teacher_cache.load(folder, teacher, ["teacher_pool"])
    with pytest.raises(ValueError, match="cannot be used with random augmentation"):
        teacher_cache.build(teacher, list(TAPS), _plain(x, y), folder, augment=["flip"], verbose=0)
    shuffled = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(16, reshuffle_each_iteration=True).batch(8)
    with pytest.raises(ValueError, match="not deterministic"):
        teacher_cache.build(teacher, list(TAPS), shuffled, folder, verbose=0)


def test_a_truncated_or_missing_cache_file_is_named(tmp_path):
    """A truncated .npy used to fail inside NumPy without naming the file."""
    teacher = small_cnn("teacher", widths=(8, 16), seed=1)
    folder = tmp_path / "cache"
    teacher_cache.build(teacher, list(TAPS), _plain(images(16, 4), labels(16, 4)), str(folder), verbose=0)
    logits = folder / "out_2.npy"
    logits.write_bytes(logits.read_bytes()[:100])  # a kill or a full disk mid-write
    with pytest.raises(teacher_cache.StaleCacheError, match=r"out_2\.npy' is truncated or corrupt.*Rebuild the cache"):
        teacher_cache.load(str(folder), teacher, list(TAPS))
    logits.unlink()
    with pytest.raises(teacher_cache.StaleCacheError, match=r"lacks .*out_2\.npy"):
        teacher_cache.load(str(folder), teacher, list(TAPS))


@pytest.mark.eager
def test_cache_teacher_command_then_distill_from_mixed_views_with_top_k_logits_and_the_patient_recipe(tmp_path, capsys):
    make_fashion_mnist(tmp_path / "data", train=96, test=32)
    teacher_path = str(tmp_path / "teacher.keras")
    small_cnn("teacher", widths=(8, 16), seed=1).save(teacher_path)
    common = ["--data-dir", str(tmp_path / "data"), "--batch-size", "16"]
    views = ["--augment", "crop,flip,mixup"]
    assert (
        cli.main(
            [
                "cache-teacher",
                "--teacher",
                teacher_path,
                "--layers",
                "teacher_stage2",
                "--output",
                str(tmp_path / "cache"),
                "--views",
                "2",
                "--top-k",
                "3",
            ]
            + views
            + common
        )
        == 0
    )
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["outputs"] == ["teacher_stage2", "logits"] and meta["top_k"] == 3 and meta["mixes"]
    # 8x8x16 float32 stage map + top-3 logits (3 x 2 + 3 x 2 + 2) + the view's crop (6) and mix (23)
    assert meta["bytes_per_view"] == 8 * 8 * 16 * 4 + 14 + 6 + 23
    assert f"{meta['bytes_per_view']} bytes per image per view, logits as top 3" in capsys.readouterr().out
    run = (
        [
            "distill",
            "--teacher",
            teacher_path,
            "--student",
            "resnet8x4",
            "--taps",
            "teacher_stage2:stage2_out",
            "--epochs",
            "1",
            "--teacher-cache",
            str(tmp_path / "cache"),
            "--output-dir",
            str(tmp_path / "run"),
            "--cache-views",
            "2",
            "--cache-top-k",
            "3",
            "--schedule",
            "cosine",
            "--warmup-epochs",
            "0.5",
            "--global-clipnorm",
            "1.0",
        ]
        + views
        + common
    )
    # a cache of other top-k is refused
    assert cli.main(run[: -len(common) - 2] + ["--cache-top-k", "4"] + views + common) == 2
    assert "with top-k logits 3; this run asks for 2 for ['crop', 'flip', 'mixup'] with 4" in capsys.readouterr().err
    assert cli.main(run) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["teacher_cache"] == str(tmp_path / "cache") and np.isfinite(summary["test"]["top1"])
    assert summary["config"]["schedule"] == "cosine" and summary["config"]["global_clipnorm"] == 1.0


def test_cache_subset_and_repeat_keep_images_with_their_outputs(tmp_path):
    teacher = small_cnn("teacher", widths=(8, 16), seed=1)
    x, y = np.round(images(20, 4)), labels(20, 4)
    cache = teacher_cache.build(teacher, ["teacher_stage2"], _plain(x, y), str(tmp_path / "cache"), verbose=0)
    subset = cache.dataset(4, shuffle=True, seed=0, layers=["teacher_stage2"], indices=np.arange(6))
    seen = np.concatenate([batch_y for _, batch_y in subset])
    assert sorted(seen.tolist()) == sorted(y[:6].tolist())  # only the chosen examples, each once per pass
    forever = cache.dataset(4, shuffle=True, seed=0, layers=["teacher_stage2"], indices=np.arange(6), repeat=True)
    # three passes of 6 (a batch of 4 and one of 2 each): it repeats, each pass in its own order
    batches = list(forever.take(6))
    seen = np.concatenate([batch_y for _, batch_y in batches])
    assert len(seen) == 18 and sorted(seen.tolist()) == sorted(3 * y[:6].tolist())
    batch, _ = batches[-1]
    recomputed = kdistill.taps.feature_model(teacher, ["teacher_stage2"])(batch["images"], training=False)
    np.testing.assert_allclose(batch["teacher"]["teacher_stage2"], recomputed["teacher_stage2"], rtol=1e-5, atol=1e-5)
