"""Refresh tokens never lapse silently (docs/lifetimes.md).

* scheduled keeper runs alone keep a one-hour (iSales) refresh token alive, counted at the
  emulated vendor, with a manual clock on both sides and no use of the access token;
* a fixed-maximum vendor (oauth2-client-secret-basic: "a maximum validity of 30 days") is never
  counted as renewed: the record reports the re-authorization deadline, and a warning once it is
  within the horizon;
* the pure rules (expiry basis, renewal, warnings) and the keeper schedule helper.
"""

from __future__ import annotations

import json
import logging
import runpy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
from airflow_provider_tokenrefresh.dialects import PRESETS
from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
from airflow_provider_tokenrefresh.errors import RefreshTokenRejected
from airflow_provider_tokenrefresh.fanout import refresh_all
from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper
from airflow_provider_tokenrefresh.lease import (
    View,
    decide,
    effective_horizon,
    expiry_basis_for,
    keeper_refresh_margin,
    lapse_warning,
    refresh_token_due,
)
from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
from airflow_provider_tokenrefresh.schedule import (
    DEFAULT_FLOOR,
    MINIMUM_INTERVAL,
    TokenLifetimes,
    keeper_interval,
    keeper_interval_for,
    keeper_min_ttl,
    stated_lifetimes,
)
from airflow_provider_tokenrefresh.stores import FileTokenStore
from airflow_provider_tokenrefresh.testing import ManualClock, VendorEmulator
from airflow_provider_tokenrefresh.testing.state import IssuedTokens
from airflow_provider_tokenrefresh.testing.vendors import OAuth2BasicEmulator
from airflow_provider_tokenrefresh.tokens import TokenRecord, TokenSet, fingerprint

from .conftest import EmulatorFactory, closed_after_test
from .keeperhelp import make_keeper

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600.0
DAY = 86400.0
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    """Each test starts as a new process would: no refresh-token warning logged yet."""
    TokenKeeper._lapse_warned.clear()


def _now(clock: ManualClock) -> Any:
    def now() -> datetime:
        return datetime.fromtimestamp(clock(), UTC)

    return now


def _keeper(
    emu: VendorEmulator, tmp: Path, seed: IssuedTokens, clock: ManualClock, **kwargs: Any
) -> TokenKeeper:
    """A new "process": a keeper with no cache, the client and the keeper on the manual clock."""
    TokenKeeper.clear_cache()
    credentials = ClientCredentials(emu.client_id, emu.client_secret)
    client = closed_after_test(
        RefreshClient(
            PRESETS[emu.name],
            ClientSettings(base_url=emu.base_url, credentials=credentials, allow_insecure_http=True),
            clock=_now(clock),
        )
    )
    return TokenKeeper(
        "conn",
        client,
        FileTokenStore(str(tmp / "store")),
        FileRefreshLock(str(tmp / "locks")),
        Seed(seed.refresh_token, seed.access_token),
        conn_id=f"test_{emu.name}",
        clock=_now(clock),
        **kwargs,
    )


# -- a one-hour refresh token kept alive by the keeper schedule alone --------------------------------


