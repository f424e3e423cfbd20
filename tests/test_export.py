import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill import export
from kdistill.export import int8_calibration

#: one pytest-xdist worker runs this file; its fixtures (the shipped ResNet-20, its SavedModel) are session-scoped, so
#: they are made once even when the worker runs other files' tests between this file's
pytestmark = pytest.mark.xdist_group("export")

#: 2,000 training and 1,000 test images of the real Fashion-MNIST, shipped with the tests
#: (tools/make_fashion_mnist_sample.py)
REAL_SAMPLE = os.path.join(os.path.dirname(__file__), "data", "fashion-mnist-sample")


#: ResNet-20 trained 4 epochs on the sample's 1,800 training images (tools/make_test_models.py, which the fixture below
#: used to run each session: about a minute of the suite's time)
TRAINED_RESNET20 = os.path.join(os.path.dirname(__file__), "data", "resnet20_fashion_mnist_sample.keras")


@pytest.fixture(scope="session")
def trained():
    """The shipped trained ResNet-20 (73.4% top-1 on the sample's held-out 1,000 images) and the sample's splits."""
    splits = kdistill.data.load("fashion_mnist", data_dir=REAL_SAMPLE, batch_size=32, validation_fraction=0.1)
    assert splits.counts == {"train": 1800, "validation": 200, "test": 1000}
    assert os.path.exists(TRAINED_RESNET20), "make it with `python tools/make_test_models.py`"
    return keras.saving.load_model(TRAINED_RESNET20), splits


@pytest.fixture(scope="session")
def served(trained, tmp_path_factory):
    """The trained student's SavedModel, shared by the TFLite conversions below (`saved_model_dir`, as export_all shares one).

    test_parity_report_covers_every_format converts without it, through a SavedModel of its own.
    """
    student, _ = trained
    return export.saved_model(student, str(tmp_path_factory.mktemp("served") / "serving"), version=1)


def _test_images(splits, count=64):
    return np.concatenate([np.asarray(x) for x, _ in splits.test])[:count]


