"""How ``airflow-tokenrefresh status`` judges a row (pure: no Airflow components)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow_provider_tokenrefresh.cli_airflow import DEFAULT_HORIZON, classify

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _row(left: float, lifetime: float | None, **extra: object) -> dict[str, object]:
    return {
        "state": "valid",
        "refresh_expires_at": (NOW + timedelta(seconds=left)).isoformat(),
        "refresh_lifetime": lifetime,
        **extra,
    }


def test_a_one_hour_refresh_token_kept_alive_is_not_expiring_by_default() -> None:
    assert classify(_row(1800, 3600), horizon=None, now=NOW) == "ok"  # half its life left
    assert classify(_row(600, 3600), horizon=None, now=NOW) == "expiring"  # under a quarter: the keeper stopped


def test_long_lifetimes_use_the_day_and_an_explicit_horizon_wins() -> None:
    assert classify(_row(DEFAULT_HORIZON - 60, 30 * 86400), horizon=None, now=NOW) == "expiring"
    assert classify(_row(2 * 86400, 30 * 86400), horizon=None, now=NOW) == "ok"
    assert classify(_row(1800, 3600), horizon=3600, now=NOW) == "expiring"


def test_a_reauthorization_deadline_is_judged_by_the_whole_day() -> None:
    row = _row(20 * 3600, 30 * 86400, reauth_deadline=(NOW + timedelta(hours=20)).isoformat())
    assert classify(row, horizon=None, now=NOW) == "expiring"
    assert classify(_row(20 * 3600, 3 * 86400), horizon=None, now=NOW) == "ok"  # a quarter is 18 h
