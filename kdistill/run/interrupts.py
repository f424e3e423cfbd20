"""Ctrl-C during training: where it stopped, and a stop that nothing between the signal and kdistill can swallow.

Python raises `KeyboardInterrupt` wherever the main thread happens to be when
SIGINT arrives. On JAX, after the first epoch, that is almost always inside
Keras' `pythonify_logs`, which waits for the step's asynchronous results under a
bare `except: pass`: the interrupt was lost and the run went on to finish with
status 0. So `reporting_interrupts` also records the signal, and `EpochProgress`
raises it again after every batch and epoch (and the block does on leaving), so
Ctrl-C stops on every backend and in every epoch.

Example:
    >>> progress = EpochProgress()
    >>> progress.on_epoch_begin(2)
    >>> progress.epoch
    3
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import keras

from kdistill.errors import Interrupted

__all__ = ["EpochProgress", "reporting_interrupts"]


class EpochProgress(keras.callbacks.Callback):
    """Records the epoch in progress (counting from 1) and the epochs asked for, so that an interrupted run can say where it stopped.

    Inside `reporting_interrupts` it also re-raises a Ctrl-C that code between the
    signal and this callback swallowed (`interrupted` is then True).

    Example:
        >>> progress = EpochProgress()
        >>> progress.on_epoch_begin(2)
        >>> progress.epoch
        3
    """

    def __init__(self):
        super().__init__()
        self.epoch: int | None = None
        self.epochs: int | None = None
        self.interrupted = False  # set by reporting_interrupts' signal handler

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.epochs = (self.params or {}).get("epochs")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1  # Keras counts a resumed run's epochs from the start, so this is the run's own count
        self.raise_if_interrupted()

    def raise_if_interrupted(self, *_, **__) -> None:
        """Raises KeyboardInterrupt if Ctrl-C was pressed, whether or not its first KeyboardInterrupt got through."""
        if self.interrupted:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_predict_batch_end = on_epoch_end = raise_if_interrupted


@contextlib.contextmanager
def _recording_sigint(progress: EpochProgress) -> Iterator[None]:
    """While the block runs, SIGINT sets `progress.interrupted` before raising KeyboardInterrupt as Python's own handler does.

    Only in the main thread (the only one Python lets set a handler), and only
    where Python's default handler is in place: a handler the caller installed is kept.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def record(signum, frame):
        progress.interrupted = True
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, record)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def reporting_interrupts(progress: EpochProgress, resumable: bool) -> Iterator[None]:
    """Turns Ctrl-C (KeyboardInterrupt) inside the block into `kdistill.errors.Interrupted`, naming the epoch `progress` saw.

    A Ctrl-C that something inside the block swallowed is raised by `progress`
    at the next batch or epoch end, or when the block ends.

    Args:
        progress: the `EpochProgress` callback given to `fit` inside the block.
        resumable: whether running the same command again resumes (a per-epoch backup is kept).
    """
    try:
        with _recording_sigint(progress):
            yield
            progress.raise_if_interrupted()
    except Interrupted:
        raise
    except KeyboardInterrupt as interrupt:
        raise Interrupted(progress.epoch, progress.epochs, resumable) from interrupt