@pytest.mark.eager
def test_saved_model_serving_signature_matches_keras(trained, tmp_path):
    student, splits = trained
    version_dir = export.saved_model(student, str(tmp_path / "serving"), version=3)
    assert version_dir == str(tmp_path / "serving" / "3") and os.path.exists(
        os.path.join(version_dir, "saved_model.pb")
    )
    loaded = tf.saved_model.load(version_dir)
    signature = loaded.signatures["serving_default"]
    images = _test_images(splits)
    served = signature(images=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(served, student.predict(images, verbose=0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode, atol", [("float32", 1e-4), ("float16", 0.05)])
@pytest.mark.eager
def test_float_tflite_matches_keras(trained, served, tmp_path, mode, atol):
    student, splits = trained
    path = export.tflite(student, str(tmp_path / f"student_{mode}.tflite"), quantize=mode, saved_model_dir=served)
    images = _test_images(splits, 32)
    keras_logits = student.predict(images, verbose=0)
    np.testing.assert_allclose(
        export.tflite_predict(path, images), keras_logits, atol=atol * max(1.0, np.abs(keras_logits).max())
    )
    # run by LiteRT's interpreter (the litert extra is part of the test install), not the deprecated tf.lite one
    from kdistill.export import tflite_runtime

    assert tflite_runtime.interpreter_class().__module__ == "ai_edge_litert.interpreter"


@pytest.mark.parametrize("int8_io, calibration", [(False, "minmax"), (True, "minmax"), (False, "percentile")])
@pytest.mark.eager
def test_int8_tflite_agrees_with_keras_on_held_out_real_images(trained, served, tmp_path, int8_io, calibration):
    student, splits = trained
    path = export.tflite(
        student,
        str(tmp_path / "student_int8.tflite"),
        quantize="int8",
        representative=splits.validation,
        int8_io=int8_io,
        calibration=calibration,
        saved_model_dir=served,
    )
    images = _test_images(splits, 1000)
    assert len(images) == 1000
    agreement = (export.tflite_predict(path, images).argmax(-1) == student.predict(images, verbose=0).argmax(-1)).mean()
    assert agreement >= 0.98, agreement
    detail = tf.lite.Interpreter(model_path=path).get_input_details()[0]
    assert detail["dtype"] == (np.int8 if int8_io else np.float32)
    if not int8_io and calibration == "minmax":  # once: dynamic-range weights are int8
        dynamic = export.tflite(
            student, str(tmp_path / "student_dynamic.tflite"), quantize="dynamic", saved_model_dir=served
        )
        assert os.path.getsize(dynamic) < 0.5 * os.path.getsize(
            export.tflite(student, str(tmp_path / "f32.tflite"), saved_model_dir=served)
        )


@pytest.mark.eager
def test_int16x8_is_integer_only_and_closer_to_keras_than_int8(trained, served, tmp_path):
    student, splits = trained
    int8 = export.tflite(
        student,
        str(tmp_path / "int8.tflite"),
        quantize="int8",
        representative=splits.validation,
        saved_model_dir=served,
    )
    int16 = export.tflite(
        student,
        str(tmp_path / "int16x8.tflite"),
        quantize="int16x8",
        representative=splits.validation,
        saved_model_dir=served,
    )
    tensor_types = {detail["dtype"] for detail in tf.lite.Interpreter(model_path=int16).get_tensor_details()}
    assert np.int16 in tensor_types and np.int8 in tensor_types
    images = _test_images(splits, 100)  # (TFLite's int16x8 kernels are reference ones: 20 ms an image here)
    keras_logits = student.predict(images, verbose=0)
    error = {
        name: np.abs(export.tflite_predict(path, images) - keras_logits).mean()
        for name, path in (("int8", int8), ("int16x8", int16))
    }
    assert error["int16x8"] < 0.75 * error["int8"], error  # weights stay int8, so not 256x closer (0.55x measured)


def test_percentile_calibration_narrows_a_range_that_an_outlier_widened(tmp_path):
    """One bright pixel per 1,000 images sets the converter's range; percentile calibration ignores it."""
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Conv2D(2, 1, kernel_initializer="ones", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling2D()(hidden)))
    images = np.random.default_rng(0).uniform(0.0, 1.0, (1000, 8, 8, 1)).astype("float32")
    images[0, 0, 0, 0] = 100.0

    def hidden_scale(calibration):
        flatbuffer = int8_calibration.quantize_int8(
            tf.lite.TFLiteConverter.from_keras_model(model), images, method=calibration
        )
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
        scales = [
            d["quantization"][0]
            for d in interpreter.get_tensor_details()
            if list(d["shape"]) == [1, 8, 8, 2] and d["dtype"] == np.int8
        ]
        assert scales, [d["name"] for d in interpreter.get_tensor_details()]
        return scales[0]

    assert hidden_scale("minmax") == pytest.approx(100.0 / 255, rel=0.05)
    assert hidden_scale("percentile") < 2.0 / 255


def test_percentile_histogram_matches_numpy_within_a_bin():
    values = np.random.default_rng(1).normal(size=200_000)
    low, high = float(values.min()), float(values.max())
    histograms = int8_calibration._Histograms({0: (low, high)})
    for chunk in np.split(values, 8):
        histograms.add(0, chunk)
    width = (high - low) / int8_calibration._BINS
    got = histograms.percentile_range(0, 99.9)
    assert got[0] == pytest.approx(np.percentile(values, 0.1), abs=width)
    assert got[1] == pytest.approx(np.percentile(values, 99.9), abs=width)


@pytest.mark.eager
def test_parity_report_covers_every_format(trained, tmp_path):
    student, splits = trained
    files = {"tflite_float32": export.tflite(student, str(tmp_path / "a.tflite"))}
    report = export.parity_report(student, files, splits.test, limit=50, json_path=str(tmp_path / "report.json"))
    assert report["examples"] == 50 and set(report["formats"]) == {"keras", "tflite_float32"}
    row = report["formats"]["tflite_float32"]
    assert row["agreement"] == 1.0 and row["size_mb"] > 0 and row["latency_ms"] > 0
    assert (tmp_path / "report.json").exists()


@pytest.mark.parametrize("formats", [("float32", "saved_model", "float16"), ("float32", "float16")])
def test_export_all_traces_one_saved_model_for_every_tflite_file(tmp_path, monkeypatch, formats):
    from kdistill.export import parity, writers

    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    written, original = [], writers.saved_model
    for module in (parity, writers):  # every SavedModel written, by export_all or inside tflite()
        monkeypatch.setattr(
            module, "saved_model", lambda *args, **kwargs: written.append(args[1]) or original(*args, **kwargs)
        )
    result = export.export_all(model, str(tmp_path / "out"), formats=formats)
    assert len(written) == 1 and list(result["files"]) == list(formats)
    images = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        export.tflite_predict(result["files"]["float32"], images), model.predict(images, verbose=0), atol=1e-4
    )
    # the SavedModel asked for is the one converted; otherwise a hidden one that is gone afterwards
    assert ("saved_model" in formats) == (written[0] == str(tmp_path / "out" / "serving"))
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        ["student_float32.tflite", "student_float16.tflite"] + (["serving"] if "saved_model" in formats else [])
    )


