"""MEAL V2's adversarial loss against the authors' code transcribed into NumPy, its gradient reversal, and inside FeatureDistiller."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kdistill
from kdistill.losses import adversarial
from conftest import images, labels, real_images, small_cnn

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------- reference
def np_discriminator(x, convs):
    # Transcribes szq0214/MEAL-V2, models/discriminator.py, Discriminator.forward:
    #   x = x[:,:,None,None]; out = F.relu(self.conv1(x)); out = F.relu(self.conv2(out)); out = F.relu(self.conv3(out))
    #   out = out.view(out.size(0), -1)
    # with conv_k = nn.Conv2d(in, out, kernel_size=1, stride=1, bias=True): weight (out, in, 1, 1), bias (out,).
    out = x[:, :, None, None]
    for weight, bias in convs:
        out = np.einsum("nchw,oc->nohw", out, weight[:, :, 0, 0]) + bias[None, :, None, None]
        out = np.maximum(out, 0.0)
    return out.reshape(out.shape[0], -1)


def np_discriminator_loss(outputs, targets, convs):
    # Transcribes szq0214/MEAL-V2, loss.py, discriminatorLoss.forward(outputs, targets) with loss=nn.BCEWithLogitsLoss(),
    # called by train.py as discriminator_loss([output], [soft_no_softmax]) (student logits, mean teacher logits):
    #   inputs = [torch.cat((i, j), 0) for i, j in zip(outputs, targets)]; inputs = torch.cat(inputs, 1)
    #   target = [[1, 0] for _ in range(batch_size//2)] + [[0, 1] for _ in range(batch_size//2)]
    #   res = self.loss(self.models(inputs), target)
    # BCEWithLogitsLoss (reduction="mean"): mean over all entries of max(x, 0) - x*y + log(1 + exp(-|x|)).
    inputs = [np.concatenate((i, j), 0) for i, j in zip(outputs, targets)]
    inputs = np.concatenate(inputs, 1)
    batch_size = inputs.shape[0]
    target = np.array([[1, 0] for _ in range(batch_size // 2)] + [[0, 1] for _ in range(batch_size // 2)], "float64")
    output = np_discriminator(inputs, convs)
    return np.mean(np.maximum(output, 0) - output * target + np.log1p(np.exp(-np.abs(output)))), output


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _torch_style_convs(widths, seed):
    """Conv weights in PyTorch's layout; positive biases keep the ReLUs open, so every output column is exercised."""
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(out, inp, 1, 1)) / np.sqrt(inp), rng.uniform(0.1, 0.5, size=out))
        for inp, out in zip(widths, widths[1:])
    ]


def _copy_into(loss, convs):
    for layer, (weight, bias) in zip(loss.discriminator.dense_layers, convs):
        layer.set_weights([weight[:, :, 0, 0].T.astype("float32"), bias.astype("float32")])


