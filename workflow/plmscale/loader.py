"""Build the data of the next training steps in a background thread while the current step runs.

:class:`Prefetcher` calls ``build(step)`` for ``start, start + 1, ..., stop - 1`` in one worker thread and
hands the results over in step order through a bounded queue (at most ``depth`` built steps wait), so the
rows of step ``s + 1 .. s + depth`` are packed while step ``s`` trains.  ``build`` must be a pure function
of the step (as :meth:`plmscale.data.PackedStream.rows` and a per-step seeded rng are), so the results are
exactly those of building inline, and a resumed run simply starts at its resume step.  The gathers are
numpy calls that release the GIL, so a thread overlaps with the model's step.

``depth=0`` builds each step in the caller when asked (same results, no thread).  An exception in
``build`` is re-raised in the caller when it asks for that step: the same exception (type, message and
traceback) with a note naming the step.  Leaving the ``with`` block (normally, by ``break`` or by an
exception) stops and joins the worker.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from plmscale.data import PackedStream, Rows

__all__ = ["Prefetcher", "step_rows"]

T = TypeVar("T")
_POLL_S = 0.1  # how often a blocked worker looks at the stop flag


@dataclass(frozen=True)
class _Failed:
    step: int
    error: BaseException


def step_rows(stream: PackedStream, batch_rows: int) -> Callable[[int], Rows]:
    """``build`` for a :class:`Prefetcher`: step ``s`` -> rows ``s * batch_rows .. + batch_rows``."""

    def build(step: int) -> Rows:
        return stream.rows(step * batch_rows, batch_rows)

    return build


class Prefetcher(Generic[T]):
    """Iterate ``(step, build(step))`` for ``step in range(start, stop)``, built ``depth`` steps ahead.

    Use as a context manager::

        with Prefetcher(build, start_step, total_steps, depth=2) as ahead:
            for step, item in ahead:
                ...
    """

    def __init__(self, build: Callable[[int], T], start: int, stop: int, *, depth: int = 2) -> None:
        if depth < 0:
            raise ValueError(f"Prefetcher: depth={depth} must be >= 0 (0 builds each step when asked)")
        if start < 0 or stop < start:
            raise ValueError(f"Prefetcher: need 0 <= start <= stop, got start={start}, stop={stop}")
        self._build, self.start, self.stop = build, start, stop
        self.depth = depth
        self._queue: queue.Queue[tuple[int, T] | _Failed] = queue.Queue(maxsize=max(1, depth))
        self._halt = threading.Event()
        self._next = start
        self._thread = threading.Thread(target=self._work, name=f"prefetch[{start}:{stop}]", daemon=True)
        self._started = False

    def _put(self, item: tuple[int, T] | _Failed) -> bool:
        """Put ``item`` on the queue, waiting for room; False if asked to halt meanwhile."""
        while not self._halt.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        for step in range(self.start, self.stop):
            if self._halt.is_set():
                return
            try:
                item: tuple[int, T] | _Failed = (step, self._build(step))
            except BaseException as error:  # handed to the caller, re-raised there
                self._put(_Failed(step, error))
                return
            if not self._put(item):
                return

    def __enter__(self) -> Prefetcher[T]:
        if not self._started:
            self._started = True
            if self.depth > 0:
                self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker (it finishes the step it is building) and wait for it."""
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join()
        while not self._queue.empty():  # drop built steps nobody will take
            self._queue.get_nowait()

    def get(self, step: int) -> T:
        """The item of ``step``, which must be the next step (steps are taken in order)."""
        if not self._started or self._halt.is_set():
            raise RuntimeError("Prefetcher.get outside its `with` block (or after close)")
        if step != self._next or step >= self.stop:
            raise ValueError(
                f"Prefetcher.get({step}): the next step is {self._next} (range ends at {self.stop})"
            )
        got = self._queue.get() if self.depth > 0 else self._inline(step)
        if isinstance(got, _Failed):
            self.close()
            got.error.add_note(f"(raised by the prefetcher while building the data of step index {got.step})")
            raise got.error
        self._next += 1
        return got[1]

    def _inline(self, step: int) -> tuple[int, T] | _Failed:
        try:
            return step, self._build(step)
        except Exception as error:
            return _Failed(step, error)

    def __iter__(self) -> Iterator[tuple[int, T]]:
        for step in range(self._next, self.stop):
            yield step, self.get(step)
