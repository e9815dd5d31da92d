"""Stopping on SIGTERM without losing a finished round (the simulation and the Flower ServerApp alike).

While the round loop runs, SIGTERM no longer kills the process where it stands. Arriving while
the clients of a round train (the long part of a round), it interrupts them at once: the round
loop puts back the state of the last completed round and checkpoints it. Arriving at any other
moment (aggregation, evaluation, a checkpoint being written), it lets that round finish and stops
before the next (the last round done, the run simply ends). The process then exits with status
143 (128 + SIGTERM), and
``--resume_from_checkpoint <run>/checkpoint-<last round>`` continues exactly. The handler is
installed only in the main thread, and the previous one is put back when the loop ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

EXIT_STATUS = 128 + signal.SIGTERM


class Terminated(Exception):
    """SIGTERM arrived while the round's clients trained."""


class TerminationGuard:
    """Within ``with``: SIGTERM raises ``Terminated`` inside ``interruptible()``, and elsewhere sets ``requested``."""

    def __init__(self) -> None:
        self.requested = False
        self._interruptible = False
        self._previous: object = None
        self._installed = False

    def __enter__(self) -> TerminationGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._installed:
            previous = signal.SIG_DFL if self._previous is None else self._previous  # None: set outside Python
            signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]
            self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self._interruptible:
            self._interruptible = False
            raise Terminated

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """The stretch SIGTERM may cut short (a request already made cuts it before it starts)."""
        if self.requested:
            raise Terminated
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
