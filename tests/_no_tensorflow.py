"""Run in a subprocess by test_backends.py (PyTorch) and test_install.py (JAX, in a Python 3.12 venv without TensorFlow): a small
distillation where importing TensorFlow is impossible; `check_report` is what both assert about its last line.

A finder placed first on `sys.meta_path` makes every `import tensorflow` fail, so
a stray import anywhere on the path (kdistill, Keras' backend) shows up as an
error. (`sys.modules["tensorflow"] = None` would do it too, but Keras' preprocessing
layers take the mere key in `sys.modules` as "TensorFlow is loaded" and then fail.)
"""

import importlib.abc
import importlib.machinery
import json
import os
import sys


class _Refuse(importlib.abc.Loader):
    def create_module(self, spec):
        raise ImportError(f"{spec.name} is blocked: this process checks that kdistill runs without TensorFlow")

    def exec_module(self, module):  # never reached
        raise ImportError(module.__name__)


class _BlockTensorFlow(importlib.abc.MetaPathFinder):
    # A spec without an origin whose loader refuses: `import tensorflow` fails, and libraries that only probe
    # with importlib.util.find_spec (PyTorch's dynamo does, for its skip list) go on.
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, _Refuse(), origin=None)
        return None


def block_tensorflow() -> None:
    """Makes every later `import tensorflow` fail; call it before anything imports Keras."""
    sys.meta_path.insert(0, _BlockTensorFlow())


def check_report(report: dict, backend: str) -> None:
    """Asserts what a run of this script must show: it trained on `backend` without TensorFlow, and export names the install."""
    assert report["backend"] == backend and report["tensorflow_loaded"] == []
    assert report["teacher_unchanged"]
    assert {"loss", "ce_loss", "kd_loss", "feat_teacher_stage2", "accuracy"} <= set(report["history"])
    assert report["history"]["loss"][-1] < report["history"]["loss"][0]
    assert 0.0 <= report["top1"] <= 1.0
    # finite, and the ranges trained in this backend
    assert report["qat_loss"] == report["qat_loss"] and report["qat_range_moved"]
    assert report["qat_twin_agrees"] >= 0.5
    # what needs TensorFlow says so, and names the install
    assert (
        "TensorFlow is needed for exporting models" in report["export_error"]
        and "pip install" in report["export_error"]
    )
    # a segmenter pair trains and is evaluated (mIoU) too
    assert {"ce_loss", "kd_loss", "feat_conv_segmenter_stage2", "accuracy"} <= set(report["dense_history"])
    assert (
        all(value == value for values in report["dense_history"].values() for value in values)
        and 0.0 <= report["mean_iou"] <= 1.0
    )


def _segmentation(kdistill, keras, items, labels) -> dict:
    """A segmenter pair on offline scenes: one epoch (CWD on the logit map, a feature tap), then mIoU; all without TensorFlow."""
    scenes = kdistill.data.make_scenes(items, labels, count=8, size=32, max_items=2, seed=0)
    classes = len(scenes.class_names)
    teacher = kdistill.segmenters.get("conv_segmenter", classes, (32, 32, 3), widths=(16, 32, 64), decoder_channels=16)
    student = kdistill.segmenters.get("conv_segmenter", classes, (32, 32, 3), widths=(4, 8, 16), decoder_channels=8)
    distiller = kdistill.FeatureDistiller(
        teacher,
        student,
        taps={"conv_segmenter_stage2": "conv_segmenter_stage2"},
        logits_loss={"name": "cwd", "temperature": 1.0},
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = distiller.fit(scenes.images, scenes.masks, batch_size=4, epochs=1, verbose=0).history
    report = kdistill.segmentation_metrics.evaluate_segmenter(student, scenes.images, scenes.masks, scenes.class_names)
    return {"dense_history": history, "mean_iou": report["mean_iou"]}


def main() -> None:
    block_tensorflow()  # before anything else
    sys.path.insert(0, os.path.dirname(__file__))

    import keras
    import numpy as np

    import kdistill
    from conftest import small_cnn

    sample = os.path.join(os.path.dirname(__file__), "data", "fashion-mnist-sample")
    (x_train, y_train), (x_test, y_test) = kdistill.data.load_fashion_mnist(sample)  # real images, NumPy only
    x = np.repeat(x_train[:256, :, :, None], 3, axis=-1).astype("float32")
    y = y_train[:256].astype("int32")
    keras.utils.set_random_seed(0)
    teacher = small_cnn("teacher", widths=(16, 32), seed=1, input_shape=(28, 28, 3))
    student = small_cnn("student", widths=(8, 16), seed=2, input_shape=(28, 28, 3))
    before = [np.array(w) for w in teacher.weights]
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps={"teacher_stage2": "student_stage2"}, logits_loss="dkd", alpha=0.7
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=64, epochs=2, verbose=0)
    report = kdistill.evaluation.evaluate(student, [(x[:64], y[:64])], timing_batches=1)
    # Quantization-aware fine-tuning: the fake-quant math and the range updates run in this backend's trainer.
    twin = kdistill.quantize.quantize_model(student, calibration_images=x[:64])
    before_range = twin.get_layer("student_stage2").output_quantizer.range()
    qat = kdistill.FeatureDistiller(teacher, twin, taps={"teacher_stage2": "student_stage2"}, alpha=0.7)
    qat.compile(optimizer=keras.optimizers.Adam(1e-3))
    qat_history = qat.fit(x, y, batch_size=64, epochs=1, verbose=0).history
    after_range = twin.get_layer("student_stage2").output_quantizer.range()
    try:
        kdistill.export.saved_model(student, os.path.join(sys.argv[1], "serving"))
        export_error = None
    except ImportError as error:
        export_error = str(error)
    segmentation = _segmentation(kdistill, keras, x_train[:100], y_train[:100])
    tensorflow_loaded = [name for name in sys.modules if name == "tensorflow" or name.startswith("tensorflow.")]
    print(
        json.dumps(
            {
                **segmentation,
                "backend": keras.backend.backend(),
                "history": history.history,
                "top1": report["top1"],
                "export_error": export_error,
                "qat_loss": qat_history["loss"][-1],
                "qat_range_moved": before_range != after_range,
                "qat_twin_agrees": float(
                    (
                        np.argmax(twin.predict(x[:64], verbose=0), -1)
                        == np.argmax(student.predict(x[:64], verbose=0), -1)
                    ).mean()
                ),
                "teacher_unchanged": all(np.array_equal(b, np.array(w)) for b, w in zip(before, teacher.weights)),
                "tensorflow_loaded": tensorflow_loaded,
            }
        )
    )


if __name__ == "__main__":
    main()