# (1000, 8): the authors' ImageNet discriminator
@pytest.mark.parametrize("classes, reduction_factor", [(10, 2), (1000, 8)])
@pytest.mark.parametrize("inputs", ["logits", "probabilities"])
def test_discriminator_loss_matches_the_authors_code(classes, reduction_factor, inputs):
    rng = np.random.default_rng(5)
    teacher, student = (
        (rng.normal(size=(6, classes)) * 3).astype("float32"),
        (rng.normal(size=(6, classes)) * 2).astype("float32"),
    )
    loss = adversarial.AdversarialLoss(inputs=inputs, reduction_factor=reduction_factor)
    loss.build(teacher.shape, student.shape)
    widths = [classes, classes // reduction_factor, classes // reduction_factor**2, 2]
    assert [tuple(w.shape) for w in loss.discriminator.weights][::2] == list(zip(widths, widths[1:]))
    convs = _torch_style_convs(widths, seed=classes)
    _copy_into(loss, convs)
    if inputs == "probabilities":  # FKD_train.py: softmax(student output) against the stored teacher probabilities
        reference, output = np_discriminator_loss(
            [_softmax(student.astype("float64"))], [_softmax(teacher.astype("float64"))], convs
        )
    else:
        reference, output = np_discriminator_loss([student.astype("float64")], [teacher.astype("float64")], convs)
    assert (output > 0).any(axis=0).all()  # both outputs are alive, so both target columns are tested
    per_sample = np.asarray(loss(teacher, student))
    assert per_sample.shape == (6,)
    np.testing.assert_allclose(per_sample.mean(), reference, rtol=1e-5)
    teacher_rows, student_rows = (np.asarray(o) for o in loss.discriminator_outputs(teacher, student))
    np.testing.assert_allclose(np.concatenate([student_rows, teacher_rows]), output, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ gradients
def test_the_student_gets_the_reversed_gradient_and_the_discriminator_the_ordinary_one():
    import tensorflow as tf

    rng = np.random.default_rng(11)
    teacher_logits = tf.Variable((rng.normal(size=(8, 10)) * 3).astype("float32"))
    student_logits = tf.Variable(rng.normal(size=(8, 10)).astype("float32"))
    loss = adversarial.AdversarialLoss()
    loss.build((None, 10))
    _copy_into(loss, _torch_style_convs([10, 5, 2, 2], seed=3))

    def gradients(scale):
        loss.student_gradient_scale = scale
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(loss(teacher_logits, student_logits))
        return value, tape.gradient(value, [student_logits, teacher_logits, *loss.trainable_weights])

    reversed_value, (student_reversed, teacher_gradient, *discriminator_reversed) = gradients(-1.0)
    plain_value, (student_plain, _, *discriminator_plain) = gradients(1.0)  # the authors' code: no reversal
    assert float(reversed_value) == pytest.approx(float(plain_value), rel=1e-6)  # the forward pass is untouched
    assert np.abs(student_plain.numpy()).sum() > 0
    np.testing.assert_allclose(student_reversed.numpy(), -student_plain.numpy(), rtol=1e-5, atol=1e-8)
    assert teacher_gradient is None  # the teacher sits behind a stop-gradient
    for reversed_part, plain_part in zip(discriminator_reversed, discriminator_plain):
        np.testing.assert_allclose(reversed_part.numpy(), plain_part.numpy(), rtol=1e-6)

    # One ordinary descent step on the discriminator's weights lowers its loss on the same inputs.
    loss.student_gradient_scale = -1.0
    keras.optimizers.SGD(0.1).apply_gradients(zip(discriminator_reversed, loss.trainable_weights))
    assert float(tf.reduce_mean(loss(teacher_logits, student_logits))) < float(reversed_value)


# ------------------------------------------------------------ config & names
def test_config_round_trips_and_names_resolve():
    loss = kdistill.losses.get(
        {"name": "meal_v2", "reduction_factor": 4, "student_gradient_scale": 1.0, "output_relu": False}, kind="logits"
    )
    assert isinstance(loss, kdistill.losses.AdversarialLoss)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is adversarial.AdversarialLoss and restored.get_config() == loss.get_config()
    assert (restored.reduction_factor, restored.student_gradient_scale, restored.output_relu) == (4, 1.0, False)
    restored.build((None, 100), (None, 100))
    assert [tuple(w.shape) for w in restored.discriminator.weights][::2] == [(100, 25), (25, 6), (6, 2)]
    assert restored.discriminator.dense_layers[-1].activation is keras.activations.linear
    assert isinstance(kdistill.losses.get("adversarial"), adversarial.AdversarialLoss)
    assert kdistill.losses.get("adversarial_feature", kind="feature").inputs == "features"
    # the distiller's temperature is not the discriminator's
    assert kdistill.losses.get("meal_v2", temperature=4.0).inputs == "logits"
    with pytest.raises(ValueError, match="inputs must be one of logits, probabilities, features"):
        adversarial.AdversarialLoss(inputs="softmax")
    with pytest.raises(ValueError, match="reduction_factor of at most 3"):
        adversarial.AdversarialLoss(reduction_factor=8).build((None, 10))


# ---------------------------------------------------------------- distiller
def _trained_teacher(x, y):
    """A small teacher trained a little on real images, so its logits differ from a random student's."""
    teacher = small_cnn("teacher", widths=(8, 16), seed=1, batch_norm=False)
    teacher.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    teacher.fit(x, y, batch_size=32, epochs=10, verbose=0)
    return teacher


def _accuracies(loss, teacher_logits, student, x):
    """The discriminator's balanced accuracy (mean over teacher and student outputs: 0.5 when it cannot tell them apart) and its accuracy on student outputs."""
    on_teacher, on_student = loss.discriminator_accuracy(teacher_logits, student.predict(x, verbose=0))
    return (float(on_teacher) + float(on_student)) / 2, float(on_student)


def test_the_student_fools_the_discriminator_on_real_images_and_the_teacher_is_untouched():
    keras.utils.set_random_seed(1234)
    x, y = real_images(256)
    teacher = _trained_teacher(x, y)
    student = small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(
        teacher,
        student,
        taps={},
        logits_loss=[("kl", 1.0), ({"name": "meal_v2", "output_relu": False}, 4.0)],
        alpha=0.9,
    )
    loss = distiller.logits_loss.parts[1]
    discriminator_paths = {v.path for v in loss.discriminator.weights}
    assert len(discriminator_paths) == 6 and discriminator_paths <= {v.path for v in distiller.trainable_weights}
    assert not discriminator_paths & {v.path for v in student.weights}
    assert not any(v is w for v in loss.discriminator.weights for w in student.weights)
    teacher_before = [w.copy() for w in teacher.get_weights()]
    teacher_logits = teacher.predict(x, verbose=0)

    # The discriminator first learns to tell the two apart while the student is held still.
    student.trainable = False
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    distiller.fit(x, y, batch_size=32, epochs=7, verbose=0)
    separated, _ = _accuracies(loss, teacher_logits, student, x)
    assert separated >= 0.85
    start = [v.numpy() for v in distiller.variables]

    def train_student(student_gradient_scale):
        for variable, value in zip(distiller.variables, start):
            variable.assign(value)
        loss.student_gradient_scale = student_gradient_scale  # read when the step is traced: compile again
        student.trainable = True
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
        distiller.fit(x, y, batch_size=32, epochs=8, verbose=0)
        return _accuracies(loss, teacher_logits, student, x)

    student_start = [w.copy() for w in student.get_weights()]
    fooled, _ = train_student(-1.0)
    student_moved = max(float(np.abs(a - b).max()) for a, b in zip(student_start, student.get_weights()))
    control, control_on_student = train_student(0.0)  # the same run, the student deaf to the discriminator
    assert abs(fooled - 0.5) <= 0.25 < abs(separated - 0.5), (separated, fooled)
    assert control >= 0.9 and control_on_student >= 0.9, control  # soft targets alone do not fool it in this time
    assert student_moved > 1e-2  # the student trained
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_a_feature_level_discriminator_trains_as_a_tap_loss():
    teacher, student = small_cnn("teacher", widths=(8, 16), seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(
        teacher,
        student,
        taps={"teacher_stage2": "student_stage2"},
        feature_loss="adversarial_feature",
        logits_loss="kl",
        alpha=0.9,
    )
    loss = distiller.tap_losses["teacher_stage2"]
    assert isinstance(loss, adversarial.AdversarialLoss) and loss.inputs == "features" and loss.output_relu is False
    # on the teacher's 16 pooled channels
    assert [tuple(w.shape) for w in loss.discriminator.weights][::2] == [
        (16, 8),
        (8, 4),
        (4, 2),
    ]
    assert {v.path for v in loss.discriminator.weights} <= {v.path for v in distiller.trainable_weights}
    before = [w.numpy().copy() for w in loss.discriminator.weights]
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = real_images(32)  # real images: pooled features of noise images barely differ from one image to the next
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and "feat_teacher_stage2" in history
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, loss.discriminator.weights))


@pytest.mark.eager
def test_a_saved_distiller_restores_the_discriminator_and_the_student_carries_none_of_it(tmp_path):
    teacher, student = small_cnn("teacher", seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps={}, logits_loss=[("kl", 1.0), ("meal_v2", 1.0)], alpha=0.9
    )
    distiller.compile(optimizer="adam")
    x, y = images(32), labels(32)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    restored = keras.saving.load_model(path)
    original, loaded = distiller.logits_loss.parts[1], restored.logits_loss.parts[1]
    assert isinstance(loaded, adversarial.AdversarialLoss)
    for a, b in zip(original.discriminator.weights, loaded.discriminator.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(restored.optimizer.iterations) == 2
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0)  # resumes, discriminator included
    assert int(restored.optimizer.iterations) == 4
    assert len(restored.student.weights) == len(small_cnn("student", widths=(4, 8), seed=2).weights)


_BACKEND_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    import keras, numpy as np, kdistill
    from kdistill.losses import adversarial
    from conftest import images, labels, small_cnn

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    teacher_logits, student_logits = (rng.normal(size=(8, 10)) * 3).astype("float32"), rng.normal(size=(8, 10)).astype("float32")
    loss = adversarial.AdversarialLoss(output_relu=False)
    loss.build((None, 10))

    def student_gradient(scale):
        loss.student_gradient_scale = scale
        if keras.backend.backend() == "jax":
            import jax
            return np.asarray(jax.grad(lambda s: keras.ops.mean(loss(teacher_logits, s)))(student_logits))
        import torch
        student = torch.tensor(student_logits, requires_grad=True)
        keras.ops.mean(loss(torch.tensor(teacher_logits), student)).backward()
        return student.grad.numpy()

    reversed_gradient, plain_gradient = student_gradient(-1.0), student_gradient(1.0)
    teacher, student = small_cnn("teacher", seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(teacher, student, taps={}, logits_loss=[("kl", 1.0), ("meal_v2", 1.0)], alpha=0.9)
    discriminator = distiller.logits_loss.parts[1].discriminator
    teacher_before = [w.copy() for w in teacher.get_weights()]
    discriminator_before = [keras.ops.convert_to_numpy(w).copy() for w in discriminator.weights]
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = distiller.fit(images(32), labels(32), batch_size=16, epochs=2, verbose=0).history
    print(json.dumps({
        "backend": keras.backend.backend(),
        "reversed": bool(np.allclose(reversed_gradient, -plain_gradient, rtol=1e-5, atol=1e-8) and np.abs(plain_gradient).sum() > 0),
        "discriminator_trained": any(not np.array_equal(a, keras.ops.convert_to_numpy(b)) for a, b in zip(discriminator_before, discriminator.weights)),
        "teacher_unchanged": all(np.array_equal(a, b) for a, b in zip(teacher_before, teacher.get_weights())),
        "finite": bool(np.isfinite(history["loss"]).all()),
    }))
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_gradient_reversal_and_fit_work_on_jax_and_pytorch(tmp_path, backend):
    script = tmp_path / "adversarial_backend.py"
    script.write_text(_BACKEND_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), HERE],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "backend": backend,
        "reversed": True,
        "discriminator_trained": True,
        "teacher_unchanged": True,
        "finite": True,
    }


