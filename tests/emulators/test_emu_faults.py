"""Fault injection on the token endpoint, for every vendor."""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from airflow_provider_tokenrefresh.testing import FAULT_KINDS
from tests.emulators.drivers import DIALECTS, Session, read_tokens, sample

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.testing import ManualClock
    from tests.emulators.conftest import StartEmulator

pytestmark = pytest.mark.parametrize("name", DIALECTS)

INTERNAL_ERROR = {
    "oauth2_basic": {"error": "server_error", "error_description": "Internal server error"},
    "oauth2_post": {"error": "server_error", "error_description": "Internal server error"},
    "query_basic": {"error": "server_error", "error_description": "Internal server error"},
    "appid_json": {"error_code": "50252", "error_desc": "Internal server error."},
    "bearer_json": {"result": "500"},  # the document's only failure field; no undocumented resultDesc
}


def test_http_500(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    emu.inject("http_500", times=2)
    for _ in range(2):
        r = session.send(client)
        assert r.status_code == 500 and r.json() == INTERNAL_ERROR[name]
    assert emu.is_refresh_token_valid(session.refresh_token)  # not processed
    assert session.refresh(client).status_code == 200  # queue drained
    assert emu.counters["fault:http_500"] == 2 and emu.pending_faults == []


@pytest.mark.parametrize(("kind", "status"), [("http_503", 503), ("http_429", 429)])
def test_retry_after(name: str, kind: str, status: int, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    emu.inject(kind, retry_after=7)
    emu.inject(kind, retry_after="Wed, 21 Oct 2026 07:28:00 GMT")
    emu.inject(kind)
    r = session.send(client)
    assert r.status_code == status and r.headers["retry-after"] == "7"
    assert isinstance(r.json(), dict)
    r = session.send(client)
    assert r.headers["retry-after"] == "Wed, 21 Oct 2026 07:28:00 GMT"
    r = session.send(client)
    assert r.status_code == status and "retry-after" not in r.headers
    assert emu.is_refresh_token_valid(session.refresh_token)
    assert emu.counters[f"fault:{kind}"] == 3


def test_ok_with_error_body(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    emu.inject("ok_with_error_body")
    r = session.send(client)
    assert r.status_code == 200
    body = r.json()
    if name == "appid_json":
        assert body["error_code"] == "50252"
    elif name == "bearer_json":
        assert body["result"] == "1" and "resultData" not in body
    else:
        assert body["error"] == "server_error" and "access_token" not in body
    assert emu.is_refresh_token_valid(session.refresh_token)


def test_malformed_json(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    emu.inject("malformed_json")
    emu.inject("malformed_json", body="<html>502 Bad Gateway</html>", content_type="text/html")
    r = session.send(client)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    r = session.send(client)
    assert r.text == "<html>502 Bad Gateway</html>" and r.headers["content-type"] == "text/html"
    assert emu.is_refresh_token_valid(session.refresh_token)


def test_slow_answers_late_but_processes(
    name: str, start: StartEmulator, client: httpx.Client, clock: ManualClock
) -> None:
    emu = start(name, clock=clock, wait_on_clock=True)
    session = Session.seeded(emu)
    old = session.refresh_token
    emu.inject("slow", delay=0.3)
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(session.send(client)))
    thread.start()
    try:
        [deadline] = clock.wait_for_sleepers(1)  # the answer is being held...
        assert deadline == clock() + 0.3  # ...for exactly the fault's delay, on the emulator's clock
        # ...after the refresh was processed: the token already rotated, nothing was sent yet.
        assert not emu.is_refresh_token_valid(old)
        assert emu.counters["fault:slow"] == 1 and emu.counters["ok"] == 1
        assert emu.answers == [] and answers == []
    finally:
        clock.advance(0.3)
        thread.join(timeout=10)
    [answer] = answers
    assert answer.status_code == 200
    access, refresh = read_tokens(name, answer.json())
    assert refresh is not None and emu.is_refresh_token_valid(refresh)
    assert emu.is_access_token_valid(access)
    assert [a.status for a in emu.answers] == [200]


def test_hold_answers_only_after_release_and_its_minimum(
    name: str, start: StartEmulator, client: httpx.Client, clock: ManualClock
) -> None:
    emu = start(name, clock=clock, wait_on_clock=True)
    session = Session.seeded(emu)
    release = threading.Event()
    emu.inject("hold", release=release, at_least=10, timeout=60)
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(session.send(client)))
    thread.start()
    try:
        [deadline] = clock.wait_for_sleepers(1)  # the minimum runs on the emulator's clock
        assert deadline == clock() + 10
        release.set()  # released early: the minimum still holds the answer
        assert not thread.join(timeout=0.5) and answers == [] and emu.counters["ok"] == 1
        clock.advance(10)
        thread.join(timeout=10)
    finally:
        release.set()
        clock.advance(10)
        thread.join(timeout=10)
    [answer] = answers
    assert answer.status_code == 200 and emu.counters["fault:hold"] == 1
    held = threading.Event()
    emu.inject("hold", release=held, timeout=60)
    late: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: late.append(session.send(client)))
    thread.start()
    try:
        deadline_at = time.monotonic() + 10
        while emu.refresh_requests < 2 and time.monotonic() < deadline_at:
            time.sleep(0.01)
        assert emu.refresh_requests == 2
        thread.join(timeout=0.5)
        assert late == [] and len(emu.answers) == 1  # open until released
    finally:
        held.set()
        thread.join(timeout=10)
    assert len(emu.answers) == 2 and late  # answered once released


def test_slow_with_client_timeout_leaves_outcome_unknown(
    name: str, start: StartEmulator, clock: ManualClock
) -> None:
    emu = start(name, clock=clock, wait_on_clock=True)
    session = Session.seeded(emu)
    old = session.refresh_token
    emu.inject("slow", delay=30)
    with httpx.Client(timeout=httpx.Timeout(10, read=0.3)) as impatient, pytest.raises(httpx.ReadTimeout):
        session.send(impatient)  # the server holds the answer until the clock moves: it never does here
    clock.wait_for_sleepers(1)  # the server reached the hold, so it processed the refresh first
    assert not emu.is_refresh_token_valid(old)
    family = emu.family_of(old)
    assert family is not None and emu.current_tokens(family).refreshes == 1
    assert emu.answers == []  # no answer ever left


def test_drop_before(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    emu.inject("drop_before")
    with pytest.raises(httpx.RemoteProtocolError):
        session.send(client)
    assert emu.is_refresh_token_valid(session.refresh_token)  # NOT processed
    assert emu.counters["fault:drop_before"] == 1 and "ok" not in emu.counters
    assert session.refresh(client).status_code == 200


def test_drop_after(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    old = session.refresh_token
    emu.inject("drop_after")
    with pytest.raises(httpx.RemoteProtocolError):
        session.send(client)
    assert not emu.is_refresh_token_valid(old)  # processed: the token rotated
    assert emu.counters["ok"] == 1 and emu.counters["fault:drop_after"] == 1
    family = emu.family_of(old)
    assert family is not None
    current = emu.current_tokens(family)
    assert sample(client, emu, current.access_token).status_code == 200
    # a blind retry with the old token is reuse: the family burns
    assert session.send(client).status_code != 200
    assert emu.families_revoked == 1


def test_huge_body(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    emu.inject("huge_body")
    r = session.send(client)
    assert r.status_code == 200 and len(r.content) >= 5 * 1024 * 1024
    assert emu.is_refresh_token_valid(session.refresh_token)
    emu.inject("huge_body", size=10)
    assert len(session.send(client).content) < 100


def test_faults_only_hit_the_token_endpoint(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    emu.inject("http_500")
    assert sample(client, emu, session.access_token).status_code == 200
    assert len(emu.pending_faults) == 1
    emu.clear_faults()
    assert emu.pending_faults == []
    assert session.refresh(client).status_code == 200


def test_inject_validates(name: str, start: StartEmulator) -> None:
    emu = start(name)
    with pytest.raises(ValueError, match="unknown fault kind"):
        emu.inject("explode")
    with pytest.raises(ValueError, match="no parameter"):
        emu.inject("http_500", retry_after=3)
    with pytest.raises(ValueError, match="at least 1"):
        emu.inject("http_500", times=0)
    assert set(FAULT_KINDS) == {
        "http_500",
        "http_503",
        "http_429",
        "ok_with_error_body",
        "malformed_json",
        "slow",
        "hold",
        "drop_before",
        "drop_after",
        "huge_body",
    }
