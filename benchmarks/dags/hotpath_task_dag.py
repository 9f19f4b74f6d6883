"""The hot path inside a real Airflow task (``benchmarks/hotpath_task.py``).

One task: ``TokenRefreshHook(conn).get_token()`` once (a refresh through the Variable store and the
execution API), then, interleaved, 7 rounds of: the hook's ``get_token()`` (cache hit), the
keeper's ``get_valid_token()`` (cache hit) and Authlib's ``ensure_active_token`` on the same token.
Returns ns/op medians (numbers only: no token reaches XCom).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task


@task
def measure(conn_id: str) -> dict[str, Any]:
    import ssl
    import time

    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
    from benchmarks.common import authlib_oauth2_client, interleaved_ns_per_op

    hook = TokenRefreshHook(conn_id, min_ttl=300)
    started = time.perf_counter()
    hook.get_token()  # the first call of the task: store read (and the refresh)
    first_call_ms = (time.perf_counter() - started) * 1e3
    keeper = hook.keeper
    record = keeper.get_valid_token(300)
    assert record.access_token is not None and record.refresh_token is not None
    peer = authlib_oauth2_client()(
        client_id="bench",
        client_secret="bench-secret",
        token_endpoint_auth_method="client_secret_basic",
        token_endpoint=hook.settings.base_url + "/token",
        token={
            "access_token": record.access_token.get_secret_value(),
            "refresh_token": record.refresh_token.get_secret_value(),
            "token_type": "Bearer",
            "expires_at": int(time.time()) + 7000,
        },
        verify=ssl.create_default_context(),
        trust_env=False,
    )
    active = peer.token
    results = interleaved_ns_per_op(
        {
            "in_task_cache": (lambda: keeper.get_valid_token(300), 200_000),
            "in_task_peer": (lambda: peer.ensure_active_token(active), 200_000),
            "in_task_hook": (hook.get_token, 200_000),
        }
    )
    peer.close()
    hook.close()
    return {
        "first_call_ms": round(first_call_ms, 1),
        **{name: round(value["median_ns"], 1) for name, value in results.items()},
    }


with DAG(dag_id="hotpath_task", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    measure("{{ dag_run.conf['conn_id'] }}")
