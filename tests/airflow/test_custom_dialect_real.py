"""The custom dialect end to end on real Airflow components.

A ``tokenrefresh_custom`` connection whose extra ``dialect`` is a JSON spec of the iSales refresh
call, written here from isales-bearer-json.txt alone (no preset is used or copied): the path, the
``Authentication: Bearer`` header, the JSON body, the ``result``/``resultData`` answer with its
success rule, the expiry fields and the error rules. The emulator answers ``"result": 0`` (a number,
the document's example) to the spec's ``equals: ["0"]``. One run of the ``custom_dialect`` DAG: the
deferrable sensor's first check meets a 503, so the refresh happens in the real triggerer; the
operator refreshes again (forced); a task calls the protected API with the hook's token.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from airflow_provider_tokenrefresh.testing import IsalesBearerEmulator
from airflow_provider_tokenrefresh.testing.connections import emulator_connection
from airflow_provider_tokenrefresh.testing.stack import COMPONENTS

from .leakscan import Canaries

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .conftest import Deployment

pytestmark = pytest.mark.airflow

DAG_ID = "custom_dialect"
CONN_ID = "custom_isales"

# isales-bearer-json.txt, as data.
ISALES_SPEC: dict[str, Any] = {
    "name": "isales_as_data",
    "title": "iSales refresh, described in the connection",
    "document": "isales-bearer-json.txt",
    "request": {
        "method": "POST",
        "path": "/rest/isales/v1/openapi/obs/auth/refresh",
        "client_auth": "none",
        "refresh_token_field": "refreshToken",
        "params_in": "body",
        "encoding": "json",
        "access_token_header": "Authentication",
        "access_token_prefix": "Bearer ",
    },
    "response": {
        "access_token": "resultData.token",
        "token_type": None,
        "refresh_token": "resultData.refreshToken",
        "expires_in": "resultData.tokenExpirationTime",
        "expires_format": "seconds",
        "refresh_expires_in": "resultData.refreshExpirationTime",
        "refresh_expires_format": "seconds",
        "scope": None,
        "success": {"path": "result", "equals": ["0"]},
        "error_code": "result",
        "error_message": "resultDesc",
    },
    "errors": [
        {"status": 403, "outcome": "reauth", "meaning": "Authentication failed: re-authorize and re-seed"},
        {"status": 401, "outcome": "configuration", "meaning": "unauthorized operation: check the account"},
        {"status": 400, "outcome": "configuration", "meaning": "incorrect request: check the spec"},
        {"status": 404, "outcome": "configuration", "meaning": "not found: check host and path"},
        {"status": 500, "outcome": "transient", "meaning": "business failure; try again later"},
    ],
}


@dataclass
class CustomRun:
    deployment: Deployment
    emulator: IsalesBearerEmulator
    run_id: str
    seed_refresh_token: str
    states: dict[str, str]
    record: dict[str, Any]
    seconds: float


def _record(deployment: Deployment) -> dict[str, Any]:
    """The stored record (read in a child process): status, and the tokens for checks at the vendor."""
    code = (
        "import json,sys\n"
        "from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore\n"
        "r,_=VariableTokenStore().read(sys.argv[1])\n"
        "print(json.dumps(None if r is None else {'status': r.status(),"
        " 'rt': r.refresh_token.get_secret_value(), 'at': r.access_token.get_secret_value()}, default=str))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, f"tokenrefresh_token__{CONN_ID}"],
        env=deployment.stack.env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    record: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return record


@pytest.fixture(scope="module")
def custom_run(deployment: Deployment) -> Iterator[CustomRun]:
    t0 = time.monotonic()
    stack = deployment.stack
    emu = IsalesBearerEmulator(result_as_int=True).start()
    try:
        seed = emu.issue_tokens()
        with stack.api() as api:
            response = api.delete(f"/api/v2/variables/tokenrefresh_token__{CONN_ID}")
            assert response.status_code in (204, 404), response.status_code
        fields = emulator_connection(emu, seed.refresh_token, seed.access_token)
        assert "login" not in fields  # iSales: no client credentials, the spec says client_auth none
        fields["extra"]["dialect"] = json.dumps(ISALES_SPEC)  # as pasted into the form
        stack.put_connection(CONN_ID, "tokenrefresh_custom", **fields)
        emu.inject("http_503")  # the sensor's first check, in the worker: it defers
        stack.wait_for_dag(DAG_ID)
        run_id = stack.trigger(DAG_ID)
        state = stack.wait_run(DAG_ID, run_id, timeout=240)
        assert state == "success", stack.explain(DAG_ID, run_id)
        states = {ti["task_id"]: ti["state"] for ti in stack.task_instances(DAG_ID, run_id)}
        yield CustomRun(
            deployment=deployment,
            emulator=emu,
            run_id=run_id,
            seed_refresh_token=seed.refresh_token,
            states=states,
            record=_record(deployment),
            seconds=time.monotonic() - t0,
        )
    finally:
        emu.stop()


def test_the_custom_connection_refreshes_in_the_triggerer_and_through_the_operator(
    custom_run: CustomRun,
) -> None:
    print(f"\ncustom_dialect: fixture {custom_run.seconds:.1f}s")
    deployment, run_id, emu = custom_run.deployment, custom_run.run_id, custom_run.emulator
    assert custom_run.states == {"wait": "success", "keep": "success", "call": "success"}
    counters = emu.counters
    assert counters.get("fault:http_503") == 1, counters  # the sensor's check in the worker
    assert counters.get("ok") == 2, counters  # the trigger's refresh and the operator's forced one
    assert counters.get("sample:ok") == 1, counters  # the task's call with the hook's token
    for refused in ("invalid_grant", "bad_auth_header", "bad_request", "sample:unauthorized"):
        assert counters.get(refused, 0) == 0, counters
    # Every refresh request is the one the spec describes, not a preset's.
    assert [r.path for r in emu.requests] == [emu.token_path] * 3
    for request in emu.requests[1:]:
        assert request.headers["authentication"].startswith("Bearer ")
        assert set(json.loads(request.body)) == {"refreshToken"}
    # The sensor's result is the trigger's event ("checks" exists only there) ...
    event = deployment.xcom(DAG_ID, run_id, "wait")
    assert event["status"] == "success" and event["checks"] >= 1 and event["generation"] == 1
    trigger_logs = list(
        (deployment.stack.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / "task_id=wait").glob(
            "attempt=*.log.trigger.*.log"
        )
    )
    assert trigger_logs, "no trigger log: the sensor never deferred"
    trigger_log = "\n".join(p.read_text() for p in trigger_logs)
    assert f"Token refreshed for {CONN_ID}: generation 1" in trigger_log
    # ... the operator's names the custom dialect ...
    kept = deployment.xcom(DAG_ID, run_id, "keep")[CONN_ID]
    assert kept["dialect"] == "isales_as_data" and kept["refreshed"] is True and kept["generation"] == 2
    # ... and the vendor took the hook's token.
    called = deployment.xcom(DAG_ID, run_id, "call")
    assert called == {"status": 200, "dialect": "isales_as_data", "generation": 2}


def test_the_stored_record_is_live_at_the_vendor(custom_run: CustomRun) -> None:
    emu, record = custom_run.emulator, custom_run.record
    assert record is not None
    assert record["status"]["generation"] == 2 and record["status"]["state"] == "valid"
    assert record["rt"] != custom_run.seed_refresh_token
    assert not emu.is_refresh_token_valid(custom_run.seed_refresh_token)  # rotated twice: the seed is spent
    assert emu.is_refresh_token_valid(record["rt"])
    assert emu.is_access_token_valid(record["at"])
    response = httpx.get(emu.sample_url, headers={"Authorization": f"Bearer {record['at']}"}, timeout=10)
    assert response.status_code == 200 and response.json() == {"ok": True, "vendor": "bearer_json"}
    # The refresh expiry came from the answer's refreshExpirationTime (the spec's path), not a default.
    assert record["status"]["refresh_expires_at"] is not None


def test_no_token_of_the_custom_connection_in_logs_or_component_output(custom_run: CustomRun) -> None:
    stack, emu = custom_run.deployment.stack, custom_run.emulator
    canaries = Canaries()
    canaries.add("seed refresh token", custom_run.seed_refresh_token)
    canaries.add("stored refresh token", custom_run.record["rt"])
    canaries.add("stored access token", custom_run.record["at"])
    for family in emu.families():
        snap = emu.current_tokens(family)
        canaries.add("current access token", snap.access_token)
    for answer in emu.answers:
        data = answer.json() if answer.status == 200 else {}
        for key in ("token", "refreshToken"):
            value = (data.get("resultData") or {}).get(key)
            if isinstance(value, str):
                canaries.add(f"issued {key}", value)
    assert len(canaries) >= 5
    root = stack.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={custom_run.run_id}"
    texts = {str(p): p.read_text(errors="replace") for p in sorted(root.rglob("*")) if p.is_file()}
    assert len(texts) >= 4  # three task logs and the trigger log
    texts.update({name: stack.output(name) for name in COMPONENTS})
    leaks = canaries.scan_all(texts)
    assert not leaks, "\n".join(str(leak) for leak in leaks[:20])
