"""The hot path's precomputed deadlines (keeper.hot_entry) decide exactly as lease.needs_refresh
does, for any record, margin and moment inside the cache's trust window (a hypothesis property)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from airflow_provider_tokenrefresh.keeper import hot_entry
from airflow_provider_tokenrefresh.lease import View, needs_refresh
from airflow_provider_tokenrefresh.tokens import TokenRecord

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
seconds = st.floats(min_value=-86400, max_value=40 * 86400, allow_nan=False)
optional_seconds = st.none() | seconds


@st.composite
def records(draw: st.DrawFn) -> TokenRecord:
    obtained = T0 + timedelta(seconds=draw(st.floats(min_value=-86400, max_value=0)))
    life = draw(optional_seconds)
    refresh_life = draw(optional_seconds)
    return TokenRecord(
        access_token=SecretStr("a" * 20),
        refresh_token=draw(st.none() | st.just(SecretStr("r" * 20))),
        obtained_at=draw(st.none() | st.just(obtained)),
        expires_at=obtained + timedelta(seconds=life) if life is not None else None,
        refresh_expires_at=obtained + timedelta(seconds=refresh_life) if refresh_life is not None else None,
        reauth_deadline=draw(st.none() | st.just(T0 + timedelta(days=3))),
        seed_fingerprint="fp",
    )


@settings(max_examples=500, deadline=None)
@given(
    record=records(),
    min_ttl=st.floats(min_value=0, max_value=7200),
    margin=st.floats(min_value=0, max_value=7 * 86400),
    later=st.floats(min_value=0, max_value=59.9),
)
def test_a_cache_hit_is_exactly_when_no_refresh_is_needed(
    record: TokenRecord, min_ttl: float, margin: float, later: float
) -> None:
    entry = hot_entry(record, T0.timestamp(), margin, cache_for=60.0)
    now = T0 + timedelta(seconds=later)
    view = View(
        record=record, seed_fingerprint="fp", now=now, min_ttl=min_ttl, refresh_margin=margin, stale_after=186
    )
    expected_hit = not needs_refresh(record, view)
    if entry is None:
        assert record.expires_at is None or (record.refresh_token is None and record.reauth_deadline is None)
        return
    t = now.timestamp()
    hit = t < entry.trusted_until and entry.expires_at - t >= min(min_ttl, entry.half_life)
    # Float rounding of a datetime difference may move an exact tie by a microsecond; nothing else.
    if hit != expected_hit:
        margin_used = min(min_ttl, entry.half_life)
        tie = abs((entry.expires_at - t) - margin_used) < 1e-3 or abs(t - entry.trusted_until) < 1e-3
        assert tie, (hit, expected_hit)
    assert "fp" in entry.seeds


def test_records_that_must_not_be_served_from_memory() -> None:
    base = TokenRecord(
        access_token=SecretStr("a" * 20),
        refresh_token=SecretStr("r" * 20),
        expires_at=T0 + timedelta(hours=1),
        obtained_at=T0,
        seed_fingerprint="fp",
    )
    now = T0.timestamp()
    assert hot_entry(base, now, 300, 60) is not None
    assert hot_entry(base.model_copy(update={"state": "suspect"}), now, 300, 60) is None
    assert hot_entry(base.model_copy(update={"refresh_started_at": T0}), now, 300, 60) is None
    assert hot_entry(base.model_copy(update={"expires_at": None}), now, 300, 60) is None
    entry = hot_entry(base, now, 300, 60)
    assert entry is not None and entry.trusted_until == now + 60  # the store is read again after 60 s
