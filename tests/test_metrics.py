"""Metrics: the pure functions (what to emit for an outcome), the instrumented client and lock, and the
emitter through Airflow's real Stats to a real StatsD receiver and a real OTLP/HTTP receiver on
127.0.0.1 (each in a child process: Stats is configured once per process, from the environment)."""

from __future__ import annotations

import contextlib
import http.server
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokenrefresh import metrics
from airflow_provider_tokenrefresh.errors import (
    LockTimeout,
    RefreshTokenRejected,
    StoreError,
    TransientRefreshError,
)
from airflow_provider_tokenrefresh.tokens import TokenRecord
from tests.statsd_receiver import StatsdReceiver, parse

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CANARY_RT = "CANARY-refresh-token-5f1e2d3c4b"
CANARY_AT = "CANARY-access-token-9a8b7c6d5e"


def _record(**update: Any) -> TokenRecord:
    base = TokenRecord.seeded(CANARY_RT, CANARY_AT).model_copy(
        update={
            "expires_at": NOW + timedelta(seconds=120.7),
            "refresh_expires_at": NOW + timedelta(hours=1),
            "obtained_at": NOW - timedelta(seconds=10),
            "generation": 3,
        }
    )
    return base.model_copy(update=update)


def _by_name(points: list[metrics.Point]) -> dict[str, metrics.Point]:
    return {p.name: p for p in points}


def test_record_gauges_are_whole_seconds_left_and_reauth_flag() -> None:
    points = _by_name(metrics.record_points("crm", "oauth2_basic", _record(), NOW))
    tags = {"conn_id": "crm", "dialect": "oauth2_basic"}
    assert points[metrics.ACCESS_TTL] == metrics.Point("gauge", metrics.ACCESS_TTL, 120.0, tags)
    assert points[metrics.REFRESH_TTL] == metrics.Point("gauge", metrics.REFRESH_TTL, 3600.0, tags)
    assert points[metrics.REAUTH_REQUIRED] == metrics.Point("gauge", metrics.REAUTH_REQUIRED, 0, tags)


def test_record_gauges_expired_unknown_and_reauth() -> None:
    expired = _record(expires_at=NOW - timedelta(hours=2), refresh_expires_at=None, state="reauth_required")
    points = _by_name(metrics.record_points("crm", "oauth2_basic", expired, NOW))
    assert points[metrics.ACCESS_TTL].value == 0.0  # expired: 0, never a negative gauge
    assert metrics.REFRESH_TTL not in points  # the vendor states no expiry: nothing made up
    assert points[metrics.REAUTH_REQUIRED].value == 1
    seed_only = TokenRecord.seeded(CANARY_RT)  # no access token yet: its time left is unknown
    assert metrics.ACCESS_TTL not in _by_name(metrics.record_points("crm", None, seed_only, NOW))


def test_vendor_call_points_count_and_time_by_outcome() -> None:
    ok = metrics.vendor_call_points("crm", "oauth2_post", 0.25, None)
    assert [(p.kind, p.name, p.value, p.tags["outcome"]) for p in ok] == [
        ("incr", metrics.REFRESH_COUNT, 1, "success"),
        ("timing", metrics.REFRESH_DURATION, 0.25, "success"),
    ]
    failed = metrics.vendor_call_points("crm", "oauth2_post", 1.5, TransientRefreshError("HTTP 503"))
    assert {p.tags["outcome"] for p in failed} == {"transient"}
    assert failed[0].tags == {"conn_id": "crm", "dialect": "oauth2_post", "outcome": "transient"}


def test_failure_points_by_kind_and_reauth_gauge() -> None:
    rejected = _by_name(metrics.failure_points("crm", "query_basic", RefreshTokenRejected("invalid_grant")))
    assert rejected[metrics.FAILURE_COUNT].tags["kind"] == "reauth_required"
    assert rejected[metrics.REAUTH_REQUIRED].value == 1
    store = metrics.failure_points("crm", "query_basic", StoreError("vault down"))
    assert [(p.name, p.tags["kind"]) for p in store] == [(metrics.FAILURE_COUNT, "store")]
    other = metrics.failure_points("crm", None, ValueError("boom"))
    assert other[0].tags == {"conn_id": "crm", "dialect": "unknown", "kind": "unexpected"}
    timeout = metrics.failure_points("crm", "query_basic", LockTimeout("busy"))
    assert timeout[0].tags["kind"] == "lock_timeout"


def test_tag_values_are_safe_for_every_backend() -> None:
    assert metrics.tag_value("a,b=c:d e/f") == "a_b_c_d_e_f"
    assert metrics.tag_value("") == "unknown"
    assert metrics.tag_value("x" * 300) == "x" * 100
    assert metrics.tag_value("vendor_oauth2-basic.eu") == "vendor_oauth2-basic.eu"


