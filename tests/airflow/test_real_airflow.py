"""The provider on real Airflow 3.3 components (not `airflow dags test`): connections in the UI
metadata, the example DAGs against every emulated vendor, deferral to the triggerer, persisted
rotation, masking in real task logs, the connection test in the api-server, and the CLI.

The deployment is shared by the session, but no test relies on another having run first: each
one seeds the connections it uses from a fresh token family, with no stored record left from
earlier tests, and runs whatever it inspects."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokenrefresh.testing.stack import COMPONENTS

from .conftest import DIALECTS, Deployment

pytestmark = pytest.mark.airflow

LABELS = {
    "tokenrefresh_oauth2_basic": ("Client ID", "Client secret"),
    "tokenrefresh_oauth2_post": ("Client ID", "Client secret"),
    "tokenrefresh_query_basic": ("Client ID", "Client secret"),
    "tokenrefresh_appid_json": ("App ID", "Secret"),
    "tokenrefresh_custom": ("Client ID", "Client secret"),
}


def test_hook_meta_declares_the_fields_of_every_connection_type(deployment: Deployment) -> None:
    with deployment.stack.api() as api:
        response = api.get("/ui/connections/hook_meta")
    assert response.status_code == 200
    metas = {
        m["connection_type"]: m for m in response.json() if m["connection_type"].startswith("tokenrefresh_")
    }
    assert sorted(metas) == sorted(f"tokenrefresh_{d}" for d in [*DIALECTS, "custom"])
    for conn_type, meta in metas.items():
        extra = meta["extra_fields"]
        assert extra["refresh_token"]["schema"]["format"] == "password"
        assert extra["access_token"]["schema"]["format"] == "password"
        assert extra["endpoint"]["schema"]["title"] == "Endpoint path"
        assert meta["standard_fields"]["host"]["title"] == "Base URL"
        if conn_type == "tokenrefresh_bearer_json":
            assert meta["standard_fields"]["login"]["hidden"] is True
            assert meta["standard_fields"]["password"]["hidden"] is True
        else:
            login, password = LABELS[conn_type]
            assert meta["standard_fields"]["login"]["title"] == login
            assert meta["standard_fields"]["password"]["title"] == password
    assert "dialect" in metas["tokenrefresh_custom"]["extra_fields"]
    assert "dialect" not in metas["tokenrefresh_oauth2_basic"]["extra_fields"]


def _fresh(deployment: Deployment, dialect: str) -> Any:
    """Seed ``dialect``'s connection with a new token family and no stored record (generation 0)."""
    with deployment.stack.api() as api:
        response = api.delete(f"/api/v2/variables/tokenrefresh_token__{deployment.conn_id(dialect)}")
    assert response.status_code in (204, 404), response.status_code
    return deployment.seed_connection(dialect)


def _run(deployment: Deployment, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    """Trigger ``dag_id``, wait for it, insist on success; return the run id."""
    stack = deployment.stack
    run_id = stack.trigger(dag_id, conf)
    state = stack.wait_run(dag_id, run_id, timeout=300)
    assert state == "success", stack.explain(dag_id, run_id)
    return run_id


def _settle(deployment: Deployment, dag_id: str, timeout: float = 300) -> None:
    """Wait until no run of ``dag_id`` is queued or running. Unpausing example_token_keeper (it has
    a schedule) also starts its scheduled run, which refreshes too: let it finish first."""
    import time

    deadline = time.monotonic() + timeout
    with deployment.stack.api() as api:
        while time.monotonic() < deadline:
            runs = api.get(f"/api/v2/dags/{dag_id}/dagRuns").json()["dag_runs"]
            if not any(run["state"] in ("queued", "running") for run in runs):
                return
            time.sleep(1)
    raise AssertionError(f"runs of {dag_id} still active after {timeout}s")


def _xcom(deployment: Deployment, dag_id: str, run_id: str, task_id: str) -> object:
    with deployment.stack.api() as api:
        response = api.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        )
    response.raise_for_status()
    return response.json()["value"]


