"""The token health page's decisions and HTML, without Airflow: states, fixes, error rows, redaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from airflow_provider_tokenrefresh.errors import ConfigurationError, StoreError
from airflow_provider_tokenrefresh.plugins.health_page import render_page
from airflow_provider_tokenrefresh.plugins.health_rows import (
    error_field,
    human_seconds,
    row_from_error,
    row_from_status,
    summary,
)
from airflow_provider_tokenrefresh.tokens import TokenRecord, TokenSet

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET_RT = "rt-CANARY-5f1c2e9a77d04b"
SECRET_AT = "at-CANARY-0a9d8c7b6e5f41"
CLIENT_SECRET = "cs-CANARY-3b2a19f0c8d7e6"


def _record(**update: object) -> TokenRecord:
    answer = TokenSet(
        access_token=SECRET_AT,
        expires_at=NOW + timedelta(hours=1),
        refresh_token=SECRET_RT,
        refresh_expires_at=NOW + timedelta(days=30),
        obtained_at=NOW - timedelta(minutes=5),
    )
    record = TokenRecord.seeded("seed-rt-0000000000").advanced(answer)
    return record.model_copy(update=update) if update else record


def _status(record: TokenRecord, conn_id: str = "vendor_a") -> dict[str, object]:
    return {
        "conn_id": conn_id,
        "dialect": "oauth2_basic",
        "store": "variable",
        "lock": "file",
        **record.status(NOW),
    }


def _row(record: TokenRecord, **kwargs: object):  # type: ignore[no-untyped-def]
    return row_from_status(
        _status(record),
        conn_type="tokenrefresh_oauth2_basic",
        now=NOW,
        secrets=[SECRET_RT, SECRET_AT, CLIENT_SECRET],
        **kwargs,
    )


def test_valid_record_is_ok_with_nothing_to_do() -> None:
    row = _row(_record())
    assert row.health == "ok" and row.problems == [] and row.fix is None
    assert row.access_expires_in == 3600.0
    assert row.refresh_expires_in == 30 * 86400.0
    assert row.last_refresh_at == (NOW - timedelta(minutes=5)).isoformat(timespec="seconds")
    assert (row.store, row.lock, row.dialect, row.generation) == ("variable", "file", "oauth2_basic", 1)


def test_reauth_required_says_to_reseed_the_connection() -> None:
    row = _row(_record().with_error("invalid_grant: refresh token revoked", reauth=True, now=NOW))
    assert row.health == "reauth_required"
    assert "extra 'refresh_token'" in (row.fix or "") and "vendor_a" in (row.fix or "")
    assert row.reason == "invalid_grant: refresh token revoked"


def test_refresh_token_inside_the_horizon_is_expiring_outside_it_is_not() -> None:
    record = _record(obtained_at=NOW - timedelta(days=28), refresh_expires_at=NOW + timedelta(days=2))
    assert _row(record).health == "expiring"
    assert "--force" in (_row(record).fix or "")
    assert _row(record, refresh_token_horizon=86400.0).health == "ok"


@pytest.mark.parametrize(
    ("left", "health"), [(timedelta(minutes=50), "ok"), (timedelta(minutes=10), "expiring")]
)
def test_a_short_lived_refresh_token_is_judged_by_a_quarter_of_its_life(left: timedelta, health: str) -> None:
    """A one-hour refresh token always lapses "within 7 days": like the keeper's warning and
    ``status``, the page flags it only once less than a quarter of its life (15 min) is left."""
    record = _record(obtained_at=NOW + left - timedelta(hours=1), refresh_expires_at=NOW + left)
    assert _status(record)["refresh_lifetime"] == 3600.0
    assert _row(record).health == health


def test_a_capped_chain_asks_for_re_authorization_not_a_refresh() -> None:
    deadline = NOW + timedelta(days=2)
    row = _row(_record(refresh_expires_at=deadline, reauth_deadline=deadline))
    assert row.health == "expiring"
    assert "Re-authorize" in (row.fix or "") and "refreshing does not help" in (row.fix or "")
    assert "--force" not in (row.fix or "")


def test_lapsed_refresh_token_is_expired() -> None:
    row = _row(_record(refresh_expires_at=NOW - timedelta(hours=3)))
    assert row.health == "expired" and "Re-authorize" in (row.fix or "")
    assert row.refresh_expires_in == -3 * 3600.0


def test_refresh_in_flight_is_shown_and_stalls_after_the_bound() -> None:
    young = _record(refresh_started_at=NOW - timedelta(seconds=4), refresh_started_by="worker-7:1234")
    row = _row(young)
    assert row.health == "refreshing" and row.problems == []
    assert (row.in_flight_by, row.in_flight_for) == ("worker-7:1234", 4.0)
    old = _record(refresh_started_at=NOW - timedelta(hours=1), refresh_started_by="worker-7:1234")
    stalled = _row(old)
    assert stalled.health == "stalled" and "worker-7:1234" in (stalled.fix or "")


def test_suspect_and_warnings_and_degraded() -> None:
    assert _row(_record(state="suspect", reason="lost race")).health == "suspect"
    warned = _row(_record(file_lock_hosts=("a:/x", "b:/x")))
    assert warned.health == "warning" and "redis" in (warned.fix or "") and len(warned.warnings) == 1
    failed = _row(_record(last_error="vendor answered HTTP 503", last_error_at=NOW))
    assert failed.health == "degraded" and failed.last_error == "vendor answered HTTP 503"
    # An error older than the last refresh is history, not a problem.
    assert _row(_record(last_error="old", last_error_at=NOW - timedelta(days=1))).health == "ok"


def test_worst_problem_comes_first() -> None:
    record = _record(refresh_expires_at=NOW + timedelta(days=1), file_lock_hosts=("a:/x", "b:/x"))
    row = _row(record.with_error("rejected", reauth=True, now=NOW))
    assert [p.kind for p in row.problems] == ["reauth_required", "warning"]


def test_texts_holding_a_secret_are_redacted() -> None:
    record = _record().with_error(f"vendor echoed {SECRET_RT} and {CLIENT_SECRET}", reauth=True, now=NOW)
    row = _row(record)
    dumped = json.dumps(row.to_json())
    for secret in (SECRET_RT, SECRET_AT, CLIENT_SECRET):
        assert secret not in dumped
    assert "vendor echoed" in (row.reason or "")


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (
            "connection 'x': extra field 'refresh_token' (the initial refresh token) is required",
            "extra 'refresh_token'",
        ),
        ("connection 'x': field 'host' (Base URL) is required, e.g. https://vendor.example", "host"),
        (
            "connection 'x': extra.refresh_margin: Input should be greater than or equal to 0",
            "extra 'refresh_margin'",
        ),
        ("connection 'x': conn_type 'tokenrefresh_nope' is not one of: ...", "conn_type"),
        ("something else", None),
    ],
)
def test_error_field_names_the_field(message: str, field: str | None) -> None:
    assert error_field(message) == field


def test_error_rows_name_connection_and_field() -> None:
    conf = row_from_error(
        "bad_conf",
        ConfigurationError(
            "connection 'bad_conf': extra field 'access_token' (the initial access token) is required"
        ),
        conn_type="tokenrefresh_bearer_json",
    )
    assert (conf.health, conf.error_field, conf.state) == ("misconfigured", "extra 'access_token'", "error")
    assert "bad_conf" in (conf.fix or "") and "extra 'access_token'" in (conf.fix or "")
    store = row_from_error(
        "bad_store", StoreError("reading the vault store failed: ConnectError"), conn_type="t", store="vault"
    )
    assert store.health == "store_error" and "vault" in (store.fix or "")
    record = row_from_error(
        "bad_record",
        ConfigurationError("Variable 'tokenrefresh_token__bad_record' cannot be read as a token record. ..."),
        conn_type="t",
    )
    assert record.health == "store_error" and "fernet_key" in (record.fix or "")
    for text in (
        "Variable 'tokenrefresh_token__k' exists in the metadata database but reads as empty here: this "
        "component's [core] fernet_key cannot decrypt it (every component must share one...",
        "Variable 'trf_record__k' holds a sealed token record that this component's [core] fernet_key "
        "cannot open: every component must share one fernet_key...",
    ):
        other_key = row_from_error("k", ConfigurationError(text), conn_type="t", store="sealed_variable")
        assert other_key.health == "store_error" and "fernet_key" in (other_key.fix or ""), text
    moved = row_from_error(
        "k",
        ConfigurationError(
            "Variable 'tokenrefresh_token__k' is a tombstone: this connection's token record moved to Variable "
            "'trf_record__k' (extra 'store': 'sealed_variable')..."
        ),
        conn_type="t",
        store="variable",
    )
    assert moved.health == "store_error" and "'sealed_variable'" in (moved.fix or ""), moved.fix
    crypt = row_from_error("bad_key", ValueError("InvalidToken"), conn_type="t", field_name="password")
    assert (crypt.health, crypt.error_field) == ("misconfigured", "password")
    other = row_from_error(
        "odd", RuntimeError(f"boom {CLIENT_SECRET}"), conn_type="t", secrets=[CLIENT_SECRET]
    )
    assert other.health == "error" and CLIENT_SECRET not in (other.last_error or "")


def test_summary_counts_worst_first_and_human_seconds() -> None:
    rows = [_row(_record()), _row(_record()), row_from_error("x", StoreError("down"), conn_type="t")]
    assert list(summary(rows).items()) == [("store_error", 1), ("ok", 2)]
    assert [human_seconds(s) for s in (5, 125, 7200, 90000, -300, None)] == [
        "5s",
        "2m",
        "2h",
        "1d 1h",
        "5m ago",
        "unknown",
    ]


def test_html_escapes_every_value_and_shows_each_row() -> None:
    evil = _record().with_error("<script>alert(1)</script>", reauth=True, now=NOW)
    rows = [_row(evil), row_from_error("other<b>", StoreError("x"), conn_type="t")]
    html = render_page(
        rows,
        generated_at=NOW.isoformat(),
        user="op<1>",
        json_href="health.json",
        refresh_token_horizon=7 * 86400,
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "other&lt;b&gt;" in html and "op&lt;1&gt;" in html
    assert html.count("<tr ") == 2 and 'data-health="reauth_required"' in html
    for secret in (SECRET_RT, SECRET_AT, CLIENT_SECRET):
        assert secret not in html
    empty = render_page([], generated_at="t", user="u", json_href="j", refresh_token_horizon=1)
    assert "No tokenrefresh_* connection you may read" in empty
