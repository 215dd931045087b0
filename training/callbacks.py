"""Trainer callbacks: a progress bar that shows the loss, and Ctrl-C that leaves a resumable checkpoint."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from transformers import ProgressCallback, TrainerCallback

log = logging.getLogger(__name__)


class LossProgressCallback(ProgressCallback):
    """The Trainer's tqdm bar (step, ETA) with the epoch and the latest training loss beside it."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        bar = getattr(self, "training_bar", None)
        if state.is_world_process_zero and bar is not None and logs and "loss" in logs:
            bar.set_postfix(epoch=f"{state.epoch:.2f}", loss=f"{logs['loss']:.4f}")
        if logs and any(key.startswith("eval_") for key in logs):
            super().on_log(args, state, control, logs=logs, **kwargs)


class SaveOnInterrupt(TrainerCallback):
    """First Ctrl-C: finish the step, save a checkpoint and stop; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # Signal handlers can only be installed from the main thread (tests may train elsewhere).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True

    def _handle(self, signum: int, frame: Any) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        log.warning("interrupted: saving a checkpoint after this step (Ctrl-C again to quit without one)")
