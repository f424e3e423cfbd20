import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from conftest import images, labels, small_cnn
from harness import run_distiller_saving

HERE = os.path.dirname(__file__)
ISSUE_TAPS = {"conv3_block4_out": "block_6_expand_relu", "conv4_block6_out": "block_13_expand_relu"}


def _dataset(count, seed, batch_size=8):
    return tf.data.Dataset.from_tensor_slices((images(count, seed), labels(count, seed))).batch(batch_size)


@pytest.mark.eager
def test_issue_example_trains_reports_every_term_and_leaves_teacher_untouched(resnet50_teacher, tmp_path):
    teacher = resnet50_teacher
    student = kdistill.students.get("mobilenet_v2", num_classes=10, input_shape=(32, 32, 3))
    teacher_before = [w.numpy().copy() for w in teacher.weights]
    moving_stats_before = [w.numpy().copy() for w in teacher.weights if "moving" in w.path]
    student_before = [w.numpy().copy() for w in student.trainable_weights]
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps=ISSUE_TAPS, feature_loss="mse", logits_loss="kl", temperature=4.0, alpha=0.5
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = distiller.fit(_dataset(16, 0), validation_data=_dataset(8, 1), epochs=2, verbose=0)

    terms = ["loss", "ce_loss", "kd_loss", "feat_conv3_block4_out", "feat_conv4_block6_out", "accuracy"]
    assert set(history.history) == set(terms) | {f"val_{t}" for t in terms}
    assert all(np.isfinite(v).all() for v in history.history.values())
    # Teacher: every weight, BatchNorm moving statistics included, bit-identical.
    assert len(moving_stats_before) == 2 * sum(
        isinstance(layer, keras.layers.BatchNormalization) for layer in teacher.layers
    )
    for before, after in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert not teacher.trainable and not distiller.teacher.trainable_weights
    # ... while the student did learn.
    assert any(not np.array_equal(b, a.numpy()) for b, a in zip(student_before, student.trainable_weights))
    # Gradients go to the student and the projections only.
    names = {v.path for v in distiller.trainable_variables}
    assert {v.path for v in student.trainable_variables} <= names
    assert any(n.startswith("projection_conv4_block6_out") for n in names)
    assert len(distiller.trainable_variables) == len(student.trainable_variables) + sum(
        len(p.trainable_variables) for p in distiller.projections.values()
    )

    path = str(tmp_path / "student.keras")
    distiller.student.save(path)
    x = images(4, 9)
    np.testing.assert_array_equal(keras.saving.load_model(path).predict(x, verbose=0), student.predict(x, verbose=0))


def test_projections_are_not_part_of_the_student(resnet50_teacher):
    student = kdistill.students.get("resnet8x4", num_classes=10)
    count = student.count_params()
    distiller = kdistill.FeatureDistiller(resnet50_teacher, student, taps={"conv3_block4_out": "stage2_out"})
    assert distiller.student.count_params() == count
    assert all("projection" not in layer.name for layer in distiller.student.layers)
    assert (
        distiller.projection_summary()[0]["projection"] == "16x16x128 -> average pool /4, Conv1x1(512) + BN -> 4x4x512"
    )


