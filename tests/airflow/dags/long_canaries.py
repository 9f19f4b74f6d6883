"""Long secrets through every path a task has: hook, operator, sensor (deferred), the status CLI.

Used by ``tests/airflow/test_long_canaries_real.py``: the connections hold 454- and 2,000-character
tokens and client secrets with ``+ / =``, and the vendor echoes a refused refresh token in its
error ("Invalid refresh token: <token>"). Each task does what a user would do with the provider
(print what it got back, log the error it caught, return non-secret facts); the test then looks
for any 12-character piece of any secret everywhere the deployment wrote something.

Connections (created by the test): ``long_ok`` (a live token family), ``long_bad_raise``,
``long_bad_caught`` and ``long_bad_op`` (refresh tokens the vendor never issued), ``long_sensor_ok``
and ``long_sensor_bad`` (the same, each on its own vendor, whose first answer is a 503 so that
both sensors defer and refresh in the triggerer).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_tokenrefresh.operators.tokenrefresh import TokenRefreshOperator
from airflow_provider_tokenrefresh.sensors.tokenrefresh import TokenValidSensor


@task
def use_token(conn_id: str, path: str) -> dict[str, object]:
    """The success path: a token from the hook, a call to the vendor's protected API."""
    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

    with TokenRefreshHook(conn_id, min_ttl=60) as hook:
        token = hook.get_token()
        with hook.http_client(timeout=30) as client:
            response = client.get(path)
        status = hook.token_status()
    print(f"status of {conn_id}: {status}")
    return {"status": response.status_code, "token_length": len(token), "generation": status["generation"]}


@task
def reject_raise(conn_id: str) -> None:
    """The rejection path, uncaught: the task fails with the provider's exception and its chain."""
    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

    TokenRefreshHook(conn_id, min_ttl=60).get_token()


@task
def reject_caught(conn_id: str) -> dict[str, object]:
    """The rejection path, caught: printed, logged and returned (to XCom) as users do."""
    import logging

    from airflow_provider_tokenrefresh.errors import TokenRefreshError
    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

    try:
        TokenRefreshHook(conn_id, min_ttl=60).get_token()
    except TokenRefreshError as exc:
        print(f"caught: {exc!s}\nrepr: {exc!r}\ncause: {exc.__cause__!r}")
        logging.getLogger("long_canaries").exception("refresh of %s failed", conn_id)
        return {"error": str(exc), "kind": exc.kind, "repr": repr(exc)}
    raise AssertionError(f"{conn_id}: the vendor accepted a refresh token it never issued")


@task(trigger_rule="all_done")
def status_cli(conn_ids: list[str], metadata_db: str) -> list[dict[str, object]]:
    """``airflow-tokenrefresh status`` (table and JSON) from a task; both outputs go to the log.

    The CLI reads the metadata database, like Airflow's own CLI: a task process has no database
    URL (Airflow 3 blanks it), so the run's conf names it, as a worker host's config would."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).with_name("airflow-tokenrefresh"))
    env = {
        **os.environ,
        "_AIRFLOW_PROCESS_CONTEXT": "server",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
    }
    table = subprocess.run([exe, "status", *conn_ids], env=env, capture_output=True, text=True, check=False)
    print(f"status table (exit {table.returncode}):\n{table.stdout}\nstderr:\n{table.stderr}")
    as_json = subprocess.run(
        [exe, "status", "--json", *conn_ids], env=env, capture_output=True, text=True, check=False
    )
    print(f"status --json (exit {as_json.returncode}):\n{as_json.stdout}\nstderr:\n{as_json.stderr}")
    rows: list[dict[str, object]] = json.loads(as_json.stdout)
    return rows


CONN_IDS = [
    "long_ok",
    "long_bad_raise",
    "long_bad_caught",
    "long_bad_op",
    "long_sensor_ok",
    "long_sensor_bad",
]

with DAG(dag_id="long_canaries", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    sensors = [
        TokenValidSensor(
            task_id=f"wait_{conn_id}",
            conn_id=conn_id,
            min_ttl=60,
            refresh=True,
            deferrable=True,
            poke_interval=2,
            timeout=120,
            retries=0,
        )
        for conn_id in ("long_sensor_ok", "long_sensor_bad")
    ]
    used = use_token.override(task_id="use_token", retries=0)("long_ok", "/api/v1/sample")
    keep = TokenRefreshOperator(
        task_id="keep_fresh",
        conn_ids=["long_ok", "long_bad_op"],
        force=True,
        fail_on_error=False,
        retries=0,
    )
    raised = reject_raise.override(task_id="reject_raise", retries=0)("long_bad_raise")
    caught = reject_caught.override(task_id="reject_caught", retries=0)("long_bad_caught")
    used >> keep
    [*sensors, keep, raised, caught] >> status_cli.override(task_id="status_cli", retries=0)(
        CONN_IDS, "{{ dag_run.conf['metadata_db'] }}"
    )
