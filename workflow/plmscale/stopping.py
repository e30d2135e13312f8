"""Stopping a run cleanly: SIGTERM/SIGUSR1 (SLURM's warning signals) and the job's time limit set a flag;
the trainer commits a checkpoint at the end of the step and exits with 75 (EX_TEMPFAIL), and the retry
resumes from it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

EX_TEMPFAIL = 75  # sysexits.h: temporary failure, retry later (the job resumes from its checkpoint)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class TrainingStopped(Exception):
    """The run stopped early (signal or time limit) after committing a checkpoint; rerun to resume."""

    exit_code = EX_TEMPFAIL

    def __init__(self, reason: str, step: int, checkpoint: Path | None) -> None:
        where = f"checkpoint {checkpoint.name}" if checkpoint is not None else "NO checkpoint (no directory)"
        super().__init__(f"stopped at step {step} ({reason}); saved {where}; rerun to resume")
        self.reason, self.step, self.checkpoint = reason, step, checkpoint


class StopRequest:
    """A flag set by SIGTERM/SIGUSR1 (or by code): stop at the end of the current step."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def __bool__(self) -> bool:
        return self.reason is not None


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """While active, SIGTERM and SIGUSR1 set ``stop`` instead of killing the process (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, lambda signum, _frame: stop.set(signal.Signals(signum).name))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
