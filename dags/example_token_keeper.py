"""Keeps the listed token-refresh connections fresh.

Runs every 15 minutes: shorter than the shortest refresh-token lifetime in use (the iSales
bearer-json refresh token lives one hour), so no refresh token lapses between runs. Each run
refreshes only tokens with less than ``min_ttl`` seconds left (and refresh tokens close to their
own expiry), through the per-connection lock and store shared with every other task.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_provider_tokenrefresh.operators.tokenrefresh import TokenRefreshOperator

DEFAULT_CONN_IDS = [
    "vendor_oauth2_basic",
    "vendor_oauth2_post",
    "vendor_query_basic",
    "vendor_appid_json",
    "vendor_bearer_json",
]

with DAG(
    dag_id="example_token_keeper",
    schedule=timedelta(minutes=15),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    params={
        "conn_ids": Param(
            DEFAULT_CONN_IDS, type="array", description="token-refresh connections to keep fresh"
        ),
        "min_ttl": Param(
            1200, type="number", description="refresh tokens with less than this many seconds left"
        ),
        "force": Param(False, type="boolean", description="refresh even valid tokens"),
    },
    tags=["tokenrefresh", "example"],
    doc_md=__doc__,
):
    TokenRefreshOperator(
        task_id="refresh_tokens",
        conn_ids="{{ params.conn_ids }}",
        min_ttl="{{ params.min_ttl }}",
        force="{{ params.force }}",
        retries=2,
        retry_delay=timedelta(minutes=1),
    )
