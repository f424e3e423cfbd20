import keras
import numpy as np
import pytest

from kdistill.adapters import projection as projections


@pytest.mark.parametrize(
    "student_shape, teacher_shape, expected_pool",
    [
        ((None, 8, 8, 32), (None, 4, 4, 64), (2, 2)),
        ((None, 4, 4, 32), (None, 4, 4, 64), None),
        ((None, 3, 3, 8), (None, 4, 4, 16), None),
    ],
)
def test_map_projection_aligns_space_and_channels(student_shape, teacher_shape, expected_pool):
    projection = projections.build(student_shape, teacher_shape, name="p")
    assert isinstance(projection, projections.MapProjection)
    assert projection._pool_size == expected_pool
    out = projection(np.random.rand(2, *student_shape[1:]).astype("float32"), training=False)
    assert tuple(out.shape) == (2, *teacher_shape[1:])


def test_vector_projection_pools_maps_and_maps_vectors():
    for student_shape in [(None, 4, 4, 8), (None, 8)]:
        projection = projections.build(student_shape, (None, 10), name="v")
        assert tuple(projection(np.ones((3, *student_shape[1:]), "float32")).shape) == (3, 10)


def test_vector_to_map_is_refused_with_an_explanation():
    with pytest.raises(ValueError, match=r"Cannot project a student feature of shape \(None, 8\).*Conv"):
        projections.build((None, 8), (None, 4, 4, 16), name="bad")


def test_pool_alignment_refuses_non_multiples():
    with pytest.raises(ValueError, match="not integer multiples"):
        projections.build((None, 6, 6, 8), (None, 4, 4, 16), name="p", alignment="pool")


def test_projection_config_round_trips_and_reproduces_outputs():
    projection = projections.build((None, 8, 8, 4), (None, 4, 4, 6), name="p")
    config = keras.saving.serialize_keras_object(projection)
    restored = keras.saving.deserialize_keras_object(config)
    restored.set_weights(projection.get_weights())
    x = np.random.rand(2, 8, 8, 4).astype("float32")
    np.testing.assert_allclose(restored(x, training=False), projection(x, training=False), rtol=1e-6)
    assert restored.get_config() == projection.get_config()


def test_describe_says_how_shapes_are_mapped():
    assert (
        projections.describe((None, 8, 8, 96), (None, 4, 4, 512))
        == "8x8x96 -> average pool /2, Conv1x1(512) + BN -> 4x4x512"
    )
    assert "Dense(10)" in projections.describe((None, 2, 2, 8), (None, 10))
