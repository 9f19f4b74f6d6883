"""Waits for a valid token per vendor connection, then calls the vendor's protected API with it.

The sensor defers to the triggerer (no worker slot while waiting) and, with ``refresh=True``, the
trigger refreshes through the same lock and store as every task. The consumer tasks get the token
from the hook; it is masked in logs and never returned to XCom: only the HTTP status is.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, task

from airflow_provider_tokenrefresh.sensors.tokenrefresh import TokenValidSensor

# conn_id -> path of a protected API of that vendor (the emulators' sample APIs by default).
DEFAULT_CALLS = {
    "vendor_oauth2_basic": "/api/v1/sample",
    "vendor_oauth2_post": "/api/v1/sample",
    "vendor_query_basic": "/api/v1/sample",
    "vendor_appid_json": "/iocm/app/sample",
    "vendor_bearer_json": "/rest/isales/v1/openapi/sample",
}


@task
def call_vendor_api(conn_id: str, path: str) -> dict[str, object]:
    """GET a protected vendor API with a valid token; return only non-secret facts."""
    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

    hook = TokenRefreshHook(conn_id, min_ttl=60)
    with hook.http_client(timeout=30) as client:
        response = client.get(path)
    response.raise_for_status()
    return {
        "conn_id": conn_id,
        "status": response.status_code,
        "generation": hook.token_status()["generation"],
    }


with DAG(
    dag_id="example_token_consumer",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"calls": Param(DEFAULT_CALLS, type="object", description="conn_id -> protected API path")},
    tags=["tokenrefresh", "example"],
    doc_md=__doc__,
):
    for conn_id, path in DEFAULT_CALLS.items():
        wait = TokenValidSensor(
            task_id=f"wait_{conn_id}",
            conn_id=conn_id,
            # The default min_ttl (300 s): iSales' 300-second tokens count as valid for half their life.
            refresh=True,
            deferrable=True,
            poke_interval=5,
            timeout=600,
        )
        wait >> call_vendor_api.override(task_id=f"call_{conn_id}")(conn_id, path)
