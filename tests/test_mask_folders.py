"""A user's segmentation folders (kdistill.data.mask_folders): images and PNG masks with the same names, checked file by file."""

import os

import numpy as np
import pytest
from PIL import Image

from kdistill.data.mask_folders import read_mask_folders, resize_mask
from kdistill.errors import UserError

RNG = np.random.default_rng(0)


def _write(folder, stems=("a", "b", "c"), size=(12, 8), suffix=".png", palette=False):
    """Images and masks for `stems`; returns the masks written, {stem: array}."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(exist_ok=True)
    masks.mkdir(exist_ok=True)
    written = {}
    for stem in stems:
        Image.fromarray(RNG.integers(0, 256, (size[1], size[0], 3)).astype("uint8")).save(images / f"{stem}{suffix}")
        mask = RNG.integers(0, 3, (size[1], size[0])).astype("uint8")
        mask[0, 0] = 255
        picture = Image.fromarray(mask).convert("L")
        if palette:  # colours unlike the indices (index 1 shows as grey 32): the reader must take the indices
            picture = picture.convert("P")
            picture.putdata(mask.reshape(-1).tolist())
            picture.putpalette([value for index in range(256) for value in (index * 7 % 256, index, 255 - index)])
        picture.save(masks / f"{stem}.png")
        written[stem] = mask
    return written


def test_images_and_masks_are_read_by_name_with_palette_indices_and_the_ignore_label_kept(tmp_path):
    written = _write(tmp_path, palette=True)
    # a mask without an image is not read
    (tmp_path / "masks" / "unused.png").write_bytes((tmp_path / "masks" / "a.png").read_bytes())
    images, masks, names = read_mask_folders(str(tmp_path / "images"), str(tmp_path / "masks"), num_classes=3)
    assert names == ["a.png", "b.png", "c.png"] and images.shape == (3, 8, 12, 3) and images.dtype == np.float32
    assert masks.dtype == np.uint8
    np.testing.assert_array_equal(masks, np.stack([written[stem] for stem in "abc"]))


def test_resizing_takes_images_bilinearly_and_masks_by_nearest_neighbour(tmp_path):
    _write(tmp_path, size=(8, 8))
    _, masks, _ = read_mask_folders(str(tmp_path / "images"), str(tmp_path / "masks"), num_classes=3, image_size=16)
    _, originals, _ = read_mask_folders(str(tmp_path / "images"), str(tmp_path / "masks"), num_classes=3)
    assert masks.shape == (3, 16, 16) and set(np.unique(masks).tolist()) <= {0, 1, 2, 255}
    # each pixel becomes a 2x2 block
    np.testing.assert_array_equal(masks, np.repeat(np.repeat(originals, 2, axis=1), 2, axis=2))
    np.testing.assert_array_equal(resize_mask(originals[0], 8), originals[0])


@pytest.mark.parametrize(
    "break_it, message",
    [
        (
            lambda root: os.remove(root / "masks" / "b.png"),
            r"Image '.*images/b.png' has no mask: expected '.*masks/b.png'",
        ),
        (
            lambda root: Image.fromarray(np.zeros((4, 4), "uint8")).save(root / "masks" / "c.png"),
            r"Mask '.*masks/c.png' is 4x4 but its image is 12x8",
        ),
        (
            lambda root: Image.fromarray(np.full((8, 12), 7, "uint8")).save(root / "masks" / "a.png"),
            r"Mask '.*masks/a.png' holds value\(s\) 7 outside the 3 classes",
        ),
        (
            lambda root: Image.fromarray(np.zeros((8, 12, 3), "uint8")).save(root / "masks" / "a.png"),
            r"Mask '.*masks/a.png' is a RGB image",
        ),
    ],
)
def test_each_problem_is_one_line_naming_the_file(tmp_path, break_it, message):
    _write(tmp_path)
    break_it(tmp_path)
    with pytest.raises(UserError, match=message) as error:
        read_mask_folders(str(tmp_path / "images"), str(tmp_path / "masks"), num_classes=3)
    assert "\n" not in str(error.value)


def test_images_of_several_sizes_need_an_image_size_and_a_missing_folder_is_named(tmp_path):
    _write(tmp_path, stems=("a",), size=(12, 8))
    _write(tmp_path, stems=("b",), size=(8, 8))
    with pytest.raises(UserError, match="give image_size"):
        read_mask_folders(str(tmp_path / "images"), str(tmp_path / "masks"), num_classes=3)
    assert read_mask_folders(str(tmp_path / "images"), str(tmp_path / "masks"), num_classes=3, image_size=8)[
        0
    ].shape == (2, 8, 8, 3)
    with pytest.raises(FileNotFoundError, match="The masks folder"):
        read_mask_folders(str(tmp_path / "images"), str(tmp_path / "nowhere"), num_classes=3)