def test_no_secret_in_any_point() -> None:
    record = _record()
    error = RefreshTokenRejected(f"Invalid refresh token: {CANARY_RT}")  # a vendor echoing the token
    points = [
        *metrics.record_points("crm", "oauth2_basic", record, NOW),
        *metrics.failure_points("crm", "oauth2_basic", error),
        *metrics.vendor_call_points("crm", "oauth2_basic", 0.1, error),
        *metrics.lock_wait_points("crm", "oauth2_basic", 0.01, "acquired"),
    ]
    text = repr(points)
    assert len(points) == 8
    assert CANARY_RT not in text and CANARY_AT not in text and "Invalid" not in text
    assert {p.name for p in points} <= set(metrics.NAMES)


class _Client:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls: list[tuple[str, str | None]] = []

    def refresh(self, refresh_token: str, access_token: str | None = None) -> str:
        self.calls.append((refresh_token, access_token))
        if self.error is not None:
            raise self.error
        return "answer"


def test_instrumented_client_reports_each_call_and_keeps_its_type() -> None:
    seen: list[tuple[float, BaseException | None]] = []
    client = _Client(None)
    metrics.instrument_client(client, lambda s, e: seen.append((s, e)))
    assert isinstance(client, _Client)
    assert client.refresh("rt", "at") == "answer"
    failing = _Client(TransientRefreshError("503"))
    metrics.instrument_client(failing, lambda s, e: seen.append((s, e)))
    with pytest.raises(TransientRefreshError):
        failing.refresh("rt")
    assert [type(e).__name__ if e else None for _, e in seen] == [None, "TransientRefreshError"]
    assert all(s >= 0 for s, _ in seen)
    assert client.calls == [("rt", "at")]


def test_a_broken_observer_never_breaks_the_call() -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("observer bug")

    client = _Client(None)
    metrics.instrument_client(client, broken)
    assert client.refresh("rt") == "answer"


def test_instrumented_lock_times_the_wait_and_passes_errors_through(tmp_path: Path) -> None:
    from airflow_provider_tokenrefresh.locks.file import FileRefreshLock

    seen: list[tuple[float, str]] = []
    holder = FileRefreshLock(str(tmp_path))
    waiter = FileRefreshLock(str(tmp_path))
    metrics.instrument_lock(waiter, lambda s, o: seen.append((s, o)))
    assert type(waiter) is FileRefreshLock and waiter.name == "file"
    with waiter.hold("k", 1.0) as lease:
        assert lease.key == "k"
    taken = threading.Event()
    release = threading.Event()

    def hold_it() -> None:
        with holder.hold("k", 5.0):
            taken.set()
            release.wait(30)

    thread = threading.Thread(target=hold_it)
    thread.start()
    try:
        assert taken.wait(30)
        with pytest.raises(LockTimeout), waiter.hold("k", 0.3):
            pass
    finally:
        release.set()
        thread.join(30)
    with pytest.raises(KeyError), waiter.hold("k", 1.0):  # the body's error reaches the caller
        raise KeyError("body")
    with waiter.hold("k", 1.0):  # ... and the lock was released on the way out
        pass
    assert [o for _, o in seen] == ["acquired", "timeout", "acquired", "acquired"]
    assert seen[1][0] >= 0.3  # the timed-out wait took its whole timeout