def test_distillation_moves_student_features_toward_the_teacher():
    x_train, x_val = images(256, 0), images(64, 1)
    teacher = small_cnn("teacher", widths=(16, 32), seed=1)
    y_train = np.argmax(teacher.predict(x_train, verbose=0), axis=-1)
    tap = {"teacher_stage2": "student_stage2"}
    fit = dict(epochs=6, batch_size=32, verbose=0, shuffle=False)

    distilled = kdistill.FeatureDistiller(teacher, small_cnn("student", seed=2), taps=tap, logits_loss=None, alpha=1.0)
    history = distilled.compile(optimizer=keras.optimizers.Adam(1e-2)).fit(x_train, y_train, **fit)
    curve = history.history["feat_teacher_stage2"]
    assert curve[-1] < 0.6 * curve[0], curve

    # The same student trained on labels alone, then given the same chance to fit a projection.
    baseline_student = small_cnn("student", seed=2)
    kdistill.FeatureDistiller(teacher, baseline_student, taps={}, logits_loss=None, alpha=0.0).compile(
        optimizer=keras.optimizers.Adam(1e-2)
    ).fit(x_train, y_train, **fit)
    baseline_student.trainable = False
    baseline = kdistill.FeatureDistiller(teacher, baseline_student, taps=tap, logits_loss=None, alpha=1.0)
    baseline.compile(optimizer=keras.optimizers.Adam(1e-2)).fit(x_train, y_train, **fit)

    distilled_gap = distilled.evaluate(x_val, np.zeros(64), verbose=0, return_dict=True)["feat_teacher_stage2"]
    baseline_gap = baseline.evaluate(x_val, np.zeros(64), verbose=0, return_dict=True)["feat_teacher_stage2"]
    assert distilled_gap < 0.8 * baseline_gap, (distilled_gap, baseline_gap)


class _Counter:
    calls = 0


class _CountCalls(keras.layers.Layer):
    def __init__(self, counter, **kwargs):
        super().__init__(**kwargs)
        self.counter = counter

    def call(self, inputs):
        self.counter.calls += 1
        return inputs


def _counted(name, counter, seed):
    return small_cnn(name, seed=seed, first_layer=_CountCalls(counter))


def test_teacher_and_student_each_run_once_per_training_step():
    teacher_calls, student_calls = _Counter(), _Counter()
    teacher = _counted("teacher", teacher_calls, 1)
    student = _counted("student", student_calls, 2)
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps={"teacher_stage1": "student_stage1", "teacher_stage2": "student_stage2"}
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"], run_eagerly=True)
    teacher_calls.calls = student_calls.calls = 0  # building the models called them symbolically
    distiller.fit(images(24, 0), labels(24, 0), batch_size=8, epochs=1, verbose=0)
    assert (teacher_calls.calls, student_calls.calls) == (3, 3)


@pytest.mark.parametrize("alpha", [1.5, -0.1, True, "0.5"])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        kdistill.FeatureDistiller(small_cnn("t"), small_cnn("s"), taps={}, alpha=alpha)


@pytest.mark.parametrize("temperature", [0.0, -2.0, float("nan")])
def test_non_positive_temperature_is_refused(temperature):
    with pytest.raises(ValueError, match="temperature must be positive"):
        kdistill.FeatureDistiller(small_cnn("t"), small_cnn("s"), taps={}, temperature=temperature)


def test_quoted_numbers_are_refused_for_being_strings_not_for_their_value():
    """temperature="4" used to be refused as "must be positive"."""
    with pytest.raises(
        ValueError, match=r"temperature must be a number, received the str '4' \(write temperature=4 without quotes\)"
    ):
        kdistill.FeatureDistiller(small_cnn("t"), small_cnn("s"), taps={}, temperature="4")
    with pytest.raises(ValueError, match=r"received the string '0.5' \(write it without quotes\)"):
        kdistill.FeatureDistiller(small_cnn("t"), small_cnn("s"), taps={}, alpha="0.5")


def test_bad_tap_names_and_impossible_projections_are_explained(resnet50_teacher):
    student = kdistill.students.get("mobilenet_v2", num_classes=10)
    with pytest.raises(ValueError, match=r"Unknown teacher layer 'conv3_block9_out'.*Did you mean.*Stage outputs"):
        kdistill.FeatureDistiller(resnet50_teacher, student, taps={"conv3_block9_out": "block_6_expand_relu"})
    with pytest.raises(
        ValueError, match=r"Unknown student layer 'block_6_expand_rellu'.*Did you mean 'block_6_expand_relu'"
    ):
        kdistill.FeatureDistiller(resnet50_teacher, student, taps={"conv3_block4_out": "block_6_expand_rellu"})
    with pytest.raises(ValueError, match=r"Tap 'conv3_block4_out' <- 'predictions'.*Cannot project"):
        kdistill.FeatureDistiller(resnet50_teacher, student, taps={"conv3_block4_out": student.layers[-1].name})


