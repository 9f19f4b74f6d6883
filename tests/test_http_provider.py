"""The HTTP provider's ``HttpHook``, ``HttpOperator`` and ``HttpSensor`` with a token of a
``tokenrefresh_*`` connection (one argument, no token in DAG code), against an emulator's
protected sample API: a 401 refreshes once and resends once, judged at the vendor.

The hook and operators run in a child process with connections from ``AIRFLOW_CONN_*`` variables
(the SDK reads them outside tasks), as in a task; real runs on Airflow's components are in
``tests/airflow/test_http_provider_real.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokenrefresh.errors import ConfigurationError
from airflow_provider_tokenrefresh.http_provider import tokenrefresh_auth
from airflow_provider_tokenrefresh.testing import ManualClock

from .conftest import EmulatorFactory

CHILD = r"""
import json, sys
from airflow.providers.http.hooks.http import HttpHook
from airflow.providers.http.operators.http import HttpOperator
from airflow_provider_tokenrefresh.http_provider import tokenrefresh_auth
from airflow_provider_tokenrefresh.sensors.http import TokenRefreshHttpSensor

path = sys.argv[1]
out = {}
hook = HttpHook(method="GET", http_conn_id="vendor_api", auth_type=tokenrefresh_auth("vendor"))
out["hook"] = hook.run(path).status_code
print("STEP " + json.dumps(out), flush=True)
sys.stdin.readline()  # the test expires the access token at the vendor
response = hook.run(path)
out["after_401"] = [r.status_code for r in response.history] + [response.status_code]
op = HttpOperator(task_id="call", http_conn_id="vendor_api", endpoint=path, method="GET",
                  auth_type=tokenrefresh_auth("vendor"), response_filter=lambda r: r.status_code)
out["operator"] = op.execute({})
sensor = TokenRefreshHttpSensor(task_id="wait", http_conn_id="vendor_api", endpoint=path, token_conn_id="vendor")
out["sensor"] = sensor.poke({})
out["repr"] = repr(tokenrefresh_auth("vendor"))
print("DONE " + json.dumps(out), flush=True)
"""


def _env(tmp_path: Path, emu: Any, seed: Any) -> dict[str, str]:
    conns = {
        "vendor": {
            "conn_type": "tokenrefresh_oauth2_basic",
            "host": emu.base_url,
            "login": emu.client_id,
            "password": emu.client_secret,
            "extra": {
                "refresh_token": seed.refresh_token,
                "allow_insecure_http": True,
                "store": "file",
                "store_path": str(tmp_path / "store"),
                "lock": "file",
            },
        },
        # The HTTP connection: base URL only; its login/password (if any) are not what authenticates.
        "vendor_api": {"conn_type": "http", "host": emu.base_url},
    }
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    env |= {f"AIRFLOW_CONN_{name.upper()}": json.dumps(conn) for name, conn in conns.items()}
    return env


def _line(proc: subprocess.Popen[str], prefix: str, output: list[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        output.append(line)
        if line.startswith(prefix):
            result: dict[str, Any] = json.loads(line[len(prefix) :])
            return result
    raise AssertionError(f"child exited before {prefix!r}: {proc.wait(timeout=10)}")


def test_hook_operator_and_sensor_send_the_token_and_refresh_once_on_401(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    clock = ManualClock(time.time())
    emu = emulator_factory("oauth2_basic", clock=clock)
    seed = emu.issue_tokens()
    output: list[str] = []
    with (tmp_path / "child.err").open("w") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, emu.sample_path],
            env=_env(tmp_path, emu, seed),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        first = _line(child, "STEP ", output)
        assert first == {"hook": 200}
        assert (emu.counters.get("ok"), emu.counters.get("sample:ok")) == (1, 1)
        # Expired at the vendor while the keeper still thinks it valid: only a 401 can tell.
        clock.advance(emu.access_ttl + 1)
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        done = _line(child, "DONE ", output)
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
    stderr = (tmp_path / "child.err").read_text()
    assert done["after_401"] == [401, 200], stderr[-3000:]
    assert done["operator"] == 200 and done["sensor"] is True
    assert done["repr"] == "tokenrefresh_auth('vendor')"
    # At the vendor: exactly one more refresh (after the 401), the rest served from the store.
    assert emu.counters.get("ok") == 2, emu.counters
    assert emu.counters.get("invalid_grant", 0) == 0
    assert emu.counters.get("sample:ok") == 4, emu.counters
    # No token or secret in the child's output (HttpHook logs the URL it sends to).
    everything = "".join(output) + stderr
    issued = {seed.refresh_token, seed.access_token, emu.client_secret}
    for answer in emu.answers:
        body = answer.json()
        issued |= {body["access_token"], body["refresh_token"]}
    assert len(issued) == 7  # the seed pair, the secret, two refreshes' pairs
    for value in issued:
        assert value not in everything


def test_the_sensor_refuses_deferrable_with_the_reason() -> None:
    from airflow_provider_tokenrefresh.sensors.http import TokenRefreshHttpSensor

    with pytest.raises(ConfigurationError, match=r"'vendor'.*deferrable=True is not supported"):
        TokenRefreshHttpSensor(
            task_id="wait", http_conn_id="api", endpoint="/x", token_conn_id="vendor", deferrable=True
        )
    assert repr(tokenrefresh_auth("vendor", min_ttl=60)) == "tokenrefresh_auth('vendor')"


def test_the_deferrable_trigger_carries_ids_and_the_request_never_a_token() -> None:
    from airflow_provider_tokenrefresh.triggers.http import TokenRefreshHttpTrigger, base_url_of

    path, kwargs = TokenRefreshHttpTrigger(
        "vendor", "vendor_api", "/things", method="POST", data={"q": 1}, headers={"X-Request": "7"}
    ).serialize()
    assert path == "airflow_provider_tokenrefresh.triggers.http.TokenRefreshHttpTrigger"
    assert kwargs == {
        "token_conn_id": "vendor",
        "http_conn_id": "vendor_api",
        "endpoint": "/things",
        "method": "POST",
        "data": {"q": 1},
        "headers": {"X-Request": "7"},
        "min_ttl": None,
        "timeout": 60.0,
    }
    assert TokenRefreshHttpTrigger(**kwargs).serialize() == (path, kwargs)
    # The base URL as HttpHook builds it from an HTTP connection.
    assert base_url_of("http://127.0.0.1", None, 8080) == "http://127.0.0.1:8080"
    assert base_url_of("api.vendor.example", "https", None) == "https://api.vendor.example"
    assert base_url_of("api.vendor.example", None, None) == "http://api.vendor.example"
