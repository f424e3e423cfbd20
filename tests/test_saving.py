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