def test_exporting_a_distiller_exports_only_its_student(trained, tmp_path):
    student, _ = trained
    teacher = kdistill.students.get("resnet20", num_classes=10)
    distiller = kdistill.FeatureDistiller(teacher, student, taps={"stage2_out": "stage2_out"})
    path = export.saved_model(distiller, str(tmp_path / "d"))
    loaded = tf.saved_model.load(path)
    parameters = sum(int(np.prod(v.shape)) for v in loaded.variables)
    assert parameters == student.count_params()


def test_bad_outputs_fail_clearly_and_leave_nothing_behind(trained, tmp_path):
    student, splits = trained
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        export.saved_model(student, str(a_file / "serving"))
    empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 32, 32, 3), "float32")).batch(4)
    with pytest.raises(ValueError, match="representative dataset is empty"):
        export.tflite(student, str(tmp_path / "out" / "m.tflite"), quantize="int8", representative=empty)
    with pytest.raises(ValueError, match="needs representative"):
        export.tflite(student, str(tmp_path / "out" / "m.tflite"), quantize="int8")
    with pytest.raises(ValueError, match="Unknown quantize"):
        export.tflite(student, str(tmp_path / "out" / "m.tflite"), quantize="int4")
    with pytest.raises(ValueError, match="Unknown int8 calibration 'entropy'; use one of minmax, percentile"):
        export.tflite(
            student,
            str(tmp_path / "out" / "m.tflite"),
            quantize="int8",
            representative=splits.validation,
            calibration="entropy",
        )
    with pytest.raises(ValueError, match=r"percentile must be a number in \(50, 100\]"):
        export.tflite(
            student,
            str(tmp_path / "out" / "m.tflite"),
            quantize="int8",
            representative=splits.validation,
            calibration="percentile",
            percentile=101,
        )
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_onnx_export_matches_keras_and_joins_the_report(trained, tmp_path):
    student, splits = trained
    result = export.export_all(student, str(tmp_path / "out"), formats=["onnx"], test=splits.test, limit=64)
    images = _test_images(splits, 32)
    np.testing.assert_allclose(
        export.onnx_predict(result["files"]["onnx"], images), student.predict(images, verbose=0), atol=1e-4, rtol=1e-4
    )
    assert result["report"]["formats"]["onnx"]["agreement"] == 1.0
    assert os.listdir(tmp_path / "out") == ["student.onnx", "report.json"] or sorted(os.listdir(tmp_path / "out")) == [
        "report.json",
        "student.onnx",
    ]


@pytest.mark.eager
def test_unsupported_op_gives_a_clear_error_and_no_file(tmp_path):
    class NumpyOp(keras.layers.Layer):
        """Runs NumPy inside the graph (tf.numpy_function): there is no TFLite kernel for it."""

        def call(self, x):
            y = tf.numpy_function(lambda a: a * 2, [x], tf.float32, stateful=False)
            y.set_shape(x.shape)
            return y

        def compute_output_shape(self, shape):
            return shape

    inputs = keras.Input((32, 32, 3))
    x = NumpyOp()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(ValueError, match=r"TFLite conversion \(float32\) failed"):
        export.tflite(model, str(tmp_path / "out" / "m.tflite"))
    assert not (tmp_path / "out").exists()  # no file, and no empty folder made for it