def test_softmax_outputs_and_class_mismatch_are_refused():
    softmax_student = small_cnn("s")
    softmax_student.layers[-1].activation = keras.activations.softmax
    with pytest.raises(ValueError, match="classifier_activation=None"):
        kdistill.FeatureDistiller(small_cnn("t"), softmax_student, taps={})
    with pytest.raises(ValueError, match="same classes"):
        kdistill.FeatureDistiller(small_cnn("t"), small_cnn("s", num_classes=5), taps={})
    with pytest.raises(ValueError, match="from_logits=True"):
        kdistill.FeatureDistiller(small_cnn("t"), small_cnn("s"), taps={}).compile(
            loss=keras.losses.SparseCategoricalCrossentropy()
        )


def test_config_round_trips(resnet50_teacher):
    student = kdistill.students.get("mobilenet_v2", num_classes=10)
    distiller = kdistill.FeatureDistiller(
        resnet50_teacher,
        student,
        taps=ISSUE_TAPS,
        feature_loss="normalized_mse",
        temperature=2.0,
        alpha=0.7,
        tap_weights={"conv4_block6_out": 0.5},
    )
    config = distiller.get_config()
    restored = kdistill.FeatureDistiller.from_config(json.loads(json.dumps(config)))
    assert restored.taps == ISSUE_TAPS and restored.alpha == 0.7 and restored.temperature == 2.0
    assert restored.tap_weights == {"conv3_block4_out": 1.0, "conv4_block6_out": 0.5}
    assert restored.feature_loss.normalize and restored.logits_loss.temperature == 2.0
    assert json.dumps(restored.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)


@pytest.mark.eager
def test_saved_distiller_reloads_and_resumes_training(tmp_path):
    teacher, student = small_cnn("teacher", seed=1), small_cnn("student", seed=2)
    distiller = kdistill.FeatureDistiller(teacher, student, taps={"teacher_stage2": "student_stage2"}, alpha=0.6)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    x, y = images(32, 0), labels(32, 0)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")
    restored = run_distiller_saving(distiller, path, x[:8], y[:8])
    assert int(restored.optimizer.iterations) == 4
    np.testing.assert_array_equal(restored.student.predict(x[:4], verbose=0), student.predict(x[:4], verbose=0))
    np.testing.assert_allclose(restored.evaluate(x, y, verbose=0), distiller.evaluate(x, y, verbose=0), rtol=1e-5)
    restored.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(restored.optimizer.iterations) == 8
    # In a new process, `import kdistill` (which loads no Keras) then Keras' own load_model finds the distiller's
    # classes.
    code = (
        "import sys, kdistill; assert 'keras' not in sys.modules; import keras; "
        f"print(type(keras.saving.load_model({path!r})).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0 and result.stdout.split() == ["FeatureDistiller"], result.stderr[-2000:]


def _run_script(name, *args, env=None, timeout=300):
    full_env = dict(os.environ, **(env or {}))
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, name), *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_trains_with_fit_on_the_jax_backend():
    report = _run_script("_jax_fit.py", env={"KERAS_BACKEND": "jax"})
    assert report["backend"] == "jax"
    assert set(report["history"]) >= {"loss", "ce_loss", "kd_loss", "feat_teacher_stage2", "accuracy", "val_loss"}
    assert all(np.isfinite(v).all() for v in report["history"].values())
    losses = report["history"]["feat_teacher_stage2"]
    assert losses[-1] < losses[0]
    assert report["teacher_unchanged"]
    # segmenters (logit maps, a student map at half the teacher's size) train through the same fit on JAX
    assert set(report["dense_history"]) >= {"loss", "ce_loss", "kd_loss", "accuracy"}
    assert all(np.isfinite(v).all() for v in report["dense_history"].values())


@pytest.mark.eager
def test_mirrored_strategy_step_matches_single_device_step():
    report = _run_script("_mirrored_step.py")
    assert report["replicas"] == 2
    assert report["max_weight_difference"] < 1e-5, report
    assert abs(report["loss_mirrored"] - report["loss_single"]) < 1e-5 * max(1.0, abs(report["loss_single"]))
    assert report["weights_moved"] > 1e-4
    # segmenters: per-sample pixel means reduce the same way
    assert report["dense_max_weight_difference"] < 1e-5, report