_CHILD = """
from airflow_provider_tokenrefresh import metrics
from airflow_provider_tokenrefresh.errors import RefreshTokenRejected
from airflow_provider_tokenrefresh.tokens import TokenRecord, utcnow
from datetime import timedelta
m = metrics.ConnectionMetrics("crm_eu", "oauth2_basic")
m.vendor_call(0.25, None)
m.vendor_call(0.5, RefreshTokenRejected("invalid_grant"))
m.failure(RefreshTokenRejected("invalid_grant"))
m.lock_wait(0.002, "acquired")
now = utcnow()
m.record(TokenRecord.seeded("rt", "at").model_copy(update={
    "expires_at": now + timedelta(seconds=900.5), "refresh_expires_at": now + timedelta(days=2)}))
print(getattr(metrics.stats_backend(), "__name__", ""))
"""


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "OTEL_"))}
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_statsd_datagrams_from_airflow_stats_with_influxdb_tags() -> None:
    import statsd  # noqa: F401 - a dev dependency Airflow's StatsD backend needs: fail loudly if missing
    receiver = StatsdReceiver()
    try:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD],
            env=_child_env(receiver.airflow_env()),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        # The task SDK's Stats: a module on Airflow 3.3, a class of airflow.sdk.observability on 3.2.
        import airflow
        from packaging.version import Version

        expected = "airflow.sdk.observability.stats" if Version(airflow.__version__) >= Version("3.3") else "Stats"
        assert out.stdout.strip() == expected
        got = receiver.wait_for(lambda d: len(d) >= 8, timeout=30)
    finally:
        receiver.close()
    lines = sorted(d.raw for d in got)
    base = "conn_id=crm_eu,dialect=oauth2_basic"
    assert f"airflow.tokenrefresh.refresh.count,{base},outcome=success:1|c" in lines
    assert f"airflow.tokenrefresh.refresh.count,{base},outcome=reauth_required:1|c" in lines
    assert f"airflow.tokenrefresh.refresh.duration,{base},outcome=success:250.000000|ms" in lines
    assert f"airflow.tokenrefresh.failure.count,{base},kind=reauth_required:1|c" in lines
    assert f"airflow.tokenrefresh.reauth_required,{base}:1|g" in lines
    assert f"airflow.tokenrefresh.reauth_required,{base}:0|g" in lines
    assert f"airflow.tokenrefresh.lock.wait,{base},outcome=acquired:2.000000|ms" in lines
    access = next(d for d in got if d.name == "airflow.tokenrefresh.access_token.ttl")
    assert (
        access.type == "g"
        and 890 <= access.value <= 900
        and access.tags
        == {
            "conn_id": "crm_eu",
            "dialect": "oauth2_basic",
        }
    )
    refresh = next(d for d in got if d.name == "airflow.tokenrefresh.refresh_token.ttl")
    assert 2 * 86400 - 60 <= refresh.value <= 2 * 86400


def test_parse_reads_influxdb_style_lines() -> None:
    d = parse("airflow.tokenrefresh.lock.wait,conn_id=a,dialect=b,outcome=timeout:300.5|ms")
    assert d is not None and d.name == "airflow.tokenrefresh.lock.wait" and d.value == 300.5
    assert d.tags == {"conn_id": "a", "dialect": "b", "outcome": "timeout"} and d.type == "ms"


class _Otlp(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes]
    arrived: threading.Event

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).bodies.append(body)
        type(self).arrived.set()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _otlp_points(bodies: list[bytes]) -> dict[str, list[dict[str, Any]]]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    found: dict[str, list[dict[str, Any]]] = {}
    for body in bodies:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    data = metric.WhichOneof("data")
                    for point in getattr(metric, data).data_points:
                        attrs = {a.key: a.value.string_value for a in point.attributes}
                        value = (
                            point.as_int or point.as_double
                            if data in ("sum", "gauge")
                            else point.count  # histograms: how many observations
                        )
                        found.setdefault(metric.name, []).append({"attrs": attrs, "value": value})
    return found


def test_opentelemetry_backend_gets_the_same_names_with_attributes() -> None:
    import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2  # noqa: F401 - fail loudly if missing
    handler = type("Handler", (_Otlp,), {"bodies": [], "arrived": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        subprocess.run(
            [sys.executable, "-c", _CHILD],
            env=_child_env(
                {
                    "AIRFLOW__METRICS__OTEL_ON": "True",
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{port}/v1/metrics",
                    "OTEL_METRIC_EXPORT_INTERVAL": "600000",  # only the flush at exit
                }
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert handler.arrived.wait(30), "no OTLP export arrived"
    finally:
        with contextlib.suppress(Exception):
            server.shutdown()
        server.server_close()
    found = _otlp_points(handler.bodies)
    base = {"conn_id": "crm_eu", "dialect": "oauth2_basic"}
    outcomes = {p["attrs"]["outcome"]: p["value"] for p in found["airflow.tokenrefresh.refresh.count"]}
    assert outcomes == {"success": 1, "reauth_required": 1}
    assert found["airflow.tokenrefresh.failure.count"] == [
        {"attrs": {**base, "kind": "reauth_required"}, "value": 1}
    ]
    assert {p["attrs"]["outcome"] for p in found["airflow.tokenrefresh.refresh.duration"]} == {
        "success",
        "reauth_required",
    }
    assert found["airflow.tokenrefresh.lock.wait"][0]["attrs"] == {**base, "outcome": "acquired"}
    (access,) = found["airflow.tokenrefresh.access_token.ttl"]
    assert access["attrs"] == base and 890 <= access["value"] <= 900
    ours = {name for name in found if "tokenrefresh" in name}
    assert ours == {f"airflow.{name}" for name in metrics.NAMES}  # all seven, nothing else of ours
