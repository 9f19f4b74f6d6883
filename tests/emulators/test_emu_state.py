"""Token state, the same for every vendor: rotation, reuse detection, expiry, sample API, counters."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.emulators.drivers import DIALECTS, Session, is_token_rejection, read_tokens, sample

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.testing import ManualClock
    from tests.emulators.conftest import StartEmulator

pytestmark = pytest.mark.parametrize("name", DIALECTS)


def test_happy_path_and_sample_api(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    first_access = session.access_token
    assert sample(client, emu, first_access).json() == {"ok": True, "vendor": name}
    r = session.refresh(client)
    assert r.status_code == 200, r.text
    assert session.access_token != first_access
    assert sample(client, emu, session.access_token).status_code == 200
    assert emu.counters["ok"] == 1 and emu.refresh_requests == 1


def test_rotation_kills_old_refresh_token(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name, reuse_detection=False)
    session = Session.seeded(emu)
    old = session.refresh_token
    assert session.refresh(client).status_code == 200
    assert session.refresh_token != old
    assert not emu.is_refresh_token_valid(old)
    assert emu.is_refresh_token_valid(session.refresh_token)
    assert is_token_rejection(name, session.send(client, refresh_token=old))
    # reuse detection is off: the family survives
    assert session.refresh(client).status_code == 200
    assert emu.families_revoked == 0
    assert emu.counters["invalid_grant:reused"] == 1 and "reuse_detected" not in emu.counters


def test_reuse_revokes_the_whole_family(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    bystander = Session.seeded(emu)
    old = session.refresh_token
    assert session.refresh(client).status_code == 200
    new_access, new_refresh = session.access_token, session.refresh_token
    assert is_token_rejection(name, session.send(client, refresh_token=old))
    assert emu.families_revoked == 1
    assert emu.counters["reuse_detected"] == 1
    assert not emu.is_refresh_token_valid(new_refresh)
    assert not emu.is_access_token_valid(new_access)
    assert sample(client, emu, new_access).status_code == 401
    assert is_token_rejection(name, session.send(client))
    family = emu.family_of(new_refresh)
    assert family is not None
    snapshot = emu.current_tokens(family)
    assert snapshot.revoked and snapshot.revoked_reason == "refresh token reuse detected"
    # other families are untouched
    assert bystander.refresh(client).status_code == 200


def test_rotation_off_keeps_the_refresh_token(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name, rotation=False)
    session = Session.seeded(emu)
    seed_refresh = session.refresh_token
    for _ in range(3):
        r = session.refresh(client)
        assert r.status_code == 200
        _, returned = read_tokens(name, r.json())
        assert returned in (None, seed_refresh)
    assert session.refresh_token == seed_refresh
    assert emu.is_refresh_token_valid(seed_refresh)
    assert emu.families_revoked == 0


def test_refresh_token_expiry_uses_the_clock(
    name: str, start: StartEmulator, client: httpx.Client, clock: ManualClock
) -> None:
    emu = start(name, clock=clock, refresh_ttl=100)
    session = Session.seeded(emu)
    clock.advance(99)
    assert session.refresh(client).status_code == 200  # rotation gives a fresh 100 s
    clock.advance(99)
    assert emu.is_refresh_token_valid(session.refresh_token)
    clock.advance(1)
    assert not emu.is_refresh_token_valid(session.refresh_token)
    assert is_token_rejection(name, session.send(client))
    assert emu.counters["invalid_grant:expired"] == 1


def test_access_token_expiry_on_sample_api(
    name: str, start: StartEmulator, client: httpx.Client, clock: ManualClock
) -> None:
    emu = start(name, clock=clock, access_ttl=60)
    seed = emu.issue_tokens()
    assert sample(client, emu, seed.access_token).status_code == 200
    clock.advance(60)
    r = sample(client, emu, seed.access_token)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert emu.counters["sample:ok"] == 1 and emu.counters["sample:unauthorized"] == 1


def test_sample_api_refuses_unknown_or_missing_tokens(
    name: str, start: StartEmulator, client: httpx.Client
) -> None:
    emu = start(name)
    seed = emu.issue_tokens()
    assert sample(client, emu, "emu-at-made-up").status_code == 401
    assert sample(client, emu, seed.refresh_token).status_code == 401  # a refresh token is no access token
    assert client.get(emu.sample_url).status_code == 401
    assert (
        client.get(emu.sample_url, headers={"Authorization": f"Basic {seed.access_token}"}).status_code == 401
    )


def test_old_access_tokens(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    first = session.access_token
    session.refresh(client)
    assert emu.is_access_token_valid(first)  # by default still valid until it expires
    strict = start(name, revoke_old_access_tokens=True)
    session = Session.seeded(strict)
    first = session.access_token
    session.refresh(client)
    assert not strict.is_access_token_valid(first)
    assert strict.is_access_token_valid(session.access_token)


def test_admin_revocation(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    family = emu.family_of(session.refresh_token)
    assert family is not None and emu.families() == [family]
    emu.revoke_family(family)
    assert is_token_rejection(name, session.send(client))
    assert sample(client, emu, session.access_token).status_code == 401
    assert emu.counters["invalid_grant:revoked"] == 1


def test_counters_requests_and_reset(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    session = Session.seeded(emu)
    session.refresh(client)
    session.send(client, refresh_token="made-up")
    counters = emu.counters
    assert counters["issued"] == 1 and counters["ok"] == 1
    assert counters["invalid_grant"] == 1 and counters["invalid_grant:unknown"] == 1
    assert emu.refresh_requests == 2 and len(emu.requests) == 2
    assert all(rec.path == emu.token_path and rec.method == "POST" for rec in emu.requests)
    emu.reset_counters()
    assert emu.counters == {} and emu.refresh_requests == 0 and emu.requests == []
    client.get(emu.sample_url)
    assert emu.refresh_requests == 0  # the sample API is not the token endpoint


def test_same_refresh_token_in_parallel(name: str, start: StartEmulator) -> None:
    """Two workers racing with one refresh token: exactly one wins; reuse detection burns the family."""
    emu = start(name)
    session = Session.seeded(emu)
    workers = 6
    barrier = threading.Barrier(workers)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def run() -> None:
        with httpx.Client(timeout=10) as c:
            barrier.wait()
            r = session.send(c)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) == 1
    assert all(is_token_rejection(name, r) for r in results if r.status_code != 200)
    assert emu.families_revoked == 1
    assert emu.refresh_requests == workers


def test_latency_holds_only_the_token_endpoint(
    name: str, start: StartEmulator, client: httpx.Client, clock: ManualClock
) -> None:
    emu = start(name, clock=clock, latency=5.0, wait_on_clock=True)
    session = Session.seeded(emu)
    old = session.refresh_token
    answers: list[httpx.Response] = []

    def refresh() -> None:
        with httpx.Client(timeout=30) as own:
            answers.append(session.send(own))

    thread = threading.Thread(target=refresh)
    thread.start()
    try:
        [deadline] = clock.wait_for_sleepers(1)  # the request arrived and is being held
        assert deadline == clock() + 5.0  # by exactly the latency, on the emulator's clock
        assert emu.refresh_requests == 1 and emu.answers == [] and answers == []
        assert emu.is_refresh_token_valid(old)  # latency comes before processing
        # The sample API is not held: it answers while the token request still waits.
        assert sample(client, emu, session.access_token).status_code == 200
        assert answers == [] and clock.sleepers == [deadline]
    finally:
        clock.advance(5.0)
        thread.join(timeout=10)
    assert not thread.is_alive()
    [answer] = answers
    assert answer.status_code == 200, answer.text
    assert not emu.is_refresh_token_valid(old)
    assert clock.sleepers == []


def test_unknown_path_and_wrong_method(name: str, start: StartEmulator, client: httpx.Client) -> None:
    emu = start(name)
    seed = emu.issue_tokens()
    assert client.post(emu.base_url + "/nowhere").status_code == 404
    r = client.put(emu.token_url, content=b"")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert emu.is_refresh_token_valid(seed.refresh_token)
    assert emu.counters["method_not_allowed"] == 1 and emu.counters["not_found"] == 1


def test_base64_tokens_work_with_a_correct_client(
    name: str, start: StartEmulator, client: httpx.Client
) -> None:
    emu = start(name, token_charset="base64")
    session = Session.seeded(emu)
    assert {"+", "/", "="} <= set(session.refresh_token)
    assert session.refresh(client).status_code == 200
    assert session.refresh(client).status_code == 200
