"""Defer termination signals while a refresh answer is on its way to the store.

Between "refresh request sent" and "answer durably stored" the process holds the only copy of a
live refresh token. Airflow ends a task by raising from a signal handler — ``execution_timeout``
is a ``SIGALRM`` whose handler raises ``AirflowTaskTimeout``; the supervisor sends ``SIGINT``
(``KeyboardInterrupt``) then ``SIGTERM`` before ``SIGKILL``; a Celery warm shutdown or a pod
stop arrives as ``SIGTERM`` — and an exception raised in that window drops the answer: the vendor
has rotated, the store still holds the spent token, the connection needs re-authorization.

:func:`deferred_signals` replaces the handlers of ``SIGINT``, ``SIGTERM`` and ``SIGALRM`` for the
duration of that window with one that only notes the signal, then restores the previous handlers
and raises each noted signal again (``signal.raise_signal``), so the original handler runs — and
raises — right after the write. The window is bounded by one vendor call (client timeout x
attempts) plus the write; a ``SIGKILL`` sent sooner still loses the answer (detected: the record
becomes ``reauth_required`` and says why).

Only the main thread of the main interpreter can change signal handlers (``signal.signal``). In
any other thread (the provider's trigger thread pool, ``refresh_all``'s workers) nothing is
deferred: Python runs signal handlers in the main thread only, so the exception is raised there,
not in the refreshing thread, which goes on and stores the answer — provided the process lives
until it has done so (a ``ThreadPoolExecutor`` worker is joined at interpreter exit; a daemon
thread is not).

Which signals to defer, and what to do when the window closes, is decided by the pure functions
:func:`signals_to_defer` and :func:`to_redeliver`; :func:`deferred_signals` does the I/O.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

#: The signals Airflow, Celery and Kubernetes use to end a task gracefully.
SHIELDED: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGALRM") if hasattr(signal, name)
)

_depth = threading.local()


def signals_to_defer(*, main_thread: bool, handlers: Mapping[int, object]) -> tuple[int, ...]:
    """The signals whose handler can be swapped: none outside the main thread; of the others, those
    whose current handler Python knows (``None`` means a handler installed from C, which could not
    be put back) and that are not ignored."""
    if not main_thread:
        return ()
    return tuple(s for s, h in handlers.items() if h is not None and h is not signal.SIG_IGN)


def to_redeliver(noted: Sequence[int]) -> tuple[int, ...]:
    """Each noted signal once, in the order of first arrival."""
    return tuple(dict.fromkeys(noted))


@contextlib.contextmanager
def deferred_signals(what: str) -> Iterator[None]:
    """Hold ``SIGINT``/``SIGTERM``/``SIGALRM`` until the block is left, then deliver them.

    Re-entrant (an inner block defers to the outermost). ``what`` names the window in the log line.
    """
    if getattr(_depth, "value", 0):
        yield
        return
    main = threading.current_thread() is threading.main_thread()
    current: dict[int, object] = {}
    if main:
        for shielded in SHIELDED:
            with contextlib.suppress(ValueError, OSError):
                current[int(shielded)] = signal.getsignal(shielded)
    chosen = signals_to_defer(main_thread=main, handlers=current)
    noted: list[int] = []

    def note(signum: int, frame: Any) -> None:
        noted.append(signum)  # nothing else: no I/O, no locks inside a signal handler

    swapped: dict[int, Any] = {}
    try:
        for signum in chosen:
            try:
                swapped[signum] = signal.signal(signum, note)
            except (ValueError, OSError):  # not the main interpreter
                break
    except BaseException:
        for signum, handler in swapped.items():
            signal.signal(signum, handler)
        raise
    _depth.value = 1
    try:
        yield
    finally:
        _depth.value = 0
        for signum, handler in swapped.items():
            signal.signal(signum, handler)
        for signum in to_redeliver(noted):
            log.warning(
                "%s arrived while %s; delivered now that it is done",
                signal.Signals(signum).name,
                what,
            )
            signal.raise_signal(signum)
