"""The pure notification decision (airflow_provider_tokenrefresh.notify) and its claim on a real store."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from airflow_provider_tokenrefresh import notify
from airflow_provider_tokenrefresh.notify import (
    Marker,
    MarkerStore,
    claimed,
    due,
    finished,
    notices,
    owned,
)
from airflow_provider_tokenrefresh.stores import FileTokenStore
from airflow_provider_tokenrefresh.tokens import TokenRecord

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
IDS = {"reauth_required": ["mail"], "refresh_token_expiring": ["mail"]}


def _record(**update: Any) -> TokenRecord:
    base = TokenRecord.seeded("CANARY-seed-refresh-token-1234").model_copy(
        update={
            "access_token": SecretStr("CANARY-access-token-5678"),
            "expires_at": NOW + timedelta(hours=1),
            "obtained_at": NOW,
            "generation": 3,
        }
    )
    return base.model_copy(update=update)


def _reauth() -> TokenRecord:
    return _record().with_error("invalid_grant: refresh token revoked", reauth=True, now=NOW)


def test_a_valid_record_with_no_known_refresh_expiry_tells_nothing() -> None:
    assert notices(_record(), "c", now=NOW, expiring_within=86400) == []
    assert notices(None, "c", now=NOW) == []


def test_reauth_required_is_one_notice_without_secrets() -> None:
    (notice,) = notices(_reauth(), "conn_a", now=NOW, expiring_within=86400)
    assert notice.event == "reauth_required"
    assert notice.state == "reauth_required"
    assert "invalid_grant" in (notice.reason or "")
    text = repr(notice.fields())
    assert "CANARY" not in text
    assert "conn_a" in notice.fields()["summary"]


def test_reauth_not_watched_tells_nothing() -> None:
    assert notices(_reauth(), "c", now=NOW, reauth=False) == []


def test_refresh_token_expiring_only_within_the_horizon() -> None:
    soon = _record(refresh_expires_at=NOW + timedelta(minutes=10))
    assert notices(soon, "c", now=NOW, expiring_within=300) == []
    (notice,) = notices(soon, "c", now=NOW, expiring_within=3600)
    assert notice.event == "refresh_token_expiring"
    assert notice.refresh_expires_in == 600.0
    assert notices(soon, "c", now=NOW, expiring_within=None) == []


def test_once_per_state_change_not_per_check() -> None:
    found = notices(_reauth(), "c", now=NOW)
    todo = due(found, Marker(), IDS, now=NOW)
    assert len(todo) == 1
    marker = claimed(Marker(), todo, "claim1", now=NOW)
    # a young claim in flight, then sent: due to nobody else, on any later check
    assert due(found, marker, IDS, now=NOW + timedelta(seconds=5)) == []
    sent = finished(marker, {todo[0][0]: None}, "claim1", now=NOW)
    assert due(found, sent, IDS, now=NOW + timedelta(days=3)) == []


def test_a_new_state_change_is_told_again() -> None:
    found = notices(_reauth(), "c", now=NOW)
    todo = due(found, Marker(), IDS, now=NOW)
    sent = finished(claimed(Marker(), todo, "a", now=NOW), {todo[0][0]: None}, "a", now=NOW)
    # recovered (a refresh moved the generation), then rejected again: a new change
    later = _record(generation=4).with_error("invalid_grant", reauth=True, now=NOW)
    assert len(due(notices(later, "c", now=NOW), sent, IDS, now=NOW)) == 1
    # re-seeded and rejected: a new change too
    reseeded = _reauth().model_copy(update={"seed_fingerprint": "sha256:other"})
    assert len(due(notices(reseeded, "c", now=NOW), sent, IDS, now=NOW)) == 1
    # a renewed refresh token is a new expiry
    e1 = notices(_record(refresh_expires_at=NOW + timedelta(minutes=10)), "c", now=NOW, expiring_within=3600)
    t1 = due(e1, sent, IDS, now=NOW)
    s1 = finished(claimed(sent, t1, "b", now=NOW), {t1[0][0]: None}, "b", now=NOW)
    e2 = notices(_record(refresh_expires_at=NOW + timedelta(minutes=40)), "c", now=NOW, expiring_within=3600)
    assert len(due(e2, s1, IDS, now=NOW)) == 1
    assert due(e1, s1, IDS, now=NOW) == []


def test_a_failed_send_is_retried_and_a_dead_claim_is_taken_over() -> None:
    found = notices(_reauth(), "c", now=NOW)
    todo = due(found, Marker(), IDS, now=NOW)
    marker = claimed(Marker(), todo, "a", now=NOW)
    failed = finished(marker, {todo[0][0]: "SMTPException: refused"}, "a", now=NOW)
    assert due(found, failed, IDS, now=NOW) == todo
    assert claimed(failed, todo, "b", now=NOW).entries[todo[0][0]].attempts == 2
    # a claim "sending" for longer than the bound: its process died mid-send
    assert due(found, marker, IDS, now=NOW + timedelta(seconds=notify.SENDING_STALE_AFTER + 1)) == todo


def test_finished_leaves_another_claim_alone_and_owned_reads_back() -> None:
    found = notices(_reauth(), "c", now=NOW)
    todo = due(found, Marker(), IDS, now=NOW)
    theirs = claimed(Marker(), todo, "b", now=NOW)
    assert finished(theirs, {todo[0][0]: None}, "a", now=NOW) == theirs
    assert owned(theirs, todo, "a") == []
    assert owned(theirs, todo, "b") == todo


def test_each_notifier_has_its_own_slot() -> None:
    found = notices(_reauth(), "c", now=NOW)
    ids = {"reauth_required": ["mail", "chat"]}
    todo = due(found, Marker(), ids, now=NOW)
    assert [name for name, _ in todo] == ["reauth_required:mail", "reauth_required:chat"]
    half = finished(
        claimed(Marker(), todo, "a", now=NOW),
        {"reauth_required:mail": None, "reauth_required:chat": "x"},
        "a",
        now=NOW,
    )
    assert [name for name, _ in due(found, half, ids, now=NOW)] == ["reauth_required:chat"]


class _Lock:
    name = "thread"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def hold(self, key: str, timeout: float) -> Any:
        import contextlib

        @contextlib.contextmanager
        def held() -> Any:
            assert self._lock.acquire(timeout=timeout)
            try:
                yield None
            finally:
                self._lock.release()

        return held()


class _Recorder:
    template_fields = ("to",)

    def __init__(self, sent: list[dict[str, Any]], fail: bool = False) -> None:
        self.to = "x@example.test"
        self.sent = sent
        self.fail = fail

    def __call__(self, context: dict[str, Any]) -> None:
        if self.fail:
            raise RuntimeError("the mail relay is down")
        self.sent.append(dict(context["tokenrefresh"]))

    def __deepcopy__(self, memo: Any) -> _Recorder:
        return self


def test_eight_threads_one_send_on_a_real_compare_and_set_store(tmp_path: Path) -> None:
    store, lock = FileTokenStore(str(tmp_path)), _Lock()
    sent: list[dict[str, Any]] = []
    notifier = _Recorder(sent)
    barrier = threading.Barrier(8)
    results: list[dict[str, int]] = []

    def one() -> None:
        barrier.wait()
        ms = MarkerStore(store=store, lock=lock, key="k__notified")
        results.append(
            notify.dispatch(
                conn_id="conn_a",
                record=_reauth(),
                marker_store=ms,
                notifiers={"reauth_required": [notifier]},
                expiring_within=None,
                context={},
            )
        )

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sent) == 1
    assert sent[0]["conn_id"] == "conn_a" and sent[0]["state"] == "reauth_required"
    assert sum(r["sent"] for r in results) == 1
    assert "CANARY" not in repr(sent)


def test_a_failing_notifier_never_raises_nor_stops_the_other_and_is_retried(tmp_path: Path) -> None:
    store, lock = FileTokenStore(str(tmp_path)), _Lock()
    sent: list[dict[str, Any]] = []
    bad, good = _Recorder([], fail=True), _Recorder(sent)
    bad.to = "bad@example.test"  # another id
    ms = MarkerStore(store=store, lock=lock, key="k__notified")
    kwargs: dict[str, Any] = {
        "conn_id": "c",
        "record": _reauth(),
        "marker_store": ms,
        "expiring_within": None,
        "context": {},
    }
    first = notify.dispatch(notifiers={"reauth_required": [bad, good]}, **kwargs)
    assert first == {"sent": 1, "failed": 1}
    bad.fail = False
    bad.sent = sent
    second = notify.dispatch(notifiers={"reauth_required": [bad, good]}, **kwargs)
    assert second == {"sent": 1, "failed": 0}  # only the failed one, retried
    assert len(sent) == 2
    assert notify.dispatch(notifiers={"reauth_required": [bad, good]}, **kwargs) == {"sent": 0, "failed": 0}


def test_a_store_that_cannot_be_read_is_logged_not_raised(caplog: Any) -> None:
    class Broken:
        name, atomic = "broken", True

        def read(self, key: str) -> Any:
            raise OSError("store down")

        def write(self, *a: Any) -> Any:
            raise AssertionError

    ms = MarkerStore(store=Broken(), lock=_Lock(), key="k")  # type: ignore[arg-type]
    out = notify.dispatch(
        conn_id="conn_z",
        record=_reauth(),
        marker_store=ms,
        notifiers={"reauth_required": [_Recorder([])]},
        expiring_within=None,
        context={},
    )
    assert out == {"sent": 0, "failed": 0}
    assert "conn_z" in caplog.text
