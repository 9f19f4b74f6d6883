"""The coordinator: double-checked locking, persistence before use, re-seeding, lost races, re-auth."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_tokenrefresh.errors import (
    ConfigurationError,
    RefreshInFlight,
    RefreshTokenRejected,
    StoreError,
)
from airflow_provider_tokenrefresh.keeper import TokenKeeper
from airflow_provider_tokenrefresh.stores import FileTokenStore

from .conftest import DIALECTS, EmulatorFactory
from .keeperhelp import FlakyStore, make_keeper


@pytest.mark.parametrize("name", DIALECTS)
def test_first_call_refreshes_once_then_serves_from_the_store(
    name: str, emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory(name)
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token, seed.access_token)
    record = keeper.get_valid_token(min_ttl=60)
    assert record.generation == 1
    assert emu.refresh_requests == 1
    TokenKeeper.clear_cache()  # a new process: only the store remains
    again = make_keeper(emu, tmp_path, seed.refresh_token, seed.access_token).get_valid_token(min_ttl=60)
    assert again.access_token == record.access_token
    assert emu.refresh_requests == 1
    stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert stored is not None and stored.refresh_token is not None
    assert emu.is_refresh_token_valid(stored.refresh_token.get_secret_value())


def test_a_min_ttl_beyond_a_short_tokens_life_is_capped_at_half_of_it(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("bearer_json")  # 300 s access tokens
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token, seed.access_token)
    first = keeper.get_valid_token(min_ttl=60)
    second = keeper.get_valid_token(min_ttl=600)  # wants more than any token of this vendor has
    assert second.generation == first.generation  # used for its life, not refreshed on every call
    assert emu.refresh_requests == 1
    later = make_keeper(emu, tmp_path, seed.refresh_token, seed.access_token, clock=_later(151))
    assert later.get_valid_token(min_ttl=600).generation == first.generation + 1  # past half its life
    assert emu.counters.get("invalid_grant", 0) == 0


def test_reseeded_connection_wins_over_the_stored_record(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_basic")
    old = emu.issue_tokens()
    make_keeper(emu, tmp_path, old.refresh_token).get_valid_token(min_ttl=60)
    new = emu.issue_tokens()  # a person re-authorized and put a new refresh token on the connection
    record = make_keeper(emu, tmp_path, new.refresh_token).get_valid_token(min_ttl=60)
    assert emu.refresh_requests == 2
    assert record.generation == 3  # 1 refresh, the re-seed itself (2), its refresh (3): never backwards
    assert emu.family_of(record.access_token.get_secret_value()) == emu.family_of(new.access_token)


def test_two_connections_on_one_store_key_are_refused_not_reseeded_over_each_other(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_basic")
    first, second = emu.issue_tokens(), emu.issue_tokens()
    # Both connections name the same store_path (copied connection, typo): one record, two seeds.
    record = make_keeper(emu, tmp_path, first.refresh_token).get_valid_token(min_ttl=60)
    other = make_keeper(emu, tmp_path, second.refresh_token)
    other.conn_id = "test_copy"
    with pytest.raises(ConfigurationError) as caught:
        other.get_valid_token(min_ttl=60)
    message = str(caught.value)
    assert "'test_copy'" in message and "'test_oauth2_basic'" in message and "store_path" in message
    assert emu.refresh_requests == 1  # the second seed was never sent
    stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert stored is not None and stored.refresh_token is not None
    assert stored.conn_id == "test_oauth2_basic" and stored.generation == record.generation
    assert emu.is_refresh_token_valid(stored.refresh_token.get_secret_value())  # the first chain lives
    assert emu.is_refresh_token_valid(second.refresh_token)  # and the second seed is not spent


def test_rotated_token_is_persisted_before_it_is_returned_and_kept_if_the_write_fails(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("appid_json")
    seed = emu.issue_tokens()
    # The intent write succeeds, then the store goes down before the rotated record is written.
    store = FlakyStore(str(tmp_path / "store"), fail_writes=10, succeed_first=1)
    keeper = make_keeper(emu, tmp_path, seed.refresh_token, store=store, write_attempts=3)
    with pytest.raises(StoreError, match="held in this process's memory") as info:
        keeper.get_valid_token(min_ttl=60)
    assert seed.refresh_token not in str(info.value)
    assert store.write_attempts == 1 + 3
    intent, _ = store.read("conn")  # only the intent is stored: nothing was handed out
    assert intent is not None and intent.generation == 0 and intent.refresh_started_at is not None
    # The store recovers: the next call writes the rotated record first, without a second refresh.
    store.fail_writes = 0
    record = keeper.get_valid_token(min_ttl=60)
    assert emu.refresh_requests == 1
    stored, _ = store.read("conn")
    assert stored is not None and stored.generation == record.generation == 1
    assert stored.refresh_token is not None and emu.is_refresh_token_valid(
        stored.refresh_token.get_secret_value()
    )


def test_a_stale_view_is_caught_by_the_intent_write_before_the_vendor_is_called(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_post")
    seed = emu.issue_tokens()
    winner = make_keeper(emu, tmp_path, seed.refresh_token)
    loser = make_keeper(emu, tmp_path, seed.refresh_token)

    class StaleOnce(FileTokenStore):
        """Serves the loser one stale read ("nothing stored yet"), as a lagging replica would."""

        stale = 1

        def read(self, key: str):  # type: ignore[no-untyped-def]
            if self.stale:
                self.stale -= 1
                return None, None
            return super().read(key)

    winner.refresh(force=True)  # the winner stored generation 1 ...
    loser.store = StaleOnce(str(tmp_path / "store"))  # ... the loser still reads "nothing stored"
    record = loser.get_valid_token(min_ttl=60)
    assert emu.refresh_requests == 1  # the compare-and-set on the intent failed: no second send
    assert emu.counters.get("invalid_grant", 0) == 0
    assert record.generation == 1


def _later(seconds: float):  # type: ignore[no-untyped-def]
    """A clock ``seconds`` ahead of the real one (another host, or a later run)."""
    from datetime import timedelta

    from airflow_provider_tokenrefresh.tokens import utcnow

    return lambda: utcnow() + timedelta(seconds=seconds)


@pytest.mark.parametrize("reuse_detection", [False, True])
def test_a_lost_race_never_hands_out_the_winners_token_unverified(
    emulator_factory: EmulatorFactory, tmp_path: Path, reuse_detection: bool
) -> None:
    emu = emulator_factory("oauth2_post", reuse_detection=reuse_detection)
    seed = emu.issue_tokens()
    loser = make_keeper(emu, tmp_path, seed.refresh_token, stale_after=60)
    # The winner runs "later": the loser's intent looks older than the bound (the loser stalled),
    # on another host: its own file lock.
    winner = make_keeper(
        emu, tmp_path, seed.refresh_token, stale_after=60, clock=_later(120), lock_dir="other-host-locks"
    )

    def winner_refreshes_first(step: str) -> None:
        if step == "before_request":  # the loser stalls between its intent and its vendor call
            loser.checkpoint = None
            winner.get_valid_token(min_ttl=60)

    loser.checkpoint = winner_refreshes_first
    if reuse_detection:
        # The loser's send revoked the family, the winner's new token too: nothing is called valid.
        with pytest.raises(RefreshTokenRejected):
            loser.get_valid_token(min_ttl=60)
        stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
        assert stored is not None and stored.state == "reauth_required"
        assert "may have revoked" in (stored.reason or "")
        assert emu.families_revoked == 1
    else:
        record = loser.get_valid_token(min_ttl=60)  # suspect, then one deciding refresh
        assert record.state == "valid"
        assert record.access_token is not None
        assert emu.is_access_token_valid(record.access_token.get_secret_value())
        assert record.generation == 2
    assert emu.counters.get("invalid_grant") >= 1


def test_rejected_refresh_token_marks_reauth_and_stops_calling_the_vendor(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("query_basic")
    seed = emu.issue_tokens()
    emu.revoke_family(emu.family_of(seed.refresh_token) or "", "user revoked the app")
    keeper = make_keeper(emu, tmp_path, seed.refresh_token)
    with pytest.raises(RefreshTokenRejected, match="test_query_basic") as info:
        keeper.get_valid_token(min_ttl=60)
    assert seed.refresh_token not in str(info.value)
    stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert stored is not None
    assert stored.state == "reauth_required"
    assert stored.refresh_token is not None and stored.refresh_token.get_secret_value() == seed.refresh_token
    assert "re-authorize" in (stored.reason or "")
    requests = emu.refresh_requests
    with pytest.raises(RefreshTokenRejected, match="vendor not called"):
        make_keeper(emu, tmp_path, seed.refresh_token).get_valid_token(min_ttl=60)
    assert emu.refresh_requests == requests
    # A new seed on the connection ends the cooldown.
    fresh = emu.issue_tokens()
    assert make_keeper(emu, tmp_path, fresh.refresh_token).get_valid_token(min_ttl=60).state == "valid"


def test_transient_failure_is_recorded_without_losing_the_token(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    from airflow_provider_tokenrefresh.errors import TransientRefreshError

    emu = emulator_factory("oauth2_basic")
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token)
    keeper.get_valid_token(min_ttl=60)
    emu.inject("http_500")
    with pytest.raises(TransientRefreshError):
        keeper.refresh(force=True)
    stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert stored is not None and stored.state == "valid"
    assert stored.last_error is not None and "transient" in stored.last_error
    assert stored.refresh_token is not None and emu.is_refresh_token_valid(
        stored.refresh_token.get_secret_value()
    )


class _ProcessDied(BaseException):
    """Stands in for SIGKILL inside one test process (the chaos test uses real SIGKILL)."""


def test_a_refresh_interrupted_after_the_vendor_answered_is_explained_next_time(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_basic")
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token, stale_after=60)

    def die_after_answer(step: str) -> None:
        if step == "after_answer":
            raise _ProcessDied

    keeper.checkpoint = die_after_answer
    with pytest.raises(_ProcessDied):
        keeper.get_valid_token(min_ttl=60)
    intent, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert intent is not None and intent.refresh_started_at is not None and intent.generation == 0
    requests = emu.refresh_requests
    # Within the bound the intent may still have a request at the vendor: wait, send nothing.
    with pytest.raises(RefreshInFlight, match="in flight"):
        make_keeper(emu, tmp_path, seed.refresh_token, stale_after=60, lock_timeout=0.3).get_valid_token(
            min_ttl=60
        )
    assert emu.refresh_requests == requests
    # Past the bound it counts as crashed: the replay is rejected and explained.
    with pytest.raises(RefreshTokenRejected, match="never stored its answer"):
        make_keeper(emu, tmp_path, seed.refresh_token, stale_after=60, clock=_later(61)).get_valid_token(
            min_ttl=60
        )
    stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert stored is not None and stored.state == "reauth_required"
    assert "never stored its answer" in (stored.reason or "")
    assert stored.refresh_started_at is None


def test_a_refresh_interrupted_before_the_request_recovers_once_the_intent_is_stale(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("appid_json")
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token, stale_after=60)

    def die_before_request(step: str) -> None:
        if step == "before_request":
            raise _ProcessDied

    keeper.checkpoint = die_before_request
    with pytest.raises(_ProcessDied):
        keeper.get_valid_token(min_ttl=60)
    record = make_keeper(emu, tmp_path, seed.refresh_token, stale_after=60, clock=_later(61)).get_valid_token(
        min_ttl=60
    )
    assert record.state == "valid" and record.generation == 1
    assert record.refresh_started_at is None
    assert emu.refresh_requests == 1


def test_an_answer_arriving_after_a_takeover_is_kept_as_an_alternate_and_the_record_is_suspect(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    from airflow_provider_tokenrefresh.errors import RecordTakenOver

    # A vendor that accepts the same refresh token twice (no rotation): both sends succeed.
    emu = emulator_factory("oauth2_basic", rotation=False, reuse_detection=False)
    seed = emu.issue_tokens()
    stalled = make_keeper(emu, tmp_path, seed.refresh_token, stale_after=60)
    other = make_keeper(
        emu, tmp_path, seed.refresh_token, stale_after=60, clock=_later(120), lock_dir="other-host-locks"
    )

    def other_takes_over(step: str) -> None:
        if step == "before_request":  # frozen past the bound; the other host replays meanwhile
            stalled.checkpoint = None
            other.get_valid_token(min_ttl=60)

    stalled.checkpoint = other_takes_over
    with pytest.raises(RecordTakenOver, match="suspect"):
        stalled.get_valid_token(min_ttl=60)
    stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert stored is not None and stored.state == "suspect"
    assert "possible double send" in (stored.reason or "")
    assert len(stored.alternates) == 1  # the stalled holder's answer is kept, not dropped
    assert emu.refresh_requests == 2
    # The next refresh decides: the vendor still honours the chain, so the record is valid again.
    record = make_keeper(emu, tmp_path, seed.refresh_token, stale_after=60).get_valid_token(min_ttl=60)
    assert record.state == "valid" and record.access_token is not None
    assert emu.is_access_token_valid(record.access_token.get_secret_value())
    assert emu.refresh_requests == 3


def test_refresh_all_sends_many_connections_through_a_kept_alive_connection_per_worker(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """24 connections of one vendor, 4 at a time: the vendor sees at most 4 TCP connections (a
    lent client per worker thread), not 24 clients with a handshake each; afterwards each keeper
    sends on its own."""
    from airflow_provider_tokenrefresh.fanout import refresh_all
    from airflow_provider_tokenrefresh.keeper import RefreshOutcome

    emu = emulator_factory("oauth2_basic")
    store = FileTokenStore(str(tmp_path / "store"))
    keepers: dict[str, TokenKeeper] = {}
    for i in range(24):
        seed = emu.issue_tokens()
        keepers[f"c{i:02d}"] = make_keeper(
            emu, tmp_path, seed.refresh_token, seed.access_token, store=store, key=f"c{i:02d}"
        )
    outcomes = refresh_all(keepers, force=True, max_workers=4)
    assert all(isinstance(o, RefreshOutcome) and o.refreshed for o in outcomes.values()), outcomes
    assert emu.refresh_requests == 24
    ports = {request.client_port for request in emu.requests}
    assert 1 <= len(ports) <= 4 and 0 not in ports, sorted(ports)
    for key in keepers:
        stored, _ = store.read(key)
        assert stored is not None and stored.refresh_token is not None
        assert emu.is_refresh_token_valid(stored.refresh_token.get_secret_value())
    # The pool was closed with the fan-out; a keeper refreshes on its own client afterwards.
    assert keepers["c00"].refresh(force=True).refreshed
    assert emu.refresh_requests == 25


def test_the_pool_lent_to_many_connections_keeps_no_cookie(emulator_factory: EmulatorFactory) -> None:
    """A cookie one connection was given (a load balancer's, a vendor's session) must not travel
    with another connection's refresh through the shared pool."""
    import httpx

    from .conftest import client_for

    client = client_for(emulator_factory("oauth2_basic"))
    with client.shared_client(4) as shared:
        request = httpx.Request("POST", client.url)
        answer = httpx.Response(200, headers={"Set-Cookie": "session=abc; Path=/"}, request=request)
        shared.cookies.extract_cookies(answer)
        assert len(shared.cookies) == 0
    with httpx.Client() as plain:  # the same answer in a default client is kept: the check can fail
        plain.cookies.extract_cookies(answer)
        assert len(plain.cookies) == 1


