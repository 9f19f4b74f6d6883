"""``airflow-tokenrefresh status`` exit codes on a real deployment: the CLI run as a subprocess against
connections in each state, and inside a task (docs/status.md has the table)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokenrefresh.testing import OAuth2BasicEmulator, OAuth2PostEmulator
from airflow_provider_tokenrefresh.testing.connections import emulator_connection

from .conftest import Deployment

pytestmark = pytest.mark.airflow

IN_TASK_DAG = "tokenrefresh_status_in_task"
CONN_IDS = ("st_ok", "st_expiring", "st_reauth", "st_badsecret", "st_fixed", "st_misconf", "st_vault")

_SETUP = """
import json, sys
from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
done = {}
for conn_id in sys.argv[1:]:
    try:
        with TokenRefreshHook(conn_id) as hook:
            done[conn_id] = hook.refresh(force=True)["state"]
    except Exception as exc:
        done[conn_id] = getattr(exc, "kind", type(exc).__name__)
print(json.dumps(done))
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens on it any more


def _cli(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("airflow-tokenrefresh"))
    return subprocess.run(
        [exe, *args], env=deployment.stack.env(), capture_output=True, text=True, check=False, timeout=180
    )


def _rows(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {row["conn_id"]: row for row in json.loads(result.stdout)}


@pytest.fixture(scope="module")
def states(deployment: Deployment) -> Iterator[dict[str, str]]:
    """Connections in every state, on this module's own vendors; conn_id -> what setup saw."""
    stack = deployment.stack
    post, basic = OAuth2PostEmulator().start(), OAuth2BasicEmulator().start()
    try:
        seeds = {name: post.issue_tokens() for name in ("st_ok", "st_expiring", "st_reauth", "st_badsecret")}
        basic_seed = basic.issue_tokens()
        post.revoke_family(post.family_of(seeds["st_reauth"].refresh_token) or "", "user removed the app")
        for conn_id in ("st_ok", "st_reauth"):
            stack.put_connection(
                conn_id,
                "tokenrefresh_oauth2_post",
                **emulator_connection(post, seeds[conn_id].refresh_token, None),
            )
        # The vendor states no refresh-token expiry; the connection says two hours.
        stack.put_connection(
            "st_expiring",
            "tokenrefresh_oauth2_post",
            **emulator_connection(post, seeds["st_expiring"].refresh_token, None, refresh_lifetime=7200),
        )
        bad = emulator_connection(post, seeds["st_badsecret"].refresh_token, None)
        stack.put_connection(
            "st_badsecret", "tokenrefresh_oauth2_post", **{**bad, "password": "not-the-secret"}
        )
        # oauth2_basic: refresh tokens live 30 days at most (the vendor document).
        stack.put_connection(
            "st_fixed",
            "tokenrefresh_oauth2_basic",
            **emulator_connection(basic, basic_seed.refresh_token, None),
        )
        stack.put_connection(
            "st_misconf",
            "tokenrefresh_oauth2_post",
            **emulator_connection(post, "rt-never-used", None, store="no-such-store"),
        )
        vault_port = _closed_port()
        stack.put_connection(
            "st_vault_server", "generic", host="http://127.0.0.1", port=vault_port, password="dev-only-token"
        )
        stack.put_connection(
            "st_vault",
            "tokenrefresh_oauth2_post",
            **emulator_connection(post, "rt-in-vault", None, store="vault", store_conn_id="st_vault_server"),
        )
        setup = subprocess.run(
            [sys.executable, "-c", _SETUP, "st_ok", "st_expiring", "st_fixed", "st_reauth", "st_badsecret"],
            env={**stack.env(), "_AIRFLOW_PROCESS_CONTEXT": "server"},
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        seen: dict[str, str] = json.loads(setup.stdout.strip().splitlines()[-1])
        assert seen == {
            "st_ok": "valid",
            "st_expiring": "valid",
            "st_fixed": "valid",
            "st_reauth": "reauth_required",
            "st_badsecret": "configuration",
        }, setup.stderr[-3000:]
        yield seen
    finally:
        post.stop()
        basic.stop()
        with stack.api() as api:  # other tests list every tokenrefresh_* connection
            for conn_id in (*CONN_IDS, "st_vault_server"):
                api.delete(f"/api/v2/connections/{conn_id}")


def test_exit_0_when_every_connection_is_valid(deployment: Deployment, states: dict[str, str]) -> None:
    result = _cli(deployment, "status", "st_ok", "st_fixed")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "CONN_ID" and "CHECK" in lines[0]
    assert any(line.startswith("st_ok") and line.rstrip().endswith("ok") for line in lines)
    assert "tokenrefresh status OK (exit 0): 2 connection(s)" in result.stderr


def test_exit_1_when_a_refresh_token_expires_within_the_horizon(
    deployment: Deployment, states: dict[str, str]
) -> None:
    # st_expiring's refresh token has a 2-hour lifetime. By default the horizon is a quarter of
    # that (30 min), so a token that was just rotated is fine...
    default = _cli(deployment, "status", "--json", "st_ok", "st_expiring")
    assert default.returncode == 0, default.stderr[-2000:]
    assert _rows(default)["st_expiring"]["check"] == "ok"
    # ...and with a one-day horizon it is expiring.
    result = _cli(deployment, "status", "--json", "--horizon", "86400", "st_ok", "st_expiring")
    assert result.returncode == 1, result.stderr[-2000:]
    rows = _rows(result)
    assert (rows["st_ok"]["check"], rows["st_expiring"]["check"]) == ("ok", "expiring")
    assert rows["st_expiring"]["state"] == "valid" and rows["st_expiring"]["refresh_expires_at"]
    assert "expiring (within 86400s): st_expiring" in result.stderr
    # A 30-day refresh token is fine for the default day, expiring for a 35-day horizon.
    wide = _cli(deployment, "status", "--json", "--horizon", str(35 * 86400), "st_fixed")
    assert wide.returncode == 1, wide.stderr[-2000:]
    assert _rows(wide)["st_fixed"]["check"] == "expiring"


def test_exit_3_when_a_store_or_connection_cannot_be_read_and_other_rows_still_show(
    deployment: Deployment, states: dict[str, str]
) -> None:
    result = _cli(deployment, "status", "--json", "st_vault", "st_nope", "st_ok")
    assert result.returncode == 3, result.stderr[-2000:]
    rows = _rows(result)
    assert list(rows) == ["st_vault", "st_nope", "st_ok"]
    assert rows["st_vault"]["check"] == "unknown" and rows["st_vault"]["state"] == "error"
    assert "vault" in rows["st_vault"]["last_error"] and "st_vault" in rows["st_vault"]["last_error"]
    assert rows["st_nope"]["check"] == "unknown" and "st_nope" in rows["st_nope"]["last_error"]
    assert rows["st_ok"]["check"] == "ok" and rows["st_ok"]["generation"] >= 1
    assert "dev-only-token" not in result.stdout + result.stderr


def test_exit_4_for_reauthorization_or_misconfiguration_over_everything_else(
    deployment: Deployment, states: dict[str, str]
) -> None:
    result = _cli(
        deployment, "status", "--json", "--horizon", "86400", "st_reauth", "st_vault", "st_expiring", "st_ok"
    )
    assert result.returncode == 4, result.stderr[-2000:]
    checks = {conn_id: row["check"] for conn_id, row in _rows(result).items()}
    assert checks == {
        "st_reauth": "reauth_required",
        "st_vault": "unknown",
        "st_expiring": "expiring",
        "st_ok": "ok",
    }
    assert "CRITICAL (exit 4)" in result.stderr
    misconfigured = _cli(deployment, "status", "--json", "st_misconf", "st_badsecret")
    assert misconfigured.returncode == 4, misconfigured.stderr[-2000:]
    rows = _rows(misconfigured)
    assert rows["st_misconf"]["check"] == "misconfigured" and "store" in rows["st_misconf"]["last_error"]
    assert rows["st_badsecret"]["check"] == "misconfigured"
    assert rows["st_badsecret"]["last_error"].startswith("configuration:")
    assert "not-the-secret" not in misconfigured.stdout + misconfigured.stderr


def test_exit_2_is_only_a_usage_error(deployment: Deployment) -> None:
    result = _cli(deployment, "status", "--horizon", "soon")
    assert result.returncode == 2
    assert "not a number of seconds" in result.stderr and "usage:" in result.stderr


def test_status_inside_a_task(deployment: Deployment, states: dict[str, str]) -> None:
    stack = deployment.stack
    stack.wait_for_dag(IN_TASK_DAG)
    run_id = stack.trigger(IN_TASK_DAG, {"conn_ids": ["st_ok", "st_reauth"]})
    assert stack.wait_run(IN_TASK_DAG, run_id, timeout=300) == "success", stack.explain(IN_TASK_DAG, run_id)
    with stack.api() as api:
        response = api.get(
            f"/api/v2/dags/{IN_TASK_DAG}/dagRuns/{run_id}/taskInstances/status_in_task/xcomEntries/return_value",
            params={"deserialize": True},
        )
    response.raise_for_status()
    got = response.json()["value"]
    # In the task's own process: named connections through the execution API (no SQLAlchemy URL error).
    assert got["named"] == {
        "code": 4,
        "rows": [
            {"conn_id": "st_ok", "state": "valid", "check": "ok"},
            {"conn_id": "st_reauth", "state": "reauth_required", "check": "reauth_required"},
        ],
    }, got["named_stderr"]
    assert "ArgumentError" not in got["named_stderr"]
    # Without names there is no way to list them there: a clear message, usage-error code.
    assert got["everything"]["code"] == 2
    assert "name them" in got["everything"]["stderr"] and "ArgumentError" not in got["everything"]["stderr"]
    # A process the task starts has neither the database nor the execution API: could not tell, and why.
    assert got["child"]["code"] == 3, got["child"]
    assert "not reachable from this process" in got["child"]["stdout"] + got["child"]["stderr"]