def test_keeper_runs_alone_keep_a_one_hour_refresh_token_alive(
    emulator_factory: EmulatorFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The access token outlives the refresh token here, so only the refresh-token rule can trigger.
    clock = ManualClock()
    emu = emulator_factory("bearer_json", access_ttl=2 * HOUR, refresh_ttl=HOUR, clock=clock)
    seed = emu.issue_tokens()
    interval = keeper_interval_for([TokenLifetimes("isales", access=2 * HOUR, refresh=HOUR)])
    assert interval == timedelta(minutes=15)
    min_ttl = keeper_min_ttl(interval)
    assert min_ttl == 1800.0
    runs = int(24 * HOUR / interval.total_seconds())  # 96 runs over 24 simulated hours
    left_after_run: list[float] = []
    caplog.set_level(logging.WARNING, logger="airflow_provider_tokenrefresh.keeper")
    for _ in range(runs):
        keeper = _keeper(emu, tmp_path, seed, clock)
        outcome = refresh_all({"isales": keeper}, min_ttl=min_ttl)["isales"]
        assert not isinstance(outcome, Exception), outcome
        left_after_run.append(outcome.record.refresh_ttl(_now(clock)()))
        clock.advance(interval.total_seconds())
    # At the vendor: one refresh at the start, then one every third run (2700 s: the first run
    # with less than half the hour left), never a rejected or expired refresh token.
    assert emu.refresh_requests == 32
    assert emu.counters.get("ok", 0) == 32
    assert emu.counters.get("invalid_grant", 0) == 0
    assert min(left_after_run) >= HOUR / 2  # after every run at least half the hour left
    stored = keeper.current()
    assert stored.refresh_token is not None
    assert emu.is_refresh_token_valid(stored.refresh_token.get_secret_value())
    assert stored.reauth_deadline is None  # iSales states a later expiry on every refresh
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_without_the_keeper_margin_the_same_schedule_lets_it_lapse(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    # The control: the connection's own 300 s margin at a 15-minute schedule misses the hour.
    clock = ManualClock()
    emu = emulator_factory("bearer_json", access_ttl=2 * HOUR, refresh_ttl=HOUR, clock=clock)
    seed = emu.issue_tokens()
    with pytest.raises(RefreshTokenRejected):
        for _ in range(8):
            keeper = _keeper(emu, tmp_path, seed, clock)
            keeper.refresh(min_ttl=300.0)
            clock.advance(900.0)
    assert emu.counters.get("invalid_grant:expired", 0) == 1
    assert emu.refresh_requests == 2  # the first refresh, then the one that found it lapsed


# -- a fixed maximum lifetime: reported as a deadline, never as a renewal ------------------------------


class FixedMaximumOAuth2Basic(OAuth2BasicEmulator):
    """oauth2_basic as its document reads: a refresh token chain lives at most ``refresh_ttl``
    from the authorization; rotated tokens inherit the chain's expiry."""

    def refresh(self, refresh_token: str, **kwargs: Any) -> Any:
        with self._lock:
            family_id = self._refresh_index.get(refresh_token)
            family = self._families.get(family_id) if family_id else None
            cap = family.refresh_expires_at if family is not None else None
            result = super().refresh(refresh_token, **kwargs)
            if family is not None and cap is not None and result.outcome == "ok":
                family.refresh_expires_at = cap
            return result


def test_fixed_maximum_is_a_reauth_deadline_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    emu = FixedMaximumOAuth2Basic(clock=clock).start()
    try:
        seed = emu.issue_tokens()
        authorized = _now(clock)()
        keeper = _keeper(emu, tmp_path, seed, clock, refresh_token_horizon=7 * DAY)
        assert keeper.refresh_expiry_basis == "fixed_maximum"
        first = keeper.refresh(force=True)
        deadline = authorized + timedelta(days=30)
        assert first.renewed is False
        assert first.record.refresh_expires_at == deadline
        assert first.record.reauth_deadline == deadline
        assert first.status()["refresh_token_renewed"] is False
        status = first.record.status(_now(clock)(), horizon=7 * DAY)
        assert status["reauth_deadline"] == deadline.isoformat()
        assert status["reauth_deadline_in"] == 30 * DAY
        assert status["refresh_expires_in"] == 30 * DAY
        assert status["warnings"] == []  # 30 days away: outside the 7-day horizon
        # Daily refreshes rotate the token but never move its expiry.
        caplog.set_level(logging.WARNING, logger="airflow_provider_tokenrefresh.keeper")
        for day in range(1, 25):
            clock.advance(DAY)
            outcome = _keeper(emu, tmp_path, seed, clock, refresh_token_horizon=7 * DAY).refresh(force=True)
            assert outcome.rotated and outcome.renewed is False
            assert outcome.record.reauth_deadline == deadline, day
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        # Day 24: 6 days left, inside the horizon: logged once per process, naming the connection.
        assert len(warnings) == 1
        assert "test_oauth2_basic" in warnings[0] and "re-authorize by" in warnings[0]
        assert "6d 0h left" in warnings[0]
        record = outcome.record
        assert any("re-authorize by" in w for w in record.status(_now(clock)(), horizon=7 * DAY)["warnings"])
        # The deadline is real: the vendor rejects the chain past it.
        clock.advance(6 * DAY + 1)
        with pytest.raises(RefreshTokenRejected):
            _keeper(emu, tmp_path, seed, clock).refresh(force=True)
        assert emu.counters.get("invalid_grant:expired", 0) == 1
        assert emu.counters.get("ok", 0) == 25
    finally:
        emu.stop()


def test_a_deadline_stops_refresh_token_driven_refreshes() -> None:
    # In its last minutes a fixed chain is not refreshed on every use: that would not extend it.
    rec = _record(refresh_expires_at=T0 + timedelta(seconds=100), obtained_at=T0 - timedelta(days=29))
    fixed = rec.model_copy(update={"reauth_deadline": rec.refresh_expires_at})
    assert refresh_token_due(rec, T0, 300.0)
    assert not refresh_token_due(fixed, T0, 300.0)
    view = View(
        record=fixed,
        seed_fingerprint=fixed.seed_fingerprint or "",
        now=T0,
        min_ttl=60,
        refresh_margin=300,
        stale_after=186,
    )
    assert decide(view, fixed).action == "use"
    assert decide(View(**{**view.__dict__, "record": rec}), rec).action == "refresh"


# -- the pure rules ---------------------------------------------------------------------------------


def _record(**update: Any) -> TokenRecord:
    base = TokenRecord.seeded("rt-0", "at-0").model_copy(
        update={
            "generation": 3,
            "expires_at": T0 + timedelta(hours=1),
            "obtained_at": T0 - timedelta(hours=1),
            "refresh_expires_at": T0 + timedelta(days=10),
        }
    )
    return base.model_copy(update=update)


def _answer(
    at: datetime, refresh: str | None = "rt-1", refresh_expires_at: datetime | None = None
) -> TokenSet:
    return TokenSet(
        access_token=SecretStr("at-1"),
        expires_at=at + timedelta(hours=2),
        refresh_token=SecretStr(refresh) if refresh else None,
        refresh_expires_at=refresh_expires_at,
        obtained_at=at,
    )


def test_expiry_basis_by_dialect() -> None:
    assert expiry_basis_for("bearer_json", states_refresh_expiry=True) == "stated"
    assert expiry_basis_for("oauth2_basic", states_refresh_expiry=False) == "fixed_maximum"
    assert expiry_basis_for("query_basic", states_refresh_expiry=False) == "per_token"
    assert expiry_basis_for("appid_json", states_refresh_expiry=False) == "per_token"


def test_stated_expiry_renewed_only_when_later() -> None:
    rec = _record(refresh_expires_at=T0 + timedelta(hours=1), obtained_at=T0 - timedelta(minutes=30))
    moved = rec.advanced(
        _answer(T0, refresh_expires_at=T0 + timedelta(hours=1, minutes=30) - timedelta(seconds=1))
    )
    assert moved.reauth_deadline is None
    # The vendor sends "seconds left" of an unchanged expiry (rounded by a second): not renewed.
    same = rec.advanced(_answer(T0, refresh_expires_at=T0 + timedelta(hours=1, seconds=1)))
    assert same.reauth_deadline == T0 + timedelta(hours=1, seconds=1)
    # A later refresh that does move it clears the deadline.
    later = T0 + timedelta(minutes=20)
    assert (
        same.advanced(_answer(later, refresh_expires_at=later + timedelta(hours=1))).reauth_deadline is None
    )


def test_per_token_lifetime_moves_only_with_a_new_token() -> None:
    rec = _record()
    rotated = rec.advanced(_answer(T0, "rt-1"), refresh_token_ttl=30 * DAY, basis="per_token")
    assert rotated.refresh_expires_at == T0 + timedelta(days=30) and rotated.reauth_deadline is None
    # The connection's refresh_lifetime wins over the dialect's (parsed into the answer).
    own = rec.advanced(
        _answer(T0, "rt-1", refresh_expires_at=T0 + timedelta(days=30)),
        refresh_token_ttl=DAY,
        basis="per_token",
    )
    assert own.refresh_expires_at == T0 + timedelta(days=1)
    same = rec.advanced(_answer(T0, "rt-0"), refresh_token_ttl=30 * DAY, basis="per_token")
    assert same.refresh_expires_at == rec.refresh_expires_at
    assert same.reauth_deadline == rec.refresh_expires_at
    none_sent = rec.advanced(_answer(T0, None), refresh_token_ttl=30 * DAY, basis="per_token")
    assert none_sent.reauth_deadline == rec.refresh_expires_at


def test_unknown_lifetime_claims_nothing() -> None:
    rec = _record(refresh_expires_at=None)
    new = rec.advanced(_answer(T0, "rt-1"), basis="per_token")
    assert new.refresh_expires_at is None and new.reauth_deadline is None
    assert new.status(T0)["refresh_expires_in"] is None


def test_lapse_warning_rules() -> None:
    assert keeper_refresh_margin(300.0, 1800.0) == 1800.0
    assert effective_horizon(7 * DAY, HOUR) == 900.0
    assert effective_horizon(7 * DAY, 30 * DAY) == 7 * DAY
    one_hour = _record(
        refresh_expires_at=T0 + timedelta(seconds=800), obtained_at=T0 - timedelta(seconds=2800)
    )
    message = lapse_warning(one_hour, T0, 7 * DAY, "vendor_bearer_json")
    assert message is not None
    assert "vendor_bearer_json" in message and "13m 20s" in message
    assert "airflow-tokenrefresh refresh vendor_bearer_json --force" in message
    healthy = one_hour.model_copy(update={"refresh_expires_at": T0 + timedelta(seconds=1000)})
    assert lapse_warning(healthy, T0, 7 * DAY, "c") is None
    lapsed = lapse_warning(one_hour, T0 + timedelta(hours=1), 7 * DAY, "c")
    assert lapsed is not None and "lapsed" in lapsed
    thirty = _record(refresh_expires_at=T0 + timedelta(days=6), obtained_at=T0 - timedelta(days=24))
    assert lapse_warning(thirty, T0, 7 * DAY, "c") is not None
    assert lapse_warning(thirty, T0, 5 * DAY, "c") is None  # a shorter configured horizon
    rejected = thirty.model_copy(update={"state": "reauth_required"})
    assert lapse_warning(rejected, T0, 7 * DAY, "c") is None


def test_old_records_read_without_the_field_and_keep_schema_2(tmp_path: Path) -> None:
    rec = _record(reauth_deadline=T0 + timedelta(days=3))
    data = json.loads(rec.to_storage_json())
    assert data["schema_version"] == 2 and data["reauth_deadline"] == "2026-03-04T00:00:00Z"
    data.pop("reauth_deadline")
    assert TokenRecord.from_storage_json(json.dumps(data)).reauth_deadline is None
    assert TokenRecord.from_storage_json(rec.to_storage_json()).reauth_deadline == T0 + timedelta(days=3)
    assert fingerprint("rt-0") == rec.seed_fingerprint


# -- the keeper schedule --------------------------------------------------------------------------


def test_keeper_interval_rules() -> None:
    presets = [
        stated_lifetimes(f"vendor_{d}", f"tokenrefresh_{d}")
        for d in ("oauth2_basic", "oauth2_post", "query_basic", "appid_json", "bearer_json")
    ]
    assert [(p.access, p.refresh) for p in presets] == [
        (7200.0, 30 * DAY),
        (7200.0, None),
        (3600.0, 30 * DAY),
        (3600.0, 30 * DAY),
        (300.0, 3600.0),
    ]
    assert keeper_interval_for(presets) == timedelta(minutes=15)
    # Access tokens alone: a quarter of the shortest, but not below the floor.
    assert keeper_interval_for([TokenLifetimes("a", 300.0, None)]) == DEFAULT_FLOOR
    assert keeper_interval_for([TokenLifetimes("a", 4 * 7200.0, None)]) == timedelta(hours=2)
    # A refresh token goes below the floor (it must not lapse), down to the minimum.
    assert keeper_interval_for([TokenLifetimes("r", 300.0, 1200.0)]) == timedelta(minutes=5)
    assert keeper_interval_for([TokenLifetimes("r", None, 60.0)]) == MINIMUM_INTERVAL
    assert keeper_interval_for([]) == timedelta(days=1)
    assert keeper_min_ttl(timedelta(minutes=15)) == 1800.0


def test_keeper_interval_reads_env_connections_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SHORT_RT",
        json.dumps({"conn_type": "tokenrefresh_oauth2_post", "extra": {"refresh_lifetime": "7200"}}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_URI_RT", "tokenrefresh-query-basic://id:secret@vendor.example?refresh_lifetime=2400"
    )
    assert keeper_interval(["short_rt"]) == timedelta(minutes=30)
    assert keeper_interval(["short_rt", "uri_rt"]) == timedelta(minutes=10)
    # Unknown connections are left out; a conn type given by the DAG is used without any lookup.
    assert keeper_interval(["nowhere"]) == timedelta(days=1)
    assert keeper_interval(["nowhere"], conn_types={"nowhere": "tokenrefresh_bearer_json"}) == timedelta(
        minutes=15
    )


def test_example_keeper_dag_uses_the_helper() -> None:
    module = runpy.run_path(str(ROOT / "dags" / "example_token_keeper.py"))
    assert module["INTERVAL"] == timedelta(minutes=15)
    dag = module["dag"]
    assert dag.schedule == timedelta(minutes=15)
    assert dag.params["min_ttl"] == 1800.0


def test_keeper_derives_the_basis_from_its_dialect(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    for name, basis in (
        ("bearer_json", "stated"),
        ("oauth2_basic", "fixed_maximum"),
        ("query_basic", "per_token"),
    ):
        assert make_keeper(emulator_factory(name), tmp_path, "x").refresh_expiry_basis == basis
