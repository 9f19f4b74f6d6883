"""The signal shield: SIGTERM/SIGINT/SIGALRM held while a refresh answer is on its way to the store."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from airflow_provider_tokenrefresh.shield import deferred_signals, signals_to_defer, to_redeliver


class Terminated(BaseException):
    pass


def _raising(signum: int, frame: Any) -> None:
    raise Terminated(signal.Signals(signum).name)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGALRM, signal.SIGINT])
def test_a_signal_inside_the_window_is_delivered_after_it(signum: int) -> None:
    previous = signal.signal(signum, _raising)
    done: list[str] = []
    try:
        with pytest.raises(Terminated, match=signal.Signals(signum).name):
            with deferred_signals("test"):
                os.kill(os.getpid(), signum)
                done.append("stored")  # the handler did not run here: the window finished
        assert done == ["stored"]
        assert signal.getsignal(signum) is _raising  # the previous handler is back
    finally:
        signal.signal(signum, previous)


def test_no_signal_no_exception_and_handlers_restored() -> None:
    previous = signal.signal(signal.SIGTERM, _raising)
    try:
        with deferred_signals("test"):
            assert signal.getsignal(signal.SIGTERM) is not _raising
        assert signal.getsignal(signal.SIGTERM) is _raising
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_nested_windows_deliver_once_at_the_outermost_end() -> None:
    previous = signal.signal(signal.SIGTERM, _raising)
    seen: list[str] = []
    try:
        with pytest.raises(Terminated):
            with deferred_signals("outer"):
                with deferred_signals("inner"):
                    os.kill(os.getpid(), signal.SIGTERM)
                seen.append("after inner")
        assert seen == ["after inner"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_nothing_is_swapped() -> None:
    previous = signal.signal(signal.SIGTERM, _raising)
    observed: list[object] = []
    try:

        def work() -> None:
            with deferred_signals("thread"):
                observed.append(signal.getsignal(signal.SIGTERM))

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert observed == [_raising]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_pure_parts() -> None:
    handlers = {1: signal.SIG_DFL, 2: None, 3: signal.SIG_IGN, 4: _raising}
    assert signals_to_defer(main_thread=True, handlers=handlers) == (1, 4)
    assert signals_to_defer(main_thread=False, handlers=handlers) == ()
    assert to_redeliver([15, 14, 15]) == (15, 14)
