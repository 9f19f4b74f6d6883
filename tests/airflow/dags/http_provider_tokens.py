"""The HTTP provider's operator, sensor and hook with a token of a tokenrefresh connection, and our
deferrable HTTP operator: the HTTP connection ``http_vendor`` gives the base URL, ``http_tokens``
the token. No token in DAG code."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import DAG, task

from airflow_provider_tokenrefresh.http_provider import tokenrefresh_auth
from airflow_provider_tokenrefresh.operators.http import TokenRefreshHttpOperator
from airflow_provider_tokenrefresh.sensors.http import TokenRefreshHttpSensor

SAMPLE = "/api/v1/sample"


@task
def with_hook() -> list[int]:
    """HttpHook in a task: the answers' status codes (a 401 then 200 when the token died early)."""
    from airflow.providers.http.hooks.http import HttpHook

    response = HttpHook(
        method="GET", http_conn_id="http_vendor", auth_type=tokenrefresh_auth("http_tokens")
    ).run(SAMPLE)
    return [r.status_code for r in response.history] + [response.status_code]


with DAG(dag_id="http_provider_tokens", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    wait = TokenRefreshHttpSensor(
        task_id="wait_api",
        http_conn_id="http_vendor",
        endpoint=SAMPLE,
        token_conn_id="http_tokens",
        poke_interval=2,
        timeout=240,
    )
    call = HttpOperator(
        task_id="call_api",
        http_conn_id="http_vendor",
        endpoint=SAMPLE,
        method="GET",
        auth_type=tokenrefresh_auth("http_tokens"),
        response_filter=lambda response: response.status_code,
    )
    # Deferrable: the token is fetched and the request sent in the triggerer.
    deferred = TokenRefreshHttpOperator(
        task_id="call_api_deferred",
        token_conn_id="http_tokens",
        http_conn_id="http_vendor",
        endpoint=SAMPLE,
    )
    wait >> call >> with_hook() >> deferred