def test_consumer_dag_defers_refreshes_in_the_triggerer_and_calls_every_vendor(
    deployment: Deployment,
) -> None:
    stack = deployment.stack
    seeds = {d: _fresh(deployment, d) for d in DIALECTS}
    for emu in deployment.emulators.values():
        emu.reset_counters()
        # The vendor is briefly down: the sensor's first check in the worker fails (503), so it
        # defers and the refresh happens in the triggerer once the vendor is back.
        emu.inject("http_503")
    run_id = stack.trigger("example_token_consumer")
    state = stack.wait_run("example_token_consumer", run_id, timeout=300)
    assert state == "success", stack.explain("example_token_consumer", run_id)
    states = {ti["task_id"]: ti["state"] for ti in stack.task_instances("example_token_consumer", run_id)}
    for dialect in DIALECTS:
        conn_id = deployment.conn_id(dialect)
        emu = deployment.emulators[dialect]
        assert states[f"wait_{conn_id}"] == "success"
        assert states[f"call_{conn_id}"] == "success"
        # The sensor's result is the trigger's event: only TokenValidTrigger produces "checks".
        event = _xcom(deployment, "example_token_consumer", run_id, f"wait_{conn_id}")
        assert isinstance(event, dict)
        assert event["status"] == "success"
        assert event["checks"] >= 1
        assert emu.counters.get("fault:http_503") == 1, emu.counters  # the worker's attempt
        assert emu.counters.get("ok") == 1, emu.counters  # exactly one refresh per vendor
        assert emu.counters.get("invalid_grant", 0) == 0
        assert emu.counters.get("sample:ok") == 1
        stored = deployment.stored_refresh_token(dialect)
        assert stored is not None
        assert stored != seeds[dialect].refresh_token  # the rotated token was persisted
        assert emu.is_refresh_token_valid(stored)
        # The refresh happened in the triggerer: its log is the trigger log of the sensor's try.
        trigger_logs = list(
            (
                stack.home
                / "logs"
                / "dag_id=example_token_consumer"
                / f"run_id={run_id}"
                / f"task_id=wait_{conn_id}"
            ).glob("attempt=*.log.trigger.*.log")
        )
        assert trigger_logs, f"no trigger log for wait_{conn_id}"
        trigger_log = "\n".join(p.read_text() for p in trigger_logs)
        assert f"Token refreshed for {conn_id}: generation 1" in trigger_log
        assert "Trigger fired event" in trigger_log


def test_second_run_uses_the_persisted_token_not_the_connection_seed(deployment: Deployment) -> None:
    seeds = {d: _fresh(deployment, d) for d in DIALECTS}
    # The first run spends each seed: the vendor rotates, the seed is dead from now on.
    _run(deployment, "example_token_keeper", {"force": True})
    _settle(deployment, "example_token_keeper")
    before = {d: deployment.stored_refresh_token(d) for d in DIALECTS}
    for dialect in DIALECTS:
        stored = before[dialect]
        assert stored is not None and stored != seeds[dialect].refresh_token
        assert not deployment.emulators[dialect].is_refresh_token_valid(seeds[dialect].refresh_token)
    revoked_before = {d: deployment.emulators[d].families_revoked for d in DIALECTS}
    for emu in deployment.emulators.values():
        emu.reset_counters()
    run_id = _run(deployment, "example_token_keeper", {"force": True})
    result = _xcom(deployment, "example_token_keeper", run_id, "refresh_tokens")
    assert isinstance(result, dict)
    for dialect in DIALECTS:
        emu = deployment.emulators[dialect]
        assert emu.counters.get("ok", 0) >= 1
        # Sending the dead seed would have been a reuse: invalid_grant and a revoked family.
        assert emu.counters.get("invalid_grant", 0) == 0
        assert emu.families_revoked == revoked_before[dialect]
        assert emu.requests, "the second run sent nothing"
        for request in emu.requests:
            assert request.body.find(seeds[dialect].refresh_token.encode()) == -1
            assert seeds[dialect].refresh_token not in request.query
        after = deployment.stored_refresh_token(dialect)
        assert after != before[dialect]
        assert after is not None and emu.is_refresh_token_valid(after)
        status = result[deployment.conn_id(dialect)]
        assert status["refreshed"] is True
        assert status["generation"] >= 2


def test_a_careless_print_of_the_token_is_masked_in_the_real_task_log(deployment: Deployment) -> None:
    stack = deployment.stack
    _fresh(deployment, "oauth2_basic")
    run_id = _run(deployment, "careless_consumer", {"conn_id": deployment.conn_id("oauth2_basic")})
    log = stack.run_logs("careless_consumer", run_id)
    assert "careless print of the token: ***" in log
    assert "careless log of the token: ***" in log
    assert isinstance(_xcom(deployment, "careless_consumer", run_id, "careless"), int)


# The careless DAG's own two messages, up to the token it prints (one word).
_CARELESS_PRINT = re.compile(r"(careless (?:print|log) of the token: )\S+")


def _everything_logged(deployment: Deployment) -> str:
    """Every task and trigger log, unfiltered, and every component's output. Airflow 3.3.2's
    LocalExecutor echoes task output to the scheduler's stdout *without* masking: there, and only
    there, the token the careless DAG prints on purpose is cut out (the rest of its lines stays)."""
    stack = deployment.stack
    parts = [p.read_text(errors="replace") for p in sorted((stack.home / "logs").rglob("*")) if p.is_file()]
    for name in COMPONENTS:
        output = stack.output(name)
        if name == "scheduler":
            output = _CARELESS_PRINT.sub(r"\1<printed by careless_consumer>", output)
        parts.append(output)
    return "\n".join(parts)