_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np, kdistill
    from conftest import images, labels, small_cnn

    def two_steps(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            teacher = small_cnn("teacher", seed=1, batch_norm=False)  # no BatchNorm: per-replica statistics differ by design
            student = small_cnn("student", seed=2, batch_norm=False)
            distiller = kdistill.FeatureDistiller(teacher, student, taps={}, alpha=0.9,
                                                  logits_loss=[("kl", 1.0), ({"name": "meal_v2", "output_relu": False}, 1.0)])
            distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        discriminator = distiller.logits_loss.parts[1].discriminator
        start = [w.numpy().copy() for w in discriminator.weights]
        distiller.fit(images(32), labels(32), batch_size=16, epochs=1, shuffle=False, verbose=0)
        return [w.numpy() for w in distiller.trainable_weights], start, [w.numpy() for w in discriminator.weights]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    weights_mirrored, _, _ = two_steps(mirrored)
    weights_single, start, discriminator = two_steps(tf.distribute.get_strategy())
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "max_weight_difference": float(max(np.abs(a - b).max() for a, b in zip(weights_mirrored, weights_single))),
        "discriminator_moved": float(max(np.abs(a - b).max() for a, b in zip(start, discriminator))),
    }))
""")


@pytest.mark.slow
def test_under_mirrored_strategy_two_replicas_train_the_discriminator_as_one_device_does(tmp_path):
    script = tmp_path / "adversarial_mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), HERE],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["discriminator_moved"] > 1e-4
    assert report["max_weight_difference"] < 1e-5, report