def _tiny_pair():
    teacher = small_cnn("teacher", widths=(8, 16), seed=1)
    student = small_cnn("student", widths=(4, 8), seed=2)
    return teacher, student


def test_unlabelled_samples_get_only_the_distillation_terms():
    from kdistill.distiller import UNLABELED

    teacher, student = _tiny_pair()
    distiller = kdistill.FeatureDistiller(teacher, student, taps={"teacher_stage2": "student_stage2"}, alpha=0.5)
    x = images(8)
    y = np.array([0, 1, 2, 3, UNLABELED, UNLABELED, UNLABELED, UNLABELED])
    outputs = distiller(x)
    terms = distiller.loss_terms(keras.ops.convert_to_tensor(y), outputs["teacher"], outputs["student"])
    logits = keras.ops.convert_to_numpy(outputs["student"]["logits"])
    expected_ce = keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(y[:4], logits[:4], from_logits=True)
    ).mean()
    assert float(terms["ce_loss"]) == pytest.approx(float(expected_ce), rel=1e-5)
    # the distillation terms still cover all 8 images
    all_labelled = distiller.loss_terms(
        keras.ops.convert_to_tensor(np.arange(8) % 10), outputs["teacher"], outputs["student"]
    )
    assert float(terms["kd_loss"]) == pytest.approx(float(all_labelled["kd_loss"]), rel=1e-6)
    # a batch with no labels at all: CE is zero and the total is alpha x distillation
    none = distiller.loss_terms(None, outputs["teacher"], outputs["student"])
    assert float(none["ce_loss"]) == 0.0
    assert float(none["loss"]) == pytest.approx(
        0.5 * (float(none["kd_loss"]) + float(none["feat_teacher_stage2"])), rel=1e-6
    )


@pytest.mark.eager
def test_fit_on_a_transfer_set_without_labels_trains_the_student_only():
    from kdistill.distiller import UNLABELED

    teacher, student = _tiny_pair()
    before_teacher = [w.copy() for w in teacher.get_weights()]
    before_student = [w.copy() for w in student.get_weights()]
    distiller = kdistill.FeatureDistiller(teacher, student, taps={}, alpha=0.9)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(images(16), epochs=1, batch_size=8, verbose=0).history  # images only
    assert history["ce_loss"] == [0.0] and history["kd_loss"][0] > 0
    # mixed labelled / unlabelled batches: accuracy counts only the labelled images
    y = np.where(np.arange(16) < 8, labels(16), UNLABELED)
    history = distiller.fit(images(16), y, epochs=1, batch_size=16, verbose=0).history
    assert history["ce_loss"][0] > 0
    assert all(np.array_equal(a, b) for a, b in zip(before_teacher, teacher.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(before_student, student.get_weights()))


def test_dkd_reads_the_teachers_class_for_unlabelled_samples():
    from kdistill.distiller import UNLABELED

    teacher, student = _tiny_pair()
    distiller = kdistill.FeatureDistiller(teacher, student, taps={}, logits_loss="dkd", alpha=1.0)
    x = images(6)
    outputs = distiller(x)
    teacher_top = keras.ops.convert_to_numpy(outputs["teacher"]["logits"]).argmax(-1)
    unlabelled = distiller.loss_terms(
        keras.ops.convert_to_tensor(np.full(6, UNLABELED)), outputs["teacher"], outputs["student"]
    )
    labelled_as_teacher = distiller.loss_terms(
        keras.ops.convert_to_tensor(teacher_top.astype("int32")), outputs["teacher"], outputs["student"]
    )
    assert float(unlabelled["kd_loss"]) == pytest.approx(float(labelled_as_teacher["kd_loss"]), rel=1e-6)


@pytest.mark.eager
def test_teacher_and_student_at_their_own_input_sizes():
    """A 64x64 teacher distils into a 32x32 student from one 64x64 pipeline; the student keeps its own input size."""
    teacher = small_cnn("teacher", widths=(8, 16), input_shape=(64, 64, 3), seed=1)
    student = small_cnn("student", widths=(4, 8), input_shape=(32, 32, 3), seed=2)
    distiller = kdistill.FeatureDistiller(teacher, student, taps={"teacher_stage2": "student_stage2"}, alpha=0.7)
    summary = distiller.projection_summary()[0]
    assert summary["teacher_shape"] == (16, 16, 16) and summary["student_shape"] == (8, 8, 8)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(images(16, size=64), labels(16), batch_size=8, epochs=2, verbose=0).history
    assert {"feat_teacher_stage2", "kd_loss"} <= set(history) and np.isfinite(history["loss"]).all()
    assert distiller.student.input_shape == (None, 32, 32, 3)
    x = images(4, size=64)
    resized = keras.ops.convert_to_numpy(keras.ops.image.resize(x, (32, 32), antialias=True))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(distiller(x)["student"]["logits"]),
        keras.ops.convert_to_numpy(student(resized, training=False)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_compiled_metrics_count_only_the_labelled_images_of_a_mixed_batch():
    from kdistill.distiller import UNLABELED

    teacher, student = _tiny_pair()
    distiller = kdistill.FeatureDistiller(teacher, student, taps={}, alpha=0.5)
    # a rate of 0: the student does not change
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), metrics=["accuracy"])
    x = images(32)
    predicted = student.predict(x, verbose=0).argmax(-1)
    y = np.where(np.arange(32) % 4 == 0, predicted, UNLABELED)  # labelled images are all "right"
    assert distiller.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False).history["accuracy"] == [1.0]
    assert distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)["accuracy"] == 1.0


