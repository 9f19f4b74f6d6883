"""Token work that the metrics test watches through StatsD: one task refreshes, one meets a revoked
refresh token, one deferrable sensor whose refresh happens in the triggerer (its in-task try meets a
vendor that answers 503), and a keeper task over two connections, one of them revoked."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_tokenrefresh.operators.tokenrefresh import TokenRefreshOperator
from airflow_provider_tokenrefresh.sensors.tokenrefresh import TokenValidSensor


@task
def use_token(conn_id: str) -> dict[str, object]:
    """Get a valid token through the hook; return only non-secret facts (the error kind on failure)."""
    from airflow_provider_tokenrefresh.errors import TokenRefreshError
    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

    try:
        with TokenRefreshHook(conn_id, min_ttl=60) as hook:
            record = hook.get_record()
    except TokenRefreshError as exc:
        return {"conn_id": conn_id, "kind": exc.kind}
    return {"conn_id": conn_id, "generation": record.generation}


with DAG(dag_id="tokenrefresh_metrics", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    use_token.override(task_id="use_ok")("{{ dag_run.conf['ok'] }}")
    use_token.override(task_id="use_revoked")("{{ dag_run.conf['revoked'] }}")
    TokenValidSensor(
        task_id="wait_in_triggerer",
        conn_id="{{ dag_run.conf['deferred'] }}",
        min_ttl=60,
        refresh=True,
        deferrable=True,
        poke_interval=2,
        timeout=240,
    )
    TokenRefreshOperator(
        task_id="keep",
        conn_ids=["{{ dag_run.conf['keep_ok'] }}", "{{ dag_run.conf['keep_revoked'] }}"],
        fail_on_error=False,
    )
