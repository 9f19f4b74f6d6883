"""The Variable store's process-wide gate: one call at a time, answers before ordinary calls."""

from __future__ import annotations

import threading

from airflow_provider_tokenrefresh.stores.variable import _Gate


def test_urgent_waiters_go_before_ordinary_ones_that_waited_longer() -> None:
    gate = _Gate()
    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with gate.hold():
            inside.set()
            release.wait(10)

    def waiter(name: str, urgent: bool, queued: threading.Event) -> None:
        queued.set()
        with gate.hold(urgent=urgent):
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    assert inside.wait(10)
    threads = []
    for name, urgent in [("read-1", False), ("read-2", False), ("answer", True)]:
        queued = threading.Event()
        thread = threading.Thread(target=waiter, args=(name, urgent, queued))
        thread.start()
        assert queued.wait(10)
        threads.append(thread)
    # Every waiter is blocked in hold() once the gate's condition has them all.
    deadline = threading.Event()
    while len(gate._cond._waiters) < 3 and not deadline.wait(0.01):  # type: ignore[attr-defined]
        pass
    assert len(gate._cond._waiters) == 3  # type: ignore[attr-defined]
    release.set()
    for thread in [first, *threads]:
        thread.join(10)
    assert order[0] == "answer"
    assert sorted(order[1:]) == ["read-1", "read-2"]


def test_one_holder_at_a_time() -> None:
    gate = _Gate()
    active = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal active, peak
        for _ in range(200):
            with gate.hold(urgent=threading.get_ident() % 2 == 0):
                with lock:
                    active += 1
                    peak = max(peak, active)
                with lock:
                    active -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert peak == 1