def test_integer_one_hot_labels_are_not_mistaken_for_unlabelled_marks():
    teacher, student = _tiny_pair()
    distiller = kdistill.FeatureDistiller(teacher, student, taps={}, alpha=0.5)
    distiller.compile(optimizer="sgd", loss="categorical_crossentropy")
    outputs = distiller(images(4))
    one_hot = np.eye(10, dtype="int32")[labels(4)]
    terms = distiller.loss_terms(keras.ops.convert_to_tensor(one_hot), outputs["teacher"], outputs["student"])
    expected = keras.losses.categorical_crossentropy(
        one_hot.astype("float32"), outputs["student"]["logits"], from_logits=True
    )
    assert float(terms["ce_loss"]) == pytest.approx(float(keras.ops.mean(expected)), rel=1e-5)


@pytest.mark.eager
def test_fit_on_empty_data_says_so_instead_of_returning_an_empty_history():
    """fit on empty arrays or an empty tf.data dataset used to return {} silently."""
    import tensorflow as tf

    distiller = kdistill.FeatureDistiller(small_cnn("t"), small_cnn("s"), taps={})
    distiller.compile(optimizer="adam")
    empty_x, empty_y = np.zeros((0, 32, 32, 3), "float32"), np.zeros((0,), "int32")
    with pytest.raises(ValueError, match=r"The training data is empty \(0 examples\)"):
        distiller.fit(empty_x, empty_y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"The training data is empty \(0 examples\)"):
        distiller.fit(tf.data.Dataset.from_tensor_slices((empty_x, empty_y)).batch(4), epochs=1, verbose=0)
    # size unknown until read
    filtered = tf.data.Dataset.from_tensor_slices((images(8, 0), labels(8, 0))).filter(lambda x, y: y > 99).batch(4)
    with pytest.raises(ValueError, match="fit ran no training step"):
        distiller.fit(filtered, epochs=1, verbose=0)


