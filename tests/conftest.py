"""Shared fixtures: quiet TensorFlow, no network, fixed seeds, small models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KDISTILL_OFFLINE"] = "1"  # nothing in the tests may try to download
# XLA (the JAX backend, here and in every process a test starts) compiles without LLVM's optimisations: the tests'
# programs run a few steps, so compiling is most of their time (the JAX CLI script: 71 CPU-s with them, 46 without).
# Results are checked, not speed.
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()

import keras
import numpy as np
import pytest


def pytest_collection_modifyitems(items):
    """Tests marked `slow` go first, in their files' order, then the rest as collected.

    Under pytest-xdist's `--dist loadgroup` (pyproject.toml) the workers take tests in this order, so the long ones are shared out first and
    the short ones fill the gaps at the end, instead of a long test starting last while the other worker idles.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


@pytest.fixture(autouse=True)
def _eager_tensorflow(request):
    """Tests marked `eager` run TensorFlow's functions eagerly (`tf.config.run_functions_eagerly`), in this process only.

    They train a few steps: on two CPU cores, tracing a MobileNetV2 train step costs 25-30 s, more than running those steps eagerly. Every
    other test, and every fixture (set up before this one), traces as a user's `fit` does, which keeps the graph path tested.
    """
    if request.node.get_closest_marker("eager") is None or keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


@pytest.fixture(scope="session")
def resnet50_teacher():
    """A random-weight ResNet50 teacher at 32x32 (frozen by every distiller that uses it)."""
    import kdistill

    return kdistill.teachers.resnet50(num_classes=10, input_shape=(32, 32, 3), weights=None)


@pytest.fixture(scope="session")
def fake_fashion_mnist(tmp_path_factory):
    """A folder of 160 training and 48 test Fashion-MNIST-shaped IDX files, made once and only read (CLI and backend tests)."""
    from test_data import make_fashion_mnist

    folder = tmp_path_factory.mktemp("fmnist")
    make_fashion_mnist(folder, train=160, test=48)
    return str(folder)


@pytest.fixture(scope="session")
def small_teacher_file(tmp_path_factory):
    """`resnet50_shaped_teacher` saved once (.keras): ResNet50's stage names, so preset taps apply, at a fraction of its cost.

    For tests that distil from a saved teacher; the ones about ResNet50 itself train or build the real one.
    """
    path = tmp_path_factory.mktemp("small_teacher") / "teacher.keras"
    resnet50_shaped_teacher().save(path)
    return str(path)


def small_cnn(
    name: str,
    widths=(8, 16),
    num_classes: int = 10,
    input_shape=(32, 32, 3),
    seed: int = 0,
    first_layer=None,
    batch_norm=True,
) -> keras.Model:
    """A tiny functional CNN with layers `<name>_stage1`, `<name>_stage2` (for fast tests)."""
    initializer = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input(input_shape)
    x = first_layer(inputs) if first_layer is not None else inputs
    x = keras.layers.Rescaling(1.0 / 255.0)(x)
    for index, width in enumerate(widths, start=1):
        x = keras.layers.Conv2D(
            width, 3, strides=2, padding="same", kernel_initializer=initializer, name=f"{name}_conv{index}"
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{name}_bn{index}")(x)
        x = keras.layers.ReLU(name=f"{name}_stage{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=initializer, name=f"{name}_logits")(x)
    return keras.Model(inputs, outputs, name=name)


def images(count: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def labels(count: int, seed: int = 0, classes: int = 10) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, classes, count)


def resnet50_shaped_teacher(num_classes: int = 10, seed: int = 0) -> keras.Model:
    """A tiny CNN whose stage outputs carry ResNet50's names and resolutions at 32x32 (fast stand-in for scripts)."""
    initializer = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    stages = [
        ("conv2_block3_out", 16, 4),
        ("conv3_block4_out", 32, 2),
        ("conv4_block6_out", 64, 2),
        ("conv5_block3_out", 128, 2),
    ]
    for name, width, stride in stages:
        x = keras.layers.Conv2D(width, 3, strides=stride, padding="same", kernel_initializer=initializer)(x)
        x = keras.layers.ReLU(name=name)(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(
        inputs, keras.layers.Dense(num_classes, kernel_initializer=initializer, name="predictions")(x), name="resnet50"
    )


REAL_SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fashion-mnist-sample")


def real_images(count: int = 64, size: int = 32, split: str = "train"):
    """`count` real Fashion-MNIST images from tests/data, as (count, size, size, 3) float32 in [0, 255], and their labels."""
    from kdistill import data

    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist(REAL_SAMPLE)
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    x = np.repeat(x[:count, :, :, None], 3, axis=-1).astype("float32")
    if size != x.shape[1]:
        x = np.asarray(keras.ops.image.resize(x, (size, size)))
    return x, y[:count].astype("int64")


def assert_gradient_step_lowers(loss, teacher, start, step: float = 1e-2) -> None:
    """One normalised gradient step from `start` lowers `loss.call(teacher, student)`, and its gradient is finite and non-zero."""
    import tensorflow as tf

    student = tf.Variable(start)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(loss.call(teacher, student))
    gradient = tape.gradient(value, student)
    assert np.isfinite(gradient.numpy()).all() and np.abs(gradient.numpy()).sum() > 0
    student.assign_sub(step * gradient / (np.abs(gradient.numpy()).max() + 1e-12))
    assert float(tf.reduce_mean(loss.call(teacher, student))) < float(value)


@pytest.fixture(scope="session")
def tiny_teacher_file(tmp_path_factory) -> str:
    """A saved untrained `small_cnn` teacher, made once per test process."""
    path = str(tmp_path_factory.mktemp("small_teacher") / "teacher.keras")
    small_cnn("teacher", widths=(8, 16), seed=1).save(path)
    return path


def distill_arguments(teacher_file: str, output, epochs: int = 1, *extra: str) -> list[str]:
    """`kdistill distill` arguments for a small run on the real Fashion-MNIST sample in tests/data (an untrained teacher, so no teacher check)."""
    return [
        "distill",
        "--data-dir",
        REAL_SAMPLE,
        "--teacher",
        teacher_file,
        "--student",
        "resnet8x4",
        "--taps",
        "none",
        "--epochs",
        str(epochs),
        "--batch-size",
        "32",
        "--train-limit",
        "64",
        "--test-limit",
        "32",
        "--no-check-teacher",
        "--output-dir",
        str(output),
        *extra,
    ]


def one_line(err: str) -> str:
    """The one line a command wrote to stderr, log lines aside (fails if there is more than one, or a traceback)."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("kdistill: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
