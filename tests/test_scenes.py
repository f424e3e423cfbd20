"""Offline segmentation scenes (kdistill.data.scenes) built from the real Fashion-MNIST sample in tests/data."""

import numpy as np
import pytest

from kdistill import data
from kdistill.data.scenes import SCENE_CLASSES, make_scenes
from conftest import REAL_SAMPLE


@pytest.fixture(scope="module")
def items():
    (x_train, y_train), _ = data.load_fashion_mnist(REAL_SAMPLE)
    return x_train[:200], y_train[:200]


def test_scenes_are_deterministic_for_a_seed_and_differ_between_seeds(items):
    first, again, other = (make_scenes(*items, count=6, seed=seed) for seed in (3, 3, 4))
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.masks, again.masks)
    assert not np.array_equal(first.masks, other.masks)


def test_masks_mark_exactly_the_bright_pixels_with_the_pasted_items_classes(items):
    scenes = make_scenes(*items, count=20, size=64, max_items=4, seed=0, brightness=64)
    assert (
        scenes.images.shape == (20, 64, 64, 3) and scenes.images.dtype == np.float32 and scenes.masks.dtype == np.uint8
    )
    np.testing.assert_array_equal(scenes.masks > 0, scenes.images[..., 0] > 64)
    assert np.array_equal(scenes.images[..., 0], scenes.images[..., 2])  # grey repeated to RGB
    assert scenes.masks.max() <= 10 and scenes.class_names == SCENE_CLASSES and len(SCENE_CLASSES) == 11
    present = set(np.unique(scenes.masks).tolist()) - {0}
    assert present <= {int(label) + 1 for label in items[1]} and len(present) >= 3
    assert all((mask > 0).any() for mask in scenes.masks)  # every scene holds at least one item


def test_one_item_per_scene_is_one_connected_class(items):
    # with one item a scene's mask holds one class: the item's, where it is bright
    x, y = items
    scenes = make_scenes(x[:1], y[:1], count=3, size=40, max_items=1, seed=1)
    for mask in scenes.masks:
        assert set(np.unique(mask).tolist()) == {0, int(y[0]) + 1}
        assert (mask > 0).sum() == (x[0] > 64).sum()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"size": 20}, "smaller than an item"),
        ({"count": 0}, "positive integers"),
        ({"brightness": 300}, r"brightness must lie in \(0, 255\)"),
    ],
)
def test_bad_options_are_refused_with_the_fix(items, options, message):
    with pytest.raises(ValueError, match=message):
        make_scenes(*items, **{"count": 2, **options})


def test_load_scenes_takes_training_and_test_items_from_their_splits():
    train, test = data.load_scenes(REAL_SAMPLE, train_count=4, test_count=3, size=32, seed=5)
    assert train.images.shape == (4, 32, 32, 3) and test.masks.shape == (3, 32, 32)
    assert not np.array_equal(train.masks[:3], test.masks)