def test_fit_after_the_first_does_not_trace_the_model_again(monkeypatch):
    """Every fit/evaluate used to rebuild Keras' unused CompileLoss by tracing teacher and student (0.3-0.5 s per call)."""
    teacher, student = small_cnn("teacher", seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(teacher, student, taps={"teacher_stage2": "student_stage2"})
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(_dataset(16, 0), validation_data=_dataset(8, 1), epochs=1, verbose=0)
    calls = []
    original = kdistill.FeatureDistiller.call
    monkeypatch.setattr(
        kdistill.FeatureDistiller,
        "call",
        lambda self, *args, **kwargs: calls.append(1) or original(self, *args, **kwargs),
    )
    history = distiller.fit(_dataset(16, 0), validation_data=_dataset(8, 1), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # JAX and PyTorch's fit (TensorFlow's under a strategy) start with this build step; with everything built it traces
    # nothing.
    distiller._symbolic_build(data_batch=(images(8), labels(8)))
    assert not calls  # the compiled steps ran; nothing was traced again


@pytest.mark.parametrize("data", ["dataset", "arrays"])
def test_the_first_fit_traces_the_training_step_once(monkeypatch, data):
    """Keras' TensorFlow trainer made the optimizer's slots and the metrics inside the first trace, so TensorFlow traced
    the step twice (kdistill.fit_build)."""
    from kdistill import tf_train_step

    traces = []
    original = tf_train_step.train_step
    monkeypatch.setattr(
        tf_train_step, "train_step", lambda distiller, batch: traces.append(1) or original(distiller, batch)
    )
    teacher, student = small_cnn("teacher", seed=1), small_cnn("student", widths=(4, 8), seed=2)
    distiller = kdistill.FeatureDistiller(teacher, student, taps={"teacher_stage2": "student_stage2"})
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    if data == "dataset":
        distiller.fit(_dataset(16, 0), epochs=1, verbose=0)
    else:
        distiller.fit(images(16, 0), labels(16, 0), batch_size=8, epochs=1, verbose=0)
    assert len(traces) == 1 and distiller.optimizer.built
    # a plain model that kdistill trains (the teacher, the student alone) gets the same
    from kdistill.fit_build import build_before_fit

    plain = small_cnn("plain", seed=3)
    plain.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    build_before_fit(plain, _dataset(16, 0))
    assert plain.optimizer.built and len(plain.optimizer.variables) > 2 and plain.metrics[-1].built


def test_a_model_that_shapes_alone_cannot_build_is_left_to_fit():
    """build_before_fit is a speed-up: where the symbolic build fails, nothing is raised and fit builds the model as Keras does."""
    from kdistill.fit_build import build_before_fit

    model = small_cnn("plain", seed=3)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    attempts = []

    def fails(**kwargs):
        attempts.append(kwargs)
        raise RuntimeError("Unable to automatically build the model.")

    model._symbolic_build = fails
    build_before_fit(model, images(8, 0), labels(8, 0))
    assert len(attempts) == (1 if keras.backend.backend() == "tensorflow" else 0) and not model.optimizer.built
    del model._symbolic_build
    history = model.fit(images(8, 0), labels(8, 0), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and model.optimizer.built


def test_building_before_fit_changes_no_trained_weight():
    """The demo's and the study's figures stand: the same seed trains the same weights with and without the early build."""
    from kdistill.fit_build import build_before_fit

    def trained(early):
        keras.utils.set_random_seed(7)
        model = small_cnn("plain", seed=3)
        model.compile(
            optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
        )
        if early:
            build_before_fit(model, _dataset(32, 0))
        model.fit(_dataset(32, 0), epochs=2, verbose=0)
        return model.get_weights()

    for with_build, without in zip(trained(True), trained(False)):
        np.testing.assert_array_equal(with_build, without)


@pytest.mark.parametrize("clipping", ["global_clipnorm", "clipnorm"])
def test_projections_are_clipped_and_updated_with_the_student(clipping):
    """Under clipnorm / global_clipnorm the projections' gradients are clipped with the student's, not left out of the step."""
    teacher, student = small_cnn("teacher", widths=(16, 32), seed=1), small_cnn("student", seed=2)
    distiller = kdistill.FeatureDistiller(
        teacher,
        student,
        taps={"teacher_stage1": "student_stage1", "teacher_stage2": "student_stage2"},
        feature_loss="mse",
        alpha=0.5,
    )
    limit = 1e-3  # far below the raw gradient norms, so every step is clipped
    distiller.compile(optimizer=keras.optimizers.SGD(1.0, **{clipping: limit}), loss="sparse_categorical_crossentropy")
    variables = distiller.trainable_variables
    projection_ids = {id(v) for layer in distiller.projections.values() for v in layer.trainable_variables}
    assert projection_ids and projection_ids <= {id(v) for v in variables}
    before = [np.array(v) for v in variables]
    distiller.fit(images(16, 0), labels(16, 0), batch_size=16, epochs=1, verbose=0, shuffle=False)
    steps = {id(v): np.array(v) - old for v, old in zip(variables, before)}
    norms = {key: float(np.linalg.norm(step)) for key, step in steps.items()}
    assert all(norms[key] > 0 for key in projection_ids)  # every projection moved
    if clipping == "global_clipnorm":
        # one global norm over student + projections
        assert abs(np.sqrt(sum(n**2 for n in norms.values())) - limit) < 1e-3 * limit
        # a real share of it went to the projections
        assert np.sqrt(sum(norms[key] ** 2 for key in projection_ids)) > 1e-2 * limit
    else:
        assert max(norms.values()) <= limit * (1 + 1e-4) and max(norms[key] for key in projection_ids) > 0.5 * limit


@pytest.mark.eager
def test_fit_warns_once_about_a_teacher_no_better_than_chance():
    import logging

    records = []
    handler = logging.Handler(logging.WARNING)
    # on kdistill's logger itself: whatever cli.main (run earlier in this process) did to propagation
    handler.emit = records.append
    logging.getLogger("kdistill").addHandler(handler)
    teacher = small_cnn("teacher", seed=1)  # untrained: chance level on any labels
    distiller = kdistill.FeatureDistiller(teacher, small_cnn("student", seed=2), taps={}).compile(optimizer="adam")
    # never the teacher's answer
    x, y = (
        images(64, 3),
        np.asarray(keras.ops.convert_to_numpy(teacher(images(64, 3))).argmax(-1) + 1) % 10,
    )
    try:
        distiller.fit(x[:16], y[:16], validation_data=(x, y), batch_size=16, epochs=1, verbose=0)
        distiller.fit(x[:16], y[:16], validation_data=(x, y), batch_size=16, epochs=1, verbose=0)
    finally:
        logging.getLogger("kdistill").removeHandler(handler)
    warnings = [record.getMessage() for record in records if "no better than chance" in record.getMessage()]
    assert (
        len(warnings) == 1
        and "0.0 % top-1 on 64 validation images" in warnings[0]
        and "from_logits=True" in warnings[0]
    )


def test_summary_lists_the_teacher_and_the_student_once():
    distiller = kdistill.FeatureDistiller(
        small_cnn("teacher", seed=1), small_cnn("student", seed=2), taps={"teacher_stage2": "student_stage2"}
    )
    lines = []
    distiller.summary(print_fn=lambda line, **options: lines.append(line))
    text = "\n".join(lines)
    assert text.count("teacher (Functional)") == 1 and "teacher_features" not in text and "student_features" not in text
    from kdistill.models.summary import distinct_owners

    # every weight listed once
    assert sum(layer.count_params() for layer in distinct_owners(distiller.layers)) == distiller.count_params()
    # outside summary() `layers` stays whole: saving walks it
    assert "teacher_features" in [layer.name for layer in distiller.layers]


def test_a_distiller_saved_before_fit_loads_without_the_optimizer_warning(tmp_path):
    import warnings

    distiller = kdistill.FeatureDistiller(
        small_cnn("teacher", seed=1), small_cnn("student", seed=2), taps={"teacher_stage2": "student_stage2"}
    )
    distiller.compile(optimizer="adam")
    distiller.save(tmp_path / "run.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = keras.saving.load_model(tmp_path / "run.keras")
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)], [
        str(w.message)[:200] for w in caught
    ]
    assert restored.optimizer.built and len(restored.optimizer.variables) == len(distiller.optimizer.variables)
