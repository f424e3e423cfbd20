"""The optimizers of the jobs: Adam, SGD or AdamW with a constant rate, a step decay, or warm-up and cosine decay.

Example:
    >>> from kdistill.run import optimizers
    >>> optimizers.TEACHER_RECIPE["schedule"]
    'cosine'
    >>> type(optimizers.teacher_optimizer("sgd", epochs=2, steps_per_epoch=5)).__name__
    'SGD'
"""

from __future__ import annotations

import keras

__all__ = ["make_optimizer", "config_optimizer", "teacher_optimizer", "TEACHER_RECIPE"]

#: the teacher recipe (`train_teacher`'s defaults; benchmarks/README.md, "Notes behind defaults", says why)
TEACHER_RECIPE = {
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "warmup_epochs": 1,
    "schedule": "cosine",
    "weight_decay": None,
}


_OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "sgd": lambda **kw: keras.optimizers.SGD(momentum=0.9, **kw),
    "adamw": keras.optimizers.AdamW,
}


def _optimizer_instance(name: str, rate, weight_decay: float | None, global_clipnorm: float | None = None):
    if name not in _OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; known: {', '.join(_OPTIMIZERS)}.")
    kwargs = {"weight_decay": weight_decay} if weight_decay else {}
    if global_clipnorm:
        kwargs["global_clipnorm"] = global_clipnorm
    return _OPTIMIZERS[name](learning_rate=rate, **kwargs)


def make_optimizer(
    name: str,
    learning_rate: float,
    weight_decay: float | None = None,
    decay_epochs=(),
    steps_per_epoch: int | None = None,
    schedule: str = "constant",
    warmup_epochs: float = 0.0,
    epochs: int = 1,
    global_clipnorm: float | None = None,
):
    """Adam / SGD (momentum 0.9) / AdamW for `distill`: a constant rate, a step decay, or warm-up and cosine decay.

    Args:
        name: "adam", "sgd" or "adamw".
        learning_rate: the (peak) rate.
        weight_decay: decoupled weight decay, or None.
        decay_epochs: multiply the rate by 0.1 at each of these epochs (with `schedule="constant"`).
        steps_per_epoch: optimizer steps per epoch (needed by `decay_epochs` and `"cosine"`).
        schedule: "constant", or "cosine": linear warm-up for `warmup_epochs`, then cosine decay to zero at the end of `epochs`.
        warmup_epochs: the warm-up of the cosine schedule (may be fractional).
        epochs: the run's length (for `"cosine"`).
        global_clipnorm: clip the gradients of every trained variable together (the student's, its projections' and the
            losses' own) to this global norm, or None.

    Example:
        >>> optimizer = make_optimizer("adam", 1e-3, schedule="cosine", warmup_epochs=1, epochs=3, steps_per_epoch=10, global_clipnorm=1.0)
        >>> optimizer.global_clipnorm, round(float(optimizer.learning_rate), 6)
        (1.0, 0.0)
    """
    if schedule == "cosine":
        if not steps_per_epoch:
            raise ValueError("A cosine schedule needs the number of steps per epoch.")
        return teacher_optimizer(
            name, learning_rate, epochs, steps_per_epoch, warmup_epochs, "cosine", weight_decay, global_clipnorm
        )
    if schedule != "constant":
        raise ValueError(f"schedule must be 'constant' or 'cosine', received {schedule!r}.")
    rate = learning_rate
    if decay_epochs:
        if not steps_per_epoch:
            raise ValueError("A learning-rate decay by epoch needs the number of steps per epoch.")
        # The first step of epoch e (counting from 0) is step e * steps_per_epoch; it uses the decayed rate.
        boundaries = [int(epoch) * steps_per_epoch - 1 for epoch in sorted(decay_epochs)]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [learning_rate * 0.1**i for i in range(len(boundaries) + 1)]
        )
    return _optimizer_instance(name, rate, weight_decay, global_clipnorm)


def config_optimizer(config, steps_per_epoch: int):
    """`make_optimizer` with a run config's settings (`kdistill.run.config.DistillConfig`: optimizer, learning rate,
    weight decay, decay epochs, schedule, warm-up, epochs and global clipping), for `steps_per_epoch` steps per epoch."""
    return make_optimizer(
        config.optimizer,
        config.learning_rate,
        config.weight_decay,
        config.lr_decay_epochs,
        steps_per_epoch,
        schedule=config.schedule,
        warmup_epochs=config.warmup_epochs,
        epochs=config.epochs,
        global_clipnorm=config.global_clipnorm,
    )


def teacher_optimizer(
    optimizer: str = "adam",
    learning_rate: float | None = None,
    epochs: int = 1,
    steps_per_epoch: int = 1,
    warmup_epochs: float = 1,
    schedule: str = "cosine",
    weight_decay: float | None = None,
    global_clipnorm: float | None = None,
):
    """The teacher's optimizer: linear warm-up then cosine decay to zero (or a constant rate).

    Args:
        optimizer: "sgd" (momentum 0.9), "adam" or "adamw".
        learning_rate: peak rate; None picks 0.01 for SGD and 1e-3 otherwise (`benchmarks/README.md` says why).
        epochs, steps_per_epoch: the schedule's length.
        warmup_epochs: epochs of linear warm-up from 0 (may be fractional; 0 for none).
        schedule: "cosine" or "constant".
        weight_decay: decoupled weight decay, or None.
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', received {schedule!r}.")
    peak = learning_rate if learning_rate is not None else (0.01 if optimizer == "sgd" else 1e-3)
    total = max(1, int(epochs * steps_per_epoch))
    warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else peak,
            decay_steps=max(1, total - warmup),
            alpha=0.0,
            warmup_target=peak if warmup else None,
            warmup_steps=warmup,
        )
    else:
        rate = peak
    return _optimizer_instance(optimizer, rate, weight_decay, global_clipnorm)