def test_thread_clients_give_each_thread_its_own_client_and_close_them_all() -> None:
    """What a fan-out lends (:class:`ThreadClients`): one client per worker thread, the same one on
    every call from that thread, all closed together, and none handed out after the close."""
    import threading

    import httpx

    from airflow_provider_tokenrefresh.transport import ThreadClients

    built: list[httpx.Client] = []

    def factory() -> httpx.Client:
        built.append(httpx.Client())
        return built[-1]

    seen: dict[int, list[httpx.Client]] = {}
    with ThreadClients(factory) as clients:

        def work(n: int) -> None:
            seen[n] = [clients.for_this_thread() for _ in range(3)]

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(len({id(c) for c in calls}) == 1 for calls in seen.values())
        assert len({id(calls[0]) for calls in seen.values()}) == 4 == len(built)
    assert all(client.is_closed for client in built)
    with pytest.raises(RuntimeError, match="closed"):
        clients.for_this_thread()


FIRST_TOKEN_IN_A_FRESH_PROCESS = """
import json, sys
from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
from airflow_provider_tokenrefresh.dialects import PRESETS
from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper
from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
from airflow_provider_tokenrefresh.stores import FileTokenStore

base_url, client_id, client_secret, refresh_token, directory = sys.argv[1:]
client = RefreshClient(
    PRESETS["oauth2_basic"],
    ClientSettings(base_url=base_url, credentials=ClientCredentials(client_id, client_secret), allow_insecure_http=True),
)
keeper = TokenKeeper(
    "conn", client, FileTokenStore(directory + "/store"), FileRefreshLock(directory + "/locks"), Seed(refresh_token),
    conn_id="fresh",
)
before = set(sys.modules)
record = keeper.get_valid_token()
client.close()
print(json.dumps({"generation": record.generation, "imported": sorted(set(sys.modules) - before)}))
"""


def test_a_fresh_processs_first_token_imports_none_of_the_keeper_dags_schedule_code(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Every task process's first token passes the lapse warning, which looks the configured
    horizon up: that lookup pulled in ``schedule`` (the keeper DAG's interval rules, about 1 ms
    to import), on the clock of every process of a herd at once."""
    import json
    import subprocess
    import sys

    emu = emulator_factory("oauth2_basic")
    seed = emu.issue_tokens()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            FIRST_TOKEN_IN_A_FRESH_PROCESS,
            emu.base_url,
            emu.client_id,
            emu.client_secret,
            seed.refresh_token,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["generation"] == 1 and emu.counters.get("ok") == 1
    assert "airflow_provider_tokenrefresh.schedule" not in result["imported"], result["imported"]
