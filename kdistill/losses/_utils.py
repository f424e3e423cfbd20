"""Small helpers shared by the loss modules (keras.ops only)."""

from __future__ import annotations

from keras import ops

from kdistill.errors import parses_as_number

EPSILON = 1e-12


def check_temperature(temperature) -> None:
    """Raises a clear error unless `temperature` is a positive number."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        hint = (
            f" (write temperature={temperature.strip()} without quotes)"
            if isinstance(temperature, str) and parses_as_number(temperature)
            else ""
        )
        raise ValueError(
            f"temperature must be a number, received the {type(temperature).__name__} {temperature!r}{hint}."
        )
    if temperature <= 0 or temperature != temperature:
        raise ValueError(
            f"temperature must be positive, received temperature={temperature!r}. "
            "Typical values are 1 to 8 (4 is a good default)."
        )


def flatten_per_sample(x):
    """`(batch, ...)` -> `(batch, features)`."""
    return ops.reshape(x, (ops.shape(x)[0], -1))


def pool_to_vectors(x):
    """Global-average-pools a `(batch, H, W, C)` map to `(batch, C)`; vectors pass through."""
    x = ops.cast(x, "float32")
    if len(x.shape) > 2:
        return ops.mean(ops.reshape(x, (ops.shape(x)[0], -1, ops.shape(x)[-1])), axis=1)
    return x


def l2_normalize_rows(x):
    """Each row divided by its L2 norm."""
    return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + EPSILON)


def broadcast_to_batch(value, batch_reference):
    """Broadcasts a batch-level scalar to one value per sample (so weighting and averaging keep it)."""
    return ops.ones((ops.shape(batch_reference)[0],), "float32") * value


def same_batch(teacher, student, name: str) -> None:
    if teacher.shape[0] is not None and student.shape[0] is not None and teacher.shape[0] != student.shape[0]:
        raise ValueError(
            f"{name} compares samples of one batch: teacher batch {teacher.shape[0]} != student batch {student.shape[0]}."
        )
