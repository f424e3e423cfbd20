"""Data parallelism on JAX with Keras' own engine, `keras.distribution` (no tf.distribute).

`data_parallel()` makes every variable created afterwards replicated and every
batch split over the devices (`keras.distribution.DataParallel`); build the
teacher, student and distiller after calling it. `kdistill distill --strategy
data_parallel` does this on the JAX backend.

Several hosts: call `keras.distribution.initialize()` first on every host; it reads
`KERAS_DISTRIBUTION_JOB_ADDRESSES` (comma-separated `host:port` of every process,
the first is the coordinator), `KERAS_DISTRIBUTION_NUM_PROCESSES` and
`KERAS_DISTRIBUTION_PROCESS_ID` (or takes them as arguments), then
`data_parallel()` sees the devices of all hosts. One CPU can pretend to have
several devices for tests: `XLA_FLAGS=--xla_force_host_platform_device_count=2`.

Example:
    >>> from kdistill.run import jax_distribution
    >>> jax_distribution.STRATEGY
    'data_parallel'
"""

from __future__ import annotations

import logging

import keras

__all__ = ["STRATEGY", "data_parallel"]

logger = logging.getLogger(__name__)

#: the `--strategy` name that selects it
STRATEGY = "data_parallel"


def data_parallel(devices: list | None = None) -> "keras.distribution.DataParallel":
    """Sets `keras.distribution.DataParallel` over `devices` (all of them by default) and returns it.

    Raises:
        ValueError: on a backend other than JAX (use `--strategy mirrored` with TensorFlow).
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            f"--strategy data_parallel uses keras.distribution, which runs on the JAX backend; this is "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=jax, or use --strategy mirrored on TensorFlow."
        )
    devices = list(devices) if devices is not None else keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    logger.info("Data parallel over %d device(s): %s", len(devices), ", ".join(str(d) for d in devices))
    return distribution
