"""Stopping a run cleanly: Ctrl-C finishes the current step and saves a resumable checkpoint."""

from __future__ import annotations

import signal
import threading

from hstu_tutorial.training.log import note


class StopRun(Exception):
    """Raised inside the epoch loop to end a run early; `status` goes into the results."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


def install_sigint_handler(trainer):
    """Ctrl-C sets `trainer._interrupted` (the loop then stops after its step); a second Ctrl-C aborts.

    Returns the previous handler (None off the main thread, where signals cannot be handled)."""
    trainer._interrupted = False
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if trainer._interrupted:
            raise KeyboardInterrupt
        trainer._interrupted = True
        note("Ctrl-C: finishing this step, then saving a checkpoint (press again to abort)")

    return signal.signal(signal.SIGINT, handler)
