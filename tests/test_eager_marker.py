"""The `eager` marker (tests/conftest.py) switches TensorFlow to eager functions for its test only."""

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow setting")


@pytest.mark.eager
def test_a_test_marked_eager_runs_functions_eagerly():
    import tensorflow as tf

    assert tf.config.functions_run_eagerly()


def test_other_tests_trace_as_a_users_fit_does():
    import tensorflow as tf

    assert not tf.config.functions_run_eagerly()
