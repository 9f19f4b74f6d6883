"""The emulators' clock: real time by default, a :class:`ManualClock` in tests.

Stdlib only; imports nothing from Airflow or the rest of the package.
"""

from __future__ import annotations

import threading


class ManualClock:
    """A clock for tests: starts at ``start`` and moves only when told to.

    Pass it as ``clock=`` to an emulator and call :meth:`advance` to expire tokens without sleeping.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The current time in seconds since the epoch."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; return the new time."""
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """Jump to ``now``."""
        with self._lock:
            self._now = float(now)
