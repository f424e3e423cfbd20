"""Checks on the models and data a distiller is given, with errors that name the fix."""

from __future__ import annotations

import keras
from keras import tree

__all__ = ["check_logits_pair", "check_not_empty"]


def check_logits_pair(teacher: keras.Model, student: keras.Model) -> None:
    """ValueError unless teacher and student both return logits (no softmax) of the same classes."""
    teacher_classes, student_classes = teacher.outputs[0].shape[-1], student.outputs[0].shape[-1]
    if teacher_classes != student_classes:
        raise ValueError(
            f"Teacher and student must predict the same classes: the teacher outputs {teacher_classes} "
            f"logits and the student {student_classes}."
        )
    for role, model in (("teacher", teacher), ("student", student)):
        activation = getattr(model.layers[-1], "activation", None)
        if activation is not None and getattr(activation, "__name__", "") == "softmax":
            raise ValueError(
                f"The {role} ends in a softmax; kdistill needs logits. Build it with "
                "classifier_activation=None (keras.applications) or a linear last Dense."
            )


def check_not_empty(data, what: str) -> None:
    """ValueError when `data` (arrays, a tf.data.Dataset of known size, a PyDataset) holds no example."""
    size = None
    if type(data).__module__.startswith("tensorflow") and hasattr(data, "cardinality"):
        size = int(data.cardinality())  # -1 infinite, -2 unknown
    elif isinstance(data, keras.utils.PyDataset):
        size = data.num_batches
    elif data is not None and not callable(data):
        leaves = tree.flatten(data)
        size = len(leaves[0]) if leaves and hasattr(leaves[0], "__len__") else None
    if size == 0:
        raise ValueError(f"The {what} is empty (0 examples): there is nothing to train on. Check where it comes from "
                         "(train_limit, a filter, an empty folder or array).")
