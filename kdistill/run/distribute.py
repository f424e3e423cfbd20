"""Picks a `tf.distribute` strategy and trains a distiller under it, multi-worker included.

Keras 3's `fit` cannot run under `MultiWorkerMirroredStrategy` (keras-team/keras#20585,
tensorflow/tensorflow#72388: "Attempt to convert a value (PerReplica ...)"). `fit`
here runs the distiller's own `train_step` through `strategy.run` on a
distributed dataset, which works for every strategy; with one of the other
strategies, `distiller.fit` works as usual.

On JAX and PyTorch there is no tf.distribute: `get_strategy` returns a
`KerasStrategy` (a scope that does nothing, and the replica count), and
`data_parallel` sets `keras.distribution.DataParallel` on JAX.

Example:
    >>> import keras
    >>> from kdistill.run import distribute
    >>> strategy = distribute.get_strategy("default")
    >>> strategy.num_replicas_in_sync
    1
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

import keras
import numpy as np

from kdistill.backend import LazyTensorFlow

__all__ = ["STRATEGIES", "KerasStrategy", "get_strategy", "fit", "is_chief", "is_multi_worker"]

tf = LazyTensorFlow("tf.distribute strategies")

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "data_parallel")


def _workers_in_tf_config() -> int:
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    return len(config.get("cluster", {}).get("worker", []))


class KerasStrategy:
    """Where tf.distribute is not used (JAX, PyTorch): `scope()` does nothing; Keras' distribution, if any, splits the batches.

    Args:
        replicas: devices the batches are split over (1 without `data_parallel`).
    """

    def __init__(self, replicas: int = 1):
        self.num_replicas_in_sync = replicas

    def scope(self):
        return contextlib.nullcontext()


def get_strategy(name="auto"):
    """A `tf.distribute.Strategy` by name, or the strategy passed in (e.g. a `TPUStrategy` you made).

    Args:
        name: "auto" (multi_worker when `TF_CONFIG` lists several workers,
            mirrored with several GPUs, else default), "default",
            "one_device" (the first GPU, else the CPU), "mirrored" (all local
            GPUs, or the logical CPUs you configured), "multi_worker" (from
            `TF_CONFIG`), or a `tf.distribute.Strategy` instance.

    Create it first thing in the program (multi_worker must exist before
    TensorFlow initialises its devices), then build models and the optimizer
    inside `strategy.scope()`.
    """
    if not isinstance(name, str):  # a strategy you made
        return name
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}, or pass a tf.distribute.Strategy."
        )
    if name == "data_parallel":
        # JAX: keras.distribution splits the batches; no tf.distribute strategy is used.
        from kdistill.run import jax_distribution

        return KerasStrategy(len(jax_distribution.data_parallel().device_mesh.devices.reshape(-1)))
    if keras.backend.backend() != "tensorflow":
        if name in ("auto", "default"):
            return KerasStrategy()
        raise ValueError(
            f"--strategy {name} is a tf.distribute strategy, for the TensorFlow backend; this is {keras.backend.backend()!r}. "
            "On JAX use --strategy data_parallel (keras.distribution), or set KERAS_BACKEND=tensorflow."
        )
    if name == "multi_worker" or (name == "auto" and _workers_in_tf_config() > 1):
        # Collective ops must be configured before TensorFlow initialises its devices,
        # so nothing may touch the runtime (not even listing GPUs) before this.
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "strategy 'multi_worker' reads the cluster from the TF_CONFIG environment variable, which is not set. "
                'Set it on each worker, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.MirroredStrategy()


def is_multi_worker(strategy) -> bool:
    """Whether `strategy` is a tf.distribute `MultiWorkerMirroredStrategy` (trained by `fit` here, not Keras' `fit`)."""
    # Only a TensorFlow object can be one: asking leaves TensorFlow unimported elsewhere.
    return type(strategy).__module__.startswith("tensorflow") and isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    )


def is_chief(strategy=None) -> bool:
    """Whether this process should write the run's files: always, except on the non-chief workers of a multi-worker run.

    The chief is the `chief` task of `TF_CONFIG`, or worker 0 when the cluster has no chief
    (TensorFlow's convention). The other workers train in step with it and should write
    nowhere that the chief writes.

    Example:
        >>> is_chief(KerasStrategy())
        True
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def _as_dataset(data) -> tf.data.Dataset:
    if not isinstance(data, tf.data.Dataset):
        raise TypeError(f"distribute.fit needs a batched tf.data.Dataset of (x, y), received {type(data).__name__}.")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def fit(
    distiller: keras.Model,
    dataset: tf.data.Dataset,
    epochs: int = 1,
    steps_per_epoch: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int = 1,
) -> dict:
    """Trains a compiled distiller under `strategy` with its own `train_step`, for any strategy.

    The dataset yields *global* batches; each worker reads its share
    (sharded by data) and the loss is averaged over the global batch.

    Args:
        distiller: a compiled `FeatureDistiller` built inside `strategy.scope()`.
        dataset: batched `tf.data.Dataset` of `(images, labels)`.
        epochs: passes over the data (or over `steps_per_epoch` batches).
        steps_per_epoch: stop each epoch after this many steps.
        strategy: defaults to the strategy whose scope is active.
        verbose: 1 shows a Keras progress bar on worker 0.

    Returns:
        `{metric name: [value per epoch]}`, as `History.history`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if distiller.optimizer is None:
        raise ValueError("Compile the distiller first: distiller.compile(optimizer=..., metrics=[...]).")
    distributed = strategy.experimental_distribute_dataset(_as_dataset(dataset))

    @tf.function
    def step(iterator):
        # get_next_as_optional keeps every worker in step when the data runs out.
        optional = iterator.get_next_as_optional()
        has_value = optional.has_value()
        if has_value:
            strategy.run(distiller.train_step, args=(optional.get_value(),))
        return has_value

    history: dict[str, list[float]] = {}
    chief = (
        getattr(strategy.cluster_resolver, "task_id", 0) in (0, None) if hasattr(strategy, "cluster_resolver") else True
    )
    for epoch in range(epochs):
        for metric in distiller.metrics:
            metric.reset_state()
        iterator = iter(distributed)
        progress = keras.utils.Progbar(steps_per_epoch, verbose=verbose if chief else 0)
        done = 0
        while steps_per_epoch is None or done < steps_per_epoch:
            if not bool(step(iterator)):
                break
            done += 1
            progress.update(done)
        if done == 0:
            raise ValueError(
                "The dataset gave no batch: check its size against the batch size and the number of workers."
            )
        logs = {}
        for metric in distiller.metrics:
            result = metric.result()
            logs.update(
                {k: float(np.asarray(v)) for k, v in result.items()}
                if isinstance(result, dict)
                else {metric.name: float(np.asarray(result))}
            )
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        if chief:
            logger.info("epoch %d/%d: %s", epoch + 1, epochs, ", ".join(f"{k} {v:.4f}" for k, v in logs.items()))
    return history
