"""TFDS segmentation sets (kdistill.data.tfds_masks), read offline from a tiny TFDS-format folder the test writes."""

import numpy as np
import pytest

from kdistill.data.tfds_masks import read_tfds_masks


def _prepare_tiny_pets(folder):
    import tensorflow_datasets as tfds

    class TinyPets(tfds.core.GeneratorBasedBuilder):
        """16x16 images with trimap masks stored as 1, 2, 3 (Oxford-IIIT Pet's layout), made here in TFDS format."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(16, 16, 3)),
                        "segmentation_mask": tfds.features.Image(shape=(16, 16, 1)),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(6, 0), "test": self._generate_examples(3, 1)}

        def _generate_examples(self, count, seed):
            rng = np.random.default_rng(seed)
            for index in range(count):
                mask = np.full((16, 16, 1), 2, "uint8")  # background
                mask[4:12, 4:12] = 3  # border
                mask[6:10, 6:10] = 1  # pet
                yield index, {"image": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "segmentation_mask": mask}

    TinyPets(data_dir=str(folder)).download_and_prepare()


def test_masks_of_a_prepared_tfds_set_are_read_resized_by_nearest_neighbour_and_offset_to_class_indices(tmp_path):
    _prepare_tiny_pets(tmp_path)
    images, masks, names = read_tfds_masks(
        "tiny_pets",
        data_dir=str(tmp_path),
        split="train",
        image_size=8,
        mask_key="segmentation_mask",
        offset=-1,
        class_names=["pet", "background", "border"],
    )
    assert (
        images.shape == (6, 8, 8, 3)
        and images.dtype == np.float32
        and masks.shape == (6, 8, 8)
        and masks.dtype == np.uint8
    )
    assert names == ["pet", "background", "border"] and set(np.unique(masks).tolist()) == {0, 1, 2}
    expected = np.full((8, 8), 1)
    expected[2:6, 2:6] = 2
    expected[3:5, 3:5] = 0  # each 2x2 block keeps one stored value: pet 0, background 1, border 2
    np.testing.assert_array_equal(masks[0], expected)
    test_images, _, _ = read_tfds_masks(
        "tiny_pets", data_dir=str(tmp_path), split="test", image_size=8, limit=2, mask_key="segmentation_mask"
    )
    assert len(test_images) == 2
    with pytest.raises(ValueError, match="does not know the mask feature of the TFDS set 'tiny_pets'"):
        read_tfds_masks("tiny_pets", data_dir=str(tmp_path))


def test_oxford_iiit_pet_is_known_and_unprepared_fails_fast_with_the_offline_steps(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"'oxford_iiit_pet' is not prepared.*tfds build oxford_iiit_pet --data_dir"
    ):
        read_tfds_masks("oxford_iiit_pet", data_dir=str(tmp_path))
