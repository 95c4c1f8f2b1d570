"""Stop training cleanly on SIGTERM / SIGINT (Ctrl-C).

While :class:`StopRequest` is active, the first SIGTERM or SIGINT only records the request: the
training loop agrees on it across ranks at the next step boundary (see
:func:`.distributed.max_over_ranks`), saves a checkpoint and raises :class:`TrainingInterrupted`
(``stdiff train`` then exits with 128 + the signal number). A further signal more than
``GRACE_S`` seconds later kills the process at once with the default action. Signals within
the grace period count as the same request: Ctrl-C under torchrun reaches each worker twice,
from the terminal and forwarded by torchrun.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

__all__ = ["StopRequest", "TrainingInterrupted", "ignore_stop_signals", "signal_name", "STOP_SIGNALS", "GRACE_S"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_S = 1.0


def signal_name(signum: int) -> str:
    """``15`` -> ``"SIGTERM"``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving the checkpoint ``checkpoint`` at ``step``."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"interrupted by {signal_name(signum)} at step {step}; saved the checkpoint {checkpoint} "
                         "(continue with --resume)")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequest:
    """Context manager recording the first SIGTERM/SIGINT in ``signum`` (0: none yet).

    Handlers are installed only in the main thread (elsewhere signals keep their handlers);
    the previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._first = 0.0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if not self.signum:
            self.signum, self._first = signum, now
            os.write(2, f"stdiff train: {signal_name(signum)}: saving a checkpoint after this step "
                        "(signal again to abort at once)\n".encode())
        elif now - self._first > GRACE_S:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers leave SIGINT to the training process (Ctrl-C reaches both)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
