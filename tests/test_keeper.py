"""The coordinator: double-checked locking, persistence before use, re-seeding, lost races, re-auth."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_tokenrefresh.errors import RefreshTokenRejected, StoreError
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


def test_a_token_shorter_than_min_ttl_is_refreshed(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emu = emulator_factory("bearer_json")  # 300 s access tokens
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token, seed.access_token)
    first = keeper.get_valid_token(min_ttl=60)
    second = keeper.get_valid_token(min_ttl=600)  # wants more than any token of this vendor has
    assert second.generation == first.generation + 1
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
    loser_view = loser.current()  # the loser read "nothing stored yet" ...
    winner.refresh(force=True)  # ... then the winner refreshed and stored generation 1
    with pytest.raises(StoreError, match="vendor was not called"):
        loser._refresh_locked(loser_view, None)  # compare-and-set on the intent fails
    assert emu.refresh_requests == 1
    assert emu.counters.get("invalid_grant", 0) == 0


def test_invalid_grant_after_a_lost_race_uses_the_winners_token(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_post", reuse_detection=False)
    seed = emu.issue_tokens()
    winner = make_keeper(emu, tmp_path, seed.refresh_token)
    loser = make_keeper(emu, tmp_path, seed.refresh_token)

    def winner_refreshes_first(step: str) -> None:
        if step == "before_request":  # between the loser's intent and its vendor call
            stored, version = winner.store.read("conn")
            assert stored is not None
            winner._refresh_locked(stored, version)

    loser.checkpoint = winner_refreshes_first
    outcome = loser._refresh_locked(loser.current(), None)  # then sends the now-dead seed
    assert emu.counters.get("invalid_grant") == 1
    assert outcome.record.generation == 1
    assert outcome.refreshed is False
    assert outcome.record.state == "valid"


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
    keeper = make_keeper(emu, tmp_path, seed.refresh_token)

    def die_after_answer(step: str) -> None:
        if step == "after_answer":
            raise _ProcessDied

    keeper.checkpoint = die_after_answer
    with pytest.raises(_ProcessDied):
        keeper.get_valid_token(min_ttl=60)
    intent, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert intent is not None and intent.refresh_started_at is not None and intent.generation == 0
    with pytest.raises(RefreshTokenRejected, match="never stored its answer"):
        make_keeper(emu, tmp_path, seed.refresh_token).get_valid_token(min_ttl=60)
    stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert stored is not None and stored.state == "reauth_required"
    assert "never stored its answer" in (stored.reason or "")
    assert stored.refresh_started_at is None


def test_a_refresh_interrupted_before_the_request_recovers_silently(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("appid_json")
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token)

    def die_before_request(step: str) -> None:
        if step == "before_request":
            raise _ProcessDied

    keeper.checkpoint = die_before_request
    with pytest.raises(_ProcessDied):
        keeper.get_valid_token(min_ttl=60)
    record = make_keeper(emu, tmp_path, seed.refresh_token).get_valid_token(min_ttl=60)
    assert record.state == "valid" and record.generation == 1
    assert record.refresh_started_at is None
    assert emu.refresh_requests == 1
