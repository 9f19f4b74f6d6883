"""A deferrable sensor waiting on a connection whose refresh token the vendor has revoked."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_tokenrefresh.sensors.tokenrefresh import TokenValidSensor

with DAG(dag_id="sensor_on_revoked_token", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    TokenValidSensor(
        task_id="wait",
        conn_id="{{ dag_run.conf['conn_id'] }}",
        min_ttl=60,
        refresh=True,
        poke_interval=5,
        timeout=300,
        retries=3,
    )
