"""A connection on ``store: sealed_variable`` through real components: a deferrable sensor that
refreshes (in the worker, or in the triggerer after a failed first check), a task that takes the
token and prints it carelessly, and a task whose arguments are templates of both Variables."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_tokenrefresh.sensors.tokenrefresh import TokenValidSensor


@task
def take_token(conn_id: str) -> int:
    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

    token = TokenRefreshHook(conn_id).get_token(min_ttl=60)
    print(f"careless print of the sealed token: {token}")
    return len(token)


@task
def show(sealed: str, old: str, sealed_json: str) -> dict[str, int]:
    print(f"the sealed Variable as a template renders it: {sealed}")
    print(f"the old Variable as a template renders it: {old}")
    print(f"the sealed Variable through var.json: {sealed_json}")
    return {"sealed_chars": len(sealed), "old_chars": len(old), "sealed_json_chars": len(sealed_json)}


with DAG(dag_id="sealed_store", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    conn = "{{ dag_run.conf['conn_id'] }}"
    wait = TokenValidSensor(
        task_id="wait", conn_id=conn, min_ttl=60, refresh=True, deferrable=True, poke_interval=5, timeout=300
    )
    took = take_token(conn)
    shown = show(
        "{{ var.value.get('trf_record__' ~ dag_run.conf['conn_id'], 'absent') }}",
        "{{ var.value.get('tokenrefresh_token__' ~ dag_run.conf['conn_id'], 'absent') }}",
        "{{ var.json.get('trf_record__' ~ dag_run.conf['conn_id'], {}) }}",
    )
    wait >> took >> shown