def test_no_canary_in_any_log_xcom_or_rendered_field(deployment: Deployment) -> None:
    stack = deployment.stack
    # Refresh activity of its own: every vendor through a task, and the careless DAG's prints.
    for dialect in DIALECTS:
        _fresh(deployment, dialect)
    _run(deployment, "example_token_keeper", {"force": True})
    careless_run = _run(deployment, "careless_consumer", {"conn_id": deployment.conn_id("oauth2_basic")})
    canaries = deployment.canaries()
    assert len(canaries) >= 3 * len(DIALECTS)
    everything = _everything_logged(deployment)
    assert "Refresh" in everything  # the logs really hold the refresh activity
    # The careless task's own log is read whole: its prints are there, masked.
    assert "careless print of the token: ***" in stack.run_logs("careless_consumer", careless_run)
    with stack.api() as api:
        for dag_id in ("example_token_consumer", "example_token_keeper", "careless_consumer"):
            runs = api.get(f"/api/v2/dags/{dag_id}/dagRuns").json()["dag_runs"]
            for run in runs:
                tis = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances").json()
                everything += json.dumps(tis)
                xcoms = api.get(
                    f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/~/xcomEntries",
                    params={"deserialize": True},
                ).json()
                everything += json.dumps(xcoms)
    leaked = [_where(everything, c) for c in canaries if c in everything]
    assert leaked == []


def _where(text: str, secret: str) -> str:
    """Context around a leaked secret, with the secret itself hidden (for the failure message)."""
    at = text.index(secret)
    return text[max(0, at - 300) : at].replace(secret, "<CANARY>") + "<CANARY>"


def test_connection_test_button_runs_in_the_api_server(deployment: Deployment) -> None:
    emu = deployment.emulators["appid_json"]
    seed = emu.issue_tokens()
    conn_id = f"ui_test_appid_{uuid.uuid4().hex[:8]}"  # a connection never tested before
    body = {
        "connection_id": conn_id,
        "conn_type": "tokenrefresh_appid_json",
        "host": emu.base_url,
        "login": emu.client_id,
        "password": emu.client_secret,
        "extra": json.dumps({"refresh_token": seed.refresh_token, "allow_insecure_http": True}),
    }
    with deployment.stack.api() as api:
        ok = api.post("/api/v2/connections/test", json=body).json()
        bad = api.post("/api/v2/connections/test", json={**body, "password": "wrong-secret-123"}).json()
    assert ok["status"] is True, ok
    assert "generation 1" in ok["message"]
    assert f"key tokenrefresh_token__{conn_id}" in ok["message"]  # under the real id, not the transient one
    assert bad["status"] is False
    assert "100208" in bad["message"]
    assert "wrong-secret-123" not in bad["message"]
    assert not emu.is_refresh_token_valid(seed.refresh_token)  # rotated: the seed is spent ...
    stored = deployment.stored_refresh_token_of(conn_id)
    assert stored is not None and stored != seed.refresh_token  # ... the new one was stored ...
    assert emu.is_refresh_token_valid(stored)  # ... and the vendor takes it
    for message in (ok["message"], bad["message"]):
        assert seed.refresh_token not in message and stored not in message


def _cli(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("airflow-tokenrefresh"))
    return subprocess.run(
        [exe, *args], env=deployment.stack.env(), capture_output=True, text=True, check=False
    )


def test_cli_status_and_refresh_share_the_store_with_tasks(deployment: Deployment) -> None:
    conn_id = deployment.conn_id("query_basic")
    _fresh(deployment, "query_basic")
    # A task stores the record first; the CLI then reads and refreshes that same record.
    _run(deployment, "example_token_keeper", {"conn_ids": [conn_id], "force": True})
    _settle(deployment, "example_token_keeper")
    before = json.loads(_cli(deployment, "status", "--json", conn_id).stdout)[0]
    assert before["generation"] >= 1  # 2 when the DAG's scheduled run (all connections) refreshed too
    refreshed = _cli(deployment, "refresh", conn_id, "--force")
    assert refreshed.returncode == 0, refreshed.stderr[-2000:]
    result = json.loads(refreshed.stdout)
    assert result["refreshed"] is True
    assert result["generation"] == before["generation"] + 1
    stored = deployment.stored_refresh_token("query_basic")
    assert stored is not None and deployment.emulators["query_basic"].is_refresh_token_valid(stored)
    table = _cli(deployment, "status", conn_id)  # named: other tests leave connections in other states
    assert table.returncode == 0
    assert conn_id in table.stdout
    for canary in deployment.canaries():
        assert canary not in table.stdout + table.stderr + refreshed.stdout + refreshed.stderr


def test_the_execution_api_is_warmed_before_any_task_calls_it(deployment: Deployment) -> None:
    """Cadwyn builds the execution API's routers on its first request, blocking the api-server's
    event loop for seconds (52 s once, in CI on 2 cores: the task's ``PATCH .../run`` timed out 5
    times and the task was killed). The stack sends that first request itself, before any task."""
    lines = [
        line for line in deployment.stack.output("api-server").splitlines() if "path=/execution/" in line
    ]
    assert lines, "the stack never sent the execution API a request (no warm-up)"
    assert "method=GET path=/execution/health " in lines[0], lines[0][-200:]
