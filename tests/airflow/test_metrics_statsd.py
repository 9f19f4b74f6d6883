"""Metrics from real tasks and a real trigger, through Airflow's own StatsD settings, received by a
real UDP receiver on 127.0.0.1 in this process (the session deployment sends there; conftest.py)."""

from __future__ import annotations

import pytest

from airflow_provider_tokenrefresh.testing import OAuth2BasicEmulator
from airflow_provider_tokenrefresh.testing.connections import emulator_connection
from tests.statsd_receiver import Datagram

from .conftest import Deployment

pytestmark = pytest.mark.airflow

DAG_ID = "tokenrefresh_metrics"
P = "airflow.tokenrefresh."


def _of(datagrams: list[Datagram], conn_id: str, name: str, **tags: str) -> list[Datagram]:
    return [
        d
        for d in datagrams
        if d.name == P + name
        and d.tags.get("conn_id") == conn_id
        and all(d.tags.get(k) == v for k, v in tags.items())
    ]


def test_task_and_trigger_metrics_arrive_over_statsd(deployment: Deployment) -> None:
    import statsd  # noqa: F401 - a dev dependency Airflow's StatsD backend needs: fail loudly if missing

    receiver = deployment.statsd
    assert receiver is not None
    stack = deployment.stack
    # Own vendors: the 503s queued for the deferred sensor must meet no other test's request.
    emu, flaky = OAuth2BasicEmulator().start(), OAuth2BasicEmulator().start()
    try:
        ok_seed, revoked_seed, deferred_seed = emu.issue_tokens(), emu.issue_tokens(), flaky.issue_tokens()
        keep_ok_seed, keep_revoked_seed = emu.issue_tokens(), emu.issue_tokens()
        for seed in (revoked_seed, keep_revoked_seed):
            emu.revoke_family(emu.family_of(seed.refresh_token) or "", "user removed the app")
        conns = {
            "ok": "metrics_ok",
            "revoked": "metrics_revoked",
            "deferred": "metrics_deferred",
            "keep_ok": "metrics_keep_ok",
            "keep_revoked": "metrics_keep_revoked",
        }
        for name, vendor, seed in (
            ("ok", emu, ok_seed),
            ("revoked", emu, revoked_seed),
            ("deferred", flaky, deferred_seed),
            ("keep_ok", emu, keep_ok_seed),
            ("keep_revoked", emu, keep_revoked_seed),
        ):
            stack.put_connection(
                conns[name],
                "tokenrefresh_oauth2_basic",
                **emulator_connection(vendor, seed.refresh_token, None),
            )
        # The deferred sensor's in-task refresh (3 attempts) gets 503s: it defers, and the refresh
        # that succeeds is the trigger's, in the triggerer.
        flaky.inject("http_503", times=3)
        stack.wait_for_dag(DAG_ID)
        run_id = stack.trigger(DAG_ID, conns)
        state = stack.wait_run(DAG_ID, run_id, timeout=300)
        assert state == "success", stack.explain(DAG_ID, run_id)
        flaky_requests = flaky.refresh_requests
        assert flaky_requests == 4  # three answered 503, the fourth succeeded
    finally:
        emu.stop()
        flaky.stop()
    assert deployment.xcom(DAG_ID, run_id, "use_ok")["generation"] == 1
    assert deployment.xcom(DAG_ID, run_id, "use_revoked")["kind"] == "reauth_required"
    deferred_ti = next(
        ti for ti in stack.task_instances(DAG_ID, run_id) if ti["task_id"] == "wait_in_triggerer"
    )
    assert deferred_ti["state"] == "success"

    ok, revoked, deferred = conns["ok"], conns["revoked"], conns["deferred"]
    keep_ok, keep_revoked = conns["keep_ok"], conns["keep_revoked"]
    kept = deployment.xcom(DAG_ID, run_id, "keep")
    assert kept[keep_ok]["generation"] == 1 and kept[keep_revoked]["error_kind"] == "reauth_required", kept

    def complete(found: list[Datagram]) -> bool:
        return bool(
            _of(found, ok, "refresh_token.ttl")
            and _of(found, revoked, "reauth_required")
            and _of(found, deferred, "refresh.count", outcome="success")
            and _of(found, deferred, "access_token.ttl")
            and _of(found, keep_ok, "refresh_token.ttl")
            and _of(found, keep_revoked, "failure.count")
        )

    got = receiver.wait_for(complete, timeout=60)
    base = {"dialect": "oauth2_basic"}
    # The task that refreshed: one vendor request, timed; the lock wait; the gauges.
    (count,) = _of(got, ok, "refresh.count")
    assert (count.value, count.type, count.tags) == (1, "c", {"conn_id": ok, **base, "outcome": "success"})
    (duration,) = _of(got, ok, "refresh.duration")
    assert duration.type == "ms" and 0 < duration.value < 30_000 and duration.tags["outcome"] == "success"
    waits = _of(got, ok, "lock.wait", outcome="acquired")
    assert waits and all(d.type == "ms" and 0 <= d.value < 60_000 for d in waits)
    (access,) = _of(got, ok, "access_token.ttl")
    assert access.type == "g" and emu.access_ttl - 120 <= access.value <= emu.access_ttl
    (refresh_left,) = _of(got, ok, "refresh_token.ttl")
    assert refresh_left.type == "g" and refresh_left.value > 0
    assert [d.value for d in _of(got, ok, "reauth_required")] == [0]
    assert not _of(got, ok, "failure.count")
    # The task that met a revoked refresh token.
    assert [d.raw.split(":")[0] for d in _of(got, revoked, "refresh.count")] == [
        f"{P}refresh.count,conn_id={revoked},dialect=oauth2_basic,outcome=reauth_required"
    ]
    assert [(d.tags["kind"], d.value) for d in _of(got, revoked, "failure.count")] == [("reauth_required", 1)]
    assert 1 in [d.value for d in _of(got, revoked, "reauth_required")]
    # The deferred sensor: its in-task request failed (transient), the triggerer's succeeded.
    # The task checks once (one request), so every later request is the trigger's: at least the last.
    outcomes = [d.tags["outcome"] for d in _of(got, deferred, "refresh.count")]
    assert len(outcomes) == flaky_requests and len(outcomes) >= 2, outcomes
    assert outcomes[-1] == "success" and set(outcomes[:-1]) == {"transient"}, outcomes
    assert [d.tags["kind"] for d in _of(got, deferred, "failure.count")] == ["transient"] * (
        len(outcomes) - 1
    )
    # The keeper operator's concurrent refresh reports like the hook's own calls.
    assert [d.tags["outcome"] for d in _of(got, keep_ok, "refresh.count")] == ["success"]
    assert [d.value for d in _of(got, keep_ok, "reauth_required")] == [0]
    assert _of(got, keep_ok, "access_token.ttl") and not _of(got, keep_ok, "failure.count")
    assert [(d.tags["kind"], d.value) for d in _of(got, keep_revoked, "failure.count")] == [
        ("reauth_required", 1)
    ]
    assert 1 in [d.value for d in _of(got, keep_revoked, "reauth_required")]
    print("\n".join(d.raw for d in got if d.tags.get("conn_id") in conns.values()))
    # Never a secret in a name, tag or value.
    text = "\n".join(receiver.lines())
    for canary in (
        emu.client_secret,
        ok_seed.refresh_token,
        revoked_seed.refresh_token,
        deferred_seed.refresh_token,
        keep_ok_seed.refresh_token,
        keep_revoked_seed.refresh_token,
    ):
        assert canary not in text
