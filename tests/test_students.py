import numpy as np
import pytest

import kdistill


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "resnet8x4", "resnet20"])
def test_students_accept_32x32_images_and_output_logits(name):
    student = kdistill.students.get(name, num_classes=10, input_shape=(32, 32, 3))
    out = student(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32"), training=False)
    assert tuple(out.shape) == (2, 10)
    assert np.isfinite(np.asarray(out)).all()


def test_mobilenet_v2_width_multiplier_shrinks_the_model():
    narrow = kdistill.students.get("mobilenet_v2", num_classes=10, width=0.35)
    wide = kdistill.students.get("mobilenet_v2", num_classes=10, width=1.0)
    assert narrow.count_params() < wide.count_params() / 2


def test_student_save_and_reload_gives_identical_predictions(tmp_path):
    student = kdistill.students.get("resnet8x4", num_classes=10)
    path = str(tmp_path / "student.keras")
    student.save(path)
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(kdistill.students.load(path).predict(x, verbose=0), student.predict(x, verbose=0))


def test_unknown_student_lists_registered_ones():
    with pytest.raises(ValueError, match=r"Did you mean 'mobilenet_v2'.*Registered: .*resnet20"):
        kdistill.students.get("mobilenet_v2x", num_classes=10)


def test_batch_norm_momentum_is_set_for_short_schedules():
    from keras.layers import BatchNormalization

    student = kdistill.students.get("mobilenet_v2", num_classes=10)
    momenta = {layer.momentum for layer in student.layers if isinstance(layer, BatchNormalization)}
    assert momenta == {0.9}
    keras_default = kdistill.students.get("mobilenet_v2", num_classes=10, batch_norm_momentum=None)
    assert {layer.momentum for layer in keras_default.layers if isinstance(layer, BatchNormalization)} == {0.999}
    with pytest.raises(ValueError, match="batch_norm_momentum"):
        kdistill.students.get("resnet20", num_classes=10, batch_norm_momentum=1.5)


def test_a_saved_student_loads_with_plain_keras_without_kdistill(tmp_path):
    import subprocess
    import sys

    import kdistill

    path = tmp_path / "student.keras"
    kdistill.students.get("mobilenet_v2", num_classes=10).save(path)
    code = f"import keras, sys; m = keras.models.load_model({str(path)!r}); assert 'kdistill' not in sys.modules; print(m.count_params())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) > 0
