"""A ``tokenrefresh_custom`` connection (a vendor described entirely as data) on real components.

Used by ``tests/airflow/test_custom_dialect_real.py``: the connection ``custom_isales`` carries, in
its extra ``dialect``, a JSON spec of the iSales refresh call written from the vendor document. The
sensor refreshes through it in the triggerer, the operator refreshes again, and a task calls the
vendor's protected API with the token the hook returns.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_tokenrefresh.operators.tokenrefresh import TokenRefreshOperator
from airflow_provider_tokenrefresh.sensors.tokenrefresh import TokenValidSensor

CONN_ID = "custom_isales"


@task
def call_protected_api(conn_id: str, path: str) -> dict[str, object]:
    """GET the vendor's protected API with the hook's token; return only non-secret facts."""
    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

    with TokenRefreshHook(conn_id, min_ttl=60) as hook:
        with hook.http_client(timeout=30) as client:
            response = client.get(path)
        status = hook.token_status()
    return {"status": response.status_code, "dialect": status["dialect"], "generation": status["generation"]}


with DAG(dag_id="custom_dialect", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    wait = TokenValidSensor(
        task_id="wait",
        conn_id=CONN_ID,
        min_ttl=60,
        refresh=True,
        deferrable=True,
        poke_interval=2,
        timeout=120,
        retries=0,
    )
    keep = TokenRefreshOperator(task_id="keep", conn_ids=[CONN_ID], force=True, retries=0)
    call = call_protected_api.override(task_id="call", retries=0)(CONN_ID, "/rest/isales/v1/openapi/sample")
    wait >> keep >> call
