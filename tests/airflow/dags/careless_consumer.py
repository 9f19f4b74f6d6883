"""A consumer that does what users should not: prints the token and tries to return it.

Used by the masking test: Airflow's masker, fed by the provider on receipt, must hide the token in
the task log. (The return value is the token's length only: XCom never gets a secret.)
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task


@task
def careless(conn_id: str) -> int:
    import logging

    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

    token = TokenRefreshHook(conn_id).get_token(min_ttl=60)
    print(f"careless print of the token: {token}")
    logging.getLogger("careless").warning("careless log of the token: %s", token)
    return len(token)


with DAG(dag_id="careless_consumer", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    careless.override(task_id="careless")("{{ dag_run.conf['conn_id'] }}")
