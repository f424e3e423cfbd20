"""Run by test_backends.py: every `kdistill --backend jax` command on tiny settings, in one process where TensorFlow cannot be imported.

argv[1]: a folder of Fashion-MNIST-shaped IDX files; argv[2]: a work folder; argv[3]: a small saved teacher with ResNet50's
stage names (conftest.resnet50_shaped_teacher). Every command but the demo (which trains its own CIFAR ResNet-20) takes the
small teacher (train-teacher through `--weights`, which loads a whole saved teacher and trains it with the same recipe), so
that XLA never compiles ResNet50: that alone took ~35 s here. Building a ResNet50 teacher runs on every backend through Keras' own ResNet50 and kdistill's input layer, whose JAX
result is checked below against Keras' `preprocess_input`.
KERAS_BACKEND is not set: `--backend jax` must set it before Keras loads.
"""

import contextlib
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _no_tensorflow import block_tensorflow

block_tensorflow()
from kdistill import cli  # noqa: E402

data_dir, work, small_teacher = sys.argv[1], sys.argv[2], sys.argv[3]
tiny = ["--data-dir", data_dir, "--train-limit", "64", "--batch-size", "32"]
commands = {
    "train-teacher": [
        "train-teacher",
        *tiny,
        "--epochs",
        "1",
        "--weights",
        small_teacher,
        "--output",
        os.path.join(work, "teacher.keras"),
    ],
    # quantization-aware training on JAX: tests/_no_tensorflow.py
    "demo": [
        "demo",
        "--data-dir",
        data_dir,
        "--output-dir",
        os.path.join(work, "demo"),
        "--quiet",
        "--set",
        "train_limit=64",
        "--set",
        "teacher_epochs=1",
        "--set",
        "student_epochs=1",
        "--set",
        "batch_size=32",
        "--set",
        "student=resnet8x4",
        "--set",
        "latency_plot=false",
        "--set",
        "qat_epochs=0",
    ],
    "distill": [
        "distill",
        *tiny,
        "--teacher",
        small_teacher,
        "--student",
        "resnet8x4",
        "--epochs",
        "2",
        "--output-dir",
        os.path.join(work, "run"),
        "--teacher-cache",
        os.path.join(work, "cache"),
    ],
    "evaluate": ["evaluate", os.path.join(work, "run", "student.keras"), "--data-dir", data_dir],
    "cache-teacher": ["cache-teacher", *tiny, "--teacher", small_teacher, "--output", os.path.join(work, "cache2")],
    "export": [
        "export",
        os.path.join(work, "run", "student.keras"),
        "--data-dir",
        data_dir,
        "--output-dir",
        os.path.join(work, "export"),
    ],
}
# Ctrl-C in epoch 2, then the same command resumes (after the first commands: --backend jax must be what loads Keras)
commands = {
    name: arguments
    for key, value in commands.items()
    for name, arguments in ((("distill-interrupted", value),) if key == "distill" else ()) + ((key, value),)
}


@contextlib.contextmanager
def ctrl_c_inside_keras_logs_in_epoch_2():
    """SIGINT where it lands on JAX after epoch 1: in Keras' pythonify_logs (converting the step's results), under its bare except."""
    import signal

    import keras.src.backend as keras_backend

    from kdistill.run import interrupts

    convert, begin, sent = keras_backend.convert_to_numpy, interrupts.EpochProgress.on_epoch_begin, []

    def convert_and_interrupt(value):
        if getattr(interrupts.EpochProgress, "current", None) == 2 and not sent:
            sent.append(True)  # once: the handler raises KeyboardInterrupt as soon as os.kill returns
            os.kill(os.getpid(), signal.SIGINT)
        return convert(value)

    def on_epoch_begin(self, epoch, logs=None):
        interrupts.EpochProgress.current = epoch + 1
        begin(self, epoch, logs)

    keras_backend.convert_to_numpy, interrupts.EpochProgress.on_epoch_begin = convert_and_interrupt, on_epoch_begin
    try:
        yield
    finally:
        keras_backend.convert_to_numpy, interrupts.EpochProgress.on_epoch_begin = convert, begin


report = {}
for name, arguments in commands.items():
    out, err = io.StringIO(), io.StringIO()
    interrupting = ctrl_c_inside_keras_logs_in_epoch_2() if name == "distill-interrupted" else contextlib.nullcontext()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), interrupting:
        status = cli.main(["--backend", "jax", *arguments])
    report[name] = {"status": status, "out": out.getvalue()[-2000:], "err": err.getvalue()[-2000:]}

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kdistill.models.preprocessing import ImagePreprocessing  # noqa: E402

report["backend"] = keras.backend.backend()
pixels = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
report["caffe_difference"] = float(
    np.abs(
        keras.ops.convert_to_numpy(ImagePreprocessing("caffe")(pixels))
        - keras.applications.resnet50.preprocess_input(pixels.copy())
    ).max()
)
report["trained_teacher"] = keras.saving.load_model(os.path.join(work, "teacher.keras"), compile=False).name
report["demo_summary"] = json.load(open(os.path.join(work, "demo", "summary.json")))
report["distill_summary"] = json.load(open(os.path.join(work, "run", "summary.json")))
report["tensorflow_loaded"] = [name for name in sys.modules if name == "tensorflow" or name.startswith("tensorflow.")]
print(json.dumps(report))
