"""The HTTP provider on real components (scheduler, LocalExecutor workers, api-server): a DAG with
``TokenRefreshHttpSensor``, ``HttpOperator(auth_type=tokenrefresh_auth(...))`` and ``HttpHook`` in a
task, against an emulator's protected API. Judged at the vendor: one refresh for the first run; in
the second, the access token has died early at the vendor, so the first request meets a 401, which
refreshes once and resends once."""

from __future__ import annotations

import json
import time

import pytest

from airflow_provider_tokenrefresh.testing import ManualClock, OAuth2BasicEmulator
from airflow_provider_tokenrefresh.testing.connections import emulator_connection

from .conftest import Deployment

pytestmark = pytest.mark.airflow

DAG_ID = "http_provider_tokens"


def test_http_operator_sensor_and_hook_use_the_token_and_recover_from_a_401(deployment: Deployment) -> None:
    stack = deployment.stack
    clock = ManualClock(time.time())
    with OAuth2BasicEmulator(clock=clock, rotation=True, reuse_detection=True) as emu:
        seed = emu.issue_tokens()
        stack.put_connection(
            "http_tokens", "tokenrefresh_oauth2_basic", **emulator_connection(emu, seed.refresh_token, None)
        )
        stack.put_connection("http_vendor", "http", host=emu.base_url)
        stack.wait_for_dag(DAG_ID)

        first = stack.trigger(DAG_ID)
        assert stack.wait_run(DAG_ID, first, timeout=300) == "success", stack.explain(DAG_ID, first)
        assert deployment.xcom(DAG_ID, first, "call_api") == 200
        assert deployment.xcom(DAG_ID, first, "with_hook") == [200]
        assert (emu.counters.get("ok"), emu.counters.get("sample:ok")) == (1, 4), emu.counters
        # The deferrable operator's answer came from the triggerer: its log there, the body in XCom.
        body = deployment.xcom(DAG_ID, first, "call_api_deferred")  # the answer's text (the API may parse it)
        assert (json.loads(body) if isinstance(body, str) else body) == {"ok": True, "vendor": "oauth2_basic"}
        trigger_logs = list(
            (stack.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={first}" / "task_id=call_api_deferred").glob(
                "attempt=*.log.trigger.*.log"
            )
        )
        assert trigger_logs, "no trigger log for call_api_deferred"

        # The access token dies at the vendor while the stored record says it has an hour left.
        clock.advance(emu.access_ttl + 1)
        second = stack.trigger(DAG_ID)
        assert stack.wait_run(DAG_ID, second, timeout=300) == "success", stack.explain(DAG_ID, second)
        assert deployment.xcom(DAG_ID, second, "call_api") == 200
        assert deployment.xcom(DAG_ID, second, "with_hook") == [200]
        counters = emu.counters
        # One more refresh in all, after the first 401; every call ended in a 200.
        assert counters.get("ok") == 2, counters
        assert counters.get("invalid_grant", 0) == 0
        assert counters.get("sample:ok") == 8, counters
        # Two 401s, one refresh: the sensor's first request (it refreshed), and the triggerer's, whose
        # process still cached run 1's token; its 401 re-read the store, which already held the new one.
        assert counters.get("sample:unauthorized") == 2, counters
        # The record holds the chain's live refresh token.
        stored = deployment.stored_refresh_token_of("http_tokens")
        assert stored is not None and emu.is_refresh_token_valid(stored)

        issued = {seed.refresh_token, seed.access_token, emu.client_secret}
        for answer in emu.answers:
            body = answer.json()
            issued |= {body["access_token"], body["refresh_token"]}
        logs = stack.run_logs(DAG_ID, first) + stack.run_logs(DAG_ID, second)
        # The trigger's kwargs in the metadata DB hold ids and the endpoint, never a token.
        with stack.api() as api:
            tis = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{second}/taskInstances").json()["task_instances"]
        logs += json.dumps(tis)
        assert "Poking: /api/v1/sample" in logs  # the logs are the sensor's and hold its requests
        for value in issued:
            assert value not in logs
