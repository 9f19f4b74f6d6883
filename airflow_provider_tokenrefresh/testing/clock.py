"""The emulators' clock: real time by default, a :class:`ManualClock` in tests.

Stdlib only; imports nothing from Airflow or the rest of the package.
"""

from __future__ import annotations

import threading

#: How often a sleeper given a ``cancel`` event looks at it (only matters when the event is set).
_CANCEL_POLL = 0.05


class ManualClock:
    """A clock for tests: starts at ``start`` and moves only when told to.

    Pass it as ``clock=`` to an emulator and call :meth:`advance` to expire tokens without sleeping.
    With ``wait_on_clock=True`` the emulator's delays (``latency``, the ``slow`` fault) also run on
    this clock: they block in :meth:`sleep` until a test advances the clock past them, and a test
    learns that a request is being held from :meth:`wait_for_sleepers` (an event, not a guess about
    how long a request takes).
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._cond = threading.Condition()
        self._deadlines: list[float] = []

    def __call__(self) -> float:
        """The current time in seconds since the epoch."""
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; return the new time (wakes due sleepers)."""
        with self._cond:
            self._now += seconds
            self._cond.notify_all()
            return self._now

    def set(self, now: float) -> None:
        """Jump to ``now`` (wakes due sleepers)."""
        with self._cond:
            self._now = float(now)
            self._cond.notify_all()

    def sleep(self, seconds: float, cancel: threading.Event | None = None) -> bool:
        """Block until this clock has moved ``seconds`` forward (another thread calls :meth:`advance`).

        :param cancel: give up when this event is set (an emulator passes its stop event).
        :returns: ``True`` when the time was reached, ``False`` when cancelled.
        """
        with self._cond:
            deadline = self._now + seconds
            self._deadlines.append(deadline)
            self._cond.notify_all()
            try:
                while self._now < deadline:
                    if cancel is not None and cancel.is_set():
                        return False
                    self._cond.wait(_CANCEL_POLL if cancel is not None else None)
                return True
            finally:
                self._deadlines.remove(deadline)
                self._cond.notify_all()

    @property
    def sleepers(self) -> list[float]:
        """The deadlines (clock times) of the threads blocked in :meth:`sleep`, earliest first."""
        with self._cond:
            return sorted(self._deadlines)

    def wait_for_sleepers(self, count: int = 1, timeout: float = 10.0) -> list[float]:
        """Block until at least ``count`` threads are blocked in :meth:`sleep`; return their deadlines.

        :raises TimeoutError: not that many within ``timeout`` real seconds (a hang, not a race).
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._deadlines) >= count, timeout):
                raise TimeoutError(f"{len(self._deadlines)} of {count} sleeper(s) after {timeout} s")
            return sorted(self._deadlines)
