"""Shared checks for kdistill's parts, as keras-hub's `TestCase` runs the same checks for every model.

A test of a loss, a student, a teacher or an adapter hands its object to these
instead of writing the checks again; each returns what it rebuilt or measured,
so the test can go on with its own assertions.

* `run_config_round_trip(obj)`: serialised and rebuilt, it is the same class with the same config.
* `run_model_saving(model, path, x)`: saved and loaded, the model predicts the same.
* `run_distiller_saving(distiller, path, x, y)`: a compiled distiller saved and loaded whole: its options,
  every weight (student, adapter, a loss's own), the optimizer's step count and the loss terms read back.
* `run_training_step(distiller, x, y)`: one optimizer step reports every term, finite, trains the student
  and the adapter, and leaves the teacher's weights bit-identical.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np


def _numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def run_config_round_trip(obj: Any) -> Any:
    """Rebuilds `obj` through `keras.saving.serialize_keras_object` (as a `.keras` file stores it); returns the rebuilt one."""
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(restored) is type(obj), (type(restored), type(obj))
    assert restored.get_config() == obj.get_config(), type(obj).__name__
    return restored


def run_model_saving(
    model: keras.Model,
    path: str,
    x: np.ndarray,
    load: Callable[[str], keras.Model] = keras.saving.load_model,
    atol: float = 0.0,
) -> keras.Model:
    """Saves `model` to `path` (a `.keras` file), loads it with `load`, and checks both predict the same on `x` (to `atol`)."""
    model.save(path)
    restored = load(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=atol)
    return restored


def _terms(distiller, x, y) -> dict:
    teacher, student = distiller.teacher_outputs(x), distiller.student_outputs(x, training=False)
    return {
        key: float(value)
        for key, value in distiller.loss_terms(keras.ops.convert_to_tensor(y), teacher, student).items()
    }


def run_distiller_saving(distiller, path: str, x: np.ndarray, y: np.ndarray) -> Any:
    """Saves a compiled `FeatureDistiller` whole and loads it: the same options, weights, optimizer step and loss terms."""
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(distiller)
    serialize = keras.saving.serialize_keras_object
    for option in distiller.OPTIONS:
        assert serialize(getattr(restored, option)) == serialize(getattr(distiller, option)), option
    assert restored.taps == distiller.taps
    assert [w.path for w in restored.weights] == [w.path for w in distiller.weights]
    for original, loaded in zip(distiller.weights, restored.weights):
        np.testing.assert_array_equal(_numpy(loaded), _numpy(original), err_msg=original.path)
    assert int(restored.optimizer.iterations) == int(distiller.optimizer.iterations)
    expected = _terms(distiller, x, y)
    np.testing.assert_allclose(list(_terms(restored, x, y).values()), list(expected.values()), rtol=1e-5)
    return restored


def run_training_step(distiller, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> dict:
    """One `train_on_batch` of a compiled distiller; returns its metrics."""
    teacher_before = [_numpy(w).copy() for w in distiller.teacher.weights]
    student_before = [_numpy(w).copy() for w in distiller.student.trainable_weights]
    adapter_before = [_numpy(w).copy() for w in distiller.student_adapter.trainable_weights]
    metrics = distiller.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
    assert set(distiller.training_objective.term_names) <= set(metrics), (
        sorted(metrics),
        distiller.training_objective.term_names,
    )
    assert all(np.isfinite(value) for value in metrics.values()), metrics
    for before, after in zip(teacher_before, distiller.teacher.weights):
        np.testing.assert_array_equal(before, _numpy(after), err_msg=f"the teacher changed: {after.path}")
    assert any(not np.array_equal(b, _numpy(a)) for b, a in zip(student_before, distiller.student.trainable_weights)), (
        "the student did not train"
    )
    if adapter_before:
        assert any(
            not np.array_equal(b, _numpy(a))
            for b, a in zip(adapter_before, distiller.student_adapter.trainable_weights)
        ), "the adapter did not train"
    return metrics
