"""Evaluate a classifier: top-1/top-5, per-class accuracy, size, parameters, images/s.

Example:
    >>> import numpy as np, tensorflow as tf, kdistill
    >>> model = kdistill.students.get("resnet20", num_classes=10)
    >>> data = tf.data.Dataset.from_tensor_slices((np.zeros((8, 32, 32, 3), "float32"), np.arange(8) % 10)).batch(4)
    >>> report = evaluate(model, data, timing_batches=1)
    >>> sorted(report)[:5]
    ['examples', 'images_per_second', 'parameters', 'per_class_accuracy', 'size_mb']
"""

from __future__ import annotations

import os
import tempfile
import time

import keras
import numpy as np

from kdistill.errors import UserError
from kdistill.models import checks, graph

__all__ = ["evaluate", "model_size_mb", "throughput", "format_table"]


def model_size_mb(model: keras.Model) -> float:
    """Size in MB of the model saved as .keras for inference (weights and architecture, no optimizer state)."""
    from kdistill.models import saving

    with tempfile.TemporaryDirectory() as folder:
        return os.path.getsize(saving.save_for_inference(model, os.path.join(folder, "model.keras"))) / 1e6


def throughput(model: keras.Model, images: np.ndarray, repeats: int = 3) -> float:
    """Inference images/s on this machine: median of `repeats` timed passes after a warm-up."""
    # a fresh compiled predict function, with one input tensor (not a list of one: no structure warning on calls)
    predict = keras.Model(graph.call_inputs(model), model.outputs)
    predict.predict(images, batch_size=len(images), verbose=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict.predict(images, batch_size=len(images), verbose=0)
        times.append(time.perf_counter() - start)
    return float(len(images) / np.median(times))


def _predictor(model: keras.Model):
    """Batch -> NumPy logits. On TensorFlow a plain compiled call: `predict_on_batch` of a model built under
    `MirroredStrategy` splits a batch over the replicas and returned twice the rows here."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        function = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
        return lambda images: np.asarray(function(images))
    return lambda images: np.asarray(model.predict_on_batch(images))


def _check_class_count(model: keras.Model, class_names: list[str] | None) -> None:
    """UserError when the model's output has another width than the data's classes (a 4-class student on 10-class data)."""
    classes = getattr(getattr(model, "student", model), "outputs", None)
    classes = classes[0].shape[-1] if classes else None
    if class_names is not None and classes is not None and classes != len(class_names):
        shown = ", ".join(class_names[:6]) + (", ..." if len(class_names) > 6 else "")
        raise UserError(
            f"The model predicts {classes} classes but the data has {len(class_names)} ({shown}): evaluate it on the data it "
            "was trained for (--data / --data-dir, or the same --config)."
        )


def evaluate(model: keras.Model, dataset, class_names: list[str] | None = None, timing_batches: int = 4) -> dict:
    """Accuracy and cost of `model` (which outputs logits or probabilities) on `dataset`.

    Args:
        model: a Keras classifier.
        dataset: a tf.data pipeline of `(images, integer labels)` batches.
        class_names: names for the per-class table.
        timing_batches: how many batches are stacked for the images/s timing.

    Returns:
        A dict with `top1`, `top5` (when there are more than 5 classes),
        `per_class_accuracy`, `parameters`, `size_mb`, `images_per_second`, `examples`.

    Raises:
        kdistill.errors.UserError: when `model` is not a classifier with one output of shape `(batch, classes)`, or
            when it predicts another number of classes than `class_names` lists.
    """
    checks.check_classifier(model, "model", logits=False)  # probabilities rank classes as logits do
    _check_class_count(model, class_names)
    predict = _predictor(model)
    logits, labels, timing = [], [], []
    for images, batch_labels in dataset:
        if not logits:  # before the model sees them: a mismatch said in the user's terms, not in tf.function frames
            checks.check_image_shape("test", np.shape(images)[1:], model, role="model")
        logits.append(predict(images))
        labels.append(np.asarray(batch_labels))
        if len(timing) < timing_batches:
            timing.append(np.asarray(images))
    logits = np.concatenate(logits)
    labels = np.concatenate(labels).reshape(-1)
    num_classes = logits.shape[-1]
    predictions = logits.argmax(-1)
    report = {"examples": int(len(labels)), "top1": float((predictions == labels).mean())}
    if num_classes > 5:
        top5 = np.argsort(-logits, axis=-1)[:, :5]
        report["top5"] = float((top5 == labels[:, None]).any(-1).mean())
    names = class_names or [str(i) for i in range(num_classes)]
    report["per_class_accuracy"] = {
        names[c]: float((predictions[labels == c] == c).mean()) if (labels == c).any() else None
        for c in range(num_classes)
    }
    report["parameters"] = int(model.count_params())
    report["size_mb"] = round(model_size_mb(model), 3)
    report["images_per_second"] = round(throughput(model, np.concatenate(timing)), 1)
    return report


def format_table(rows: list[dict]) -> str:
    """A plain-text table of model results: name, the data it trained on (when given), top-1, top-5, parameters, size, images/s.

    Example:
        >>> row = {"name": "student", "top1": 0.8, "parameters": 1000, "size_mb": 0.1, "images_per_second": 50.0}
        >>> print(format_table([row]))
        model                    top-1   top-5      params  size MB  images/s
        ---------------------------------------------------------------------
        student                  80.00       -       1,000     0.10        50
    """
    data_width = max([len(row.get("data", "")) for row in rows] + [0])
    data = (lambda text: f" {text:<{data_width}}") if data_width else (lambda text: "")
    name_width = max([22] + [len(row["name"]) for row in rows])
    header = f"{'model':<{name_width}}{data('trained on')} {'top-1':>7} {'top-5':>7} {'params':>11} {'size MB':>8} {'images/s':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        top5 = f"{100 * row['top5']:.2f}" if "top5" in row else "-"
        lines.append(
            f"{row['name']:<{name_width}}{data(row.get('data', ''))} {100 * row['top1']:>7.2f} {top5:>7} {row['parameters']:>11,} "
            f"{row['size_mb']:>8.2f} {row['images_per_second']:>9.0f}"
        )
    return "\n".join(lines)
