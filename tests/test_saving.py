"""Model files are written whole or not at all."""

import os

import keras
import numpy as np
import pytest

from kdistill.models import saving
from conftest import small_cnn


def test_a_failed_save_keeps_the_previous_file_and_leaves_no_partial_one(tmp_path, monkeypatch):
    """SIGKILL mid-write used to leave best_student.keras at 163,024 of 2,276,974 bytes ("File is not a zip file")."""
    path = str(tmp_path / "best_student.keras")
    model = small_cnn("student", widths=(4, 8))
    saving.save_for_inference(model, path)
    good = open(path, "rb").read()

    def dies_half_way(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        saving.save_for_inference(small_cnn("student", widths=(4, 8), seed=3), path)
    assert open(path, "rb").read() == good
    assert os.listdir(tmp_path) == ["best_student.keras"]
    monkeypatch.undo()
    reloaded = saving.load_model(path, role="student")
    x = np.zeros((1, 32, 32, 3), "float32")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_a_distiller_saved_by_0_3_loads_with_its_adapters_loss_weights_and_optimizer_state():
    """tests/data/distiller_0.3.keras: ReviewKD fusion, CRD heads per tap and an adversarial discriminator, one Adam step,
    saved by kdistill 0.3 (commit 9b38d54; its config's `review` alias of `adapter="review"` later removed from the
    file, as from the code). Its weights sit where they were saved, so the terms and the optimizer's
    state read back as that version read them (numbers below computed by it)."""
    import kdistill
    from conftest import images, labels

    distiller = keras.saving.load_model(
        os.path.join(os.path.dirname(__file__), "data", "distiller_0.3.keras"),
        custom_objects={"FeatureDistiller": kdistill.FeatureDistiller},
    )
    x, y = images(8, 3), labels(8, 3)
    keras.utils.set_random_seed(0)
    terms = distiller.loss_terms(
        keras.ops.convert_to_tensor(y), distiller.teacher_outputs(x), distiller.student_outputs(x, training=False)
    )
    expected = {
        "ce_loss": 2.295732,
        "kd_loss": 0.71353269,
        "feat_teacher_stage1": 2.7705383,
        "feat_teacher_stage2": 2.8654222,
        "loss": 4.3226128,
    }
    np.testing.assert_allclose([float(terms[k]) for k in expected], list(expected.values()), rtol=1e-5)
    optimizer_state = sum(float(np.abs(keras.ops.convert_to_numpy(v)).sum()) for v in distiller.optimizer.variables)
    np.testing.assert_allclose(optimizer_state, 104.43098545312202, rtol=1e-6)
    assert np.isfinite(distiller.train_on_batch(x, y)).all()  # and training resumes


def test_a_saved_single_input_model_takes_a_plain_batch_without_a_structure_warning(tmp_path):
    """Saved with a list of one input, a model warned "The structure of `inputs` doesn't match" on every call with a batch."""
    import warnings

    path = str(tmp_path / "model.keras")
    saving.save_for_inference(small_cnn("model"), path)
    loaded = saving.load_model(path, role="model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded(np.zeros((2, 32, 32, 3), "float32"))
    assert not [w for w in caught if "structure" in str(w.message)], [str(w.message) for w in caught]
