"""Keeps the listed token-refresh connections fresh.

The schedule comes from the connections' lifetimes
(:func:`airflow_provider_tokenrefresh.schedule.keeper_interval`; docs/lifetimes.md): a run at
least every quarter of the shortest refresh-token lifetime (the iSales bearer-json refresh token
lives one hour: every 15 minutes), access tokens bounded below by 15 minutes. Computing it reads
no store, vendor or database: the conn types below (or ``AIRFLOW_CONN_<ID>`` variables, with
their ``refresh_lifetime`` extras) only. Each run refreshes only tokens with less than
``min_ttl`` seconds left (two intervals) — refresh tokens too, capped at half their lifetime — so
an idle connection's refresh token is renewed before it could lapse, through the per-connection
lock and store shared with every other task.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_provider_tokenrefresh.operators.tokenrefresh import TokenRefreshOperator
from airflow_provider_tokenrefresh.schedule import keeper_interval, keeper_min_ttl

#: The connections kept fresh, with their conn types (their dialects' documented lifetimes).
CONN_TYPES = {
    "vendor_oauth2_basic": "tokenrefresh_oauth2_basic",
    "vendor_oauth2_post": "tokenrefresh_oauth2_post",
    "vendor_query_basic": "tokenrefresh_query_basic",
    "vendor_appid_json": "tokenrefresh_appid_json",
    "vendor_bearer_json": "tokenrefresh_bearer_json",
}
DEFAULT_CONN_IDS = list(CONN_TYPES)
INTERVAL = keeper_interval(DEFAULT_CONN_IDS, conn_types=CONN_TYPES)

with DAG(
    dag_id="example_token_keeper",
    schedule=INTERVAL,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    params={
        "conn_ids": Param(
            DEFAULT_CONN_IDS, type="array", description="token-refresh connections to keep fresh"
        ),
        "min_ttl": Param(
            keeper_min_ttl(INTERVAL),
            type="number",
            description="refresh tokens (access and refresh) with less than this many seconds left",
        ),
        "force": Param(False, type="boolean", description="refresh even valid tokens"),
    },
    tags=["tokenrefresh", "example"],
    doc_md=__doc__,
) as dag:
    TokenRefreshOperator(
        task_id="refresh_tokens",
        conn_ids="{{ params.conn_ids }}",
        min_ttl="{{ params.min_ttl }}",
        force="{{ params.force }}",
        retries=2,
        retry_delay=timedelta(minutes=1),
    )
