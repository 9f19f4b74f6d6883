"""Many uses of one token right at its refresh point, on a CeleryExecutor deployment.

Every run is triggered with ``conf = {"conn_id": ..., "use_at": <epoch seconds>}``: the mapped
tasks (on the Celery workers) call the vendor's protected API through the hook at ``use_at`` or as
soon after as they get a slot, and the sensors defer at once so that their triggers (in the
triggerer, ``refresh=True``) check and refresh at ``use_at``. The harness picks ``use_at`` just after
the token's refresh point: every use needs a fresh token, and exactly one refresh must reach the
vendor.

``celery_token_herd``: 64 mapped tasks + 8 sensors (``make cluster-demo``);
``celery_token_herd_small``: 12 mapped tasks + 4 sensors = 16 uses (``make test``).
``celery_token_herd_peer``: 64 mapped tasks of the peer pattern (Variable JSON, refresh, ``Variable.set``).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, get_current_context, task

from airflow_provider_tokenrefresh.sensors.tokenrefresh import TokenValidSensor


class TokenAtExpirySensor(TokenValidSensor):
    """Defers at once; its trigger's first check (with refresh) happens at ``conf['use_at']``."""

    def execute(self, context: Any) -> Any:
        from airflow_provider_tokenrefresh.triggers.tokenrefresh import TokenValidTrigger

        use_at = float(context["dag_run"].conf["use_at"])
        self.defer(
            trigger=TokenValidTrigger(self.conn_id, self.min_ttl, True, max(0.5, use_at - time.time())),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )


@task(retries=0, execution_timeout=timedelta(minutes=5))
def use_token(i: int) -> dict[str, Any]:
    """Call the vendor's protected API with the connection's token at ``use_at``."""
    import os

    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

    conf = get_current_context()["dag_run"].conf
    use_at = float(conf["use_at"])
    while time.time() < use_at:  # the scenario's moment (wall clock), not a synchronization
        time.sleep(min(0.05, max(0.0, use_at - time.time())))
    started = time.perf_counter()
    hook = TokenRefreshHook(conf["conn_id"])
    hook.get_token()
    token_ms = (time.perf_counter() - started) * 1e3
    print(f"time_to_token_ms={token_ms:.1f}")  # read back by the cluster figure (make cluster-demo)
    with hook.http_client(timeout=30) as client:
        response = client.get("/api/v1/sample")
    response.raise_for_status()
    return {
        "i": i,
        "status": response.status_code,
        "late_by": round(time.time() - use_at, 2),
        "token_ms": round(token_ms, 1),
        "home": os.environ.get("AIRFLOW_HOME", ""),
    }


@task(retries=0, execution_timeout=timedelta(minutes=5))
def peer_use_token(i: int) -> dict[str, Any]:
    """The peer pattern users write today: read the token JSON from a Variable; when it is about to
    expire, refresh it with the connection's client credentials and ``Variable.set`` the answer.
    No lock, no intent: the cluster figure's peer (``make cluster-demo``)."""
    import json

    import httpx
    from airflow.sdk import BaseHook, Variable

    from airflow_provider_tokenrefresh.testing.peer import peer_refresh

    conf = get_current_context()["dag_run"].conf
    use_at = float(conf["use_at"])
    while time.time() < use_at:  # the scenario's moment (wall clock), not a synchronization
        time.sleep(min(0.05, max(0.0, use_at - time.time())))
    started = time.perf_counter()
    conn = BaseHook.get_connection(conf["conn_id"])
    token = json.loads(Variable.get(conf["variable"]))
    if token["expires_at"] - time.time() < 300:  # the same 5-minute margin as ours
        with httpx.Client(timeout=30) as http:
            token = peer_refresh(
                http,
                f"{conn.host}/api/v1/oauth2/token",
                token["refresh_token"],
                conn.login or "",
                conn.password or "",
            )
        Variable.set(conf["variable"], json.dumps(token))
    token_ms = (time.perf_counter() - started) * 1e3
    print(f"time_to_token_ms={token_ms:.1f}")
    response = httpx.get(
        f"{conn.host}/api/v1/sample", headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=30
    )
    response.raise_for_status()
    return {"i": i, "status": response.status_code, "token_ms": round(token_ms, 1)}


for dag_id, tasks, sensors in (("celery_token_herd", 64, 8), ("celery_token_herd_small", 12, 4)):
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        tags=["tokenrefresh", "celery"],
        doc_md=__doc__,
    ):
        use_token.expand(i=list(range(tasks)))
        for n in range(sensors):
            TokenAtExpirySensor(
                task_id=f"sensor_{n}",
                conn_id="{{ dag_run.conf['conn_id'] }}",
                refresh=True,
                poke_interval=2,
                timeout=300,
                retries=0,
            )

with DAG(
    dag_id="celery_token_herd_peer",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["tokenrefresh", "celery", "peer"],
    doc_md=__doc__,
):
    peer_use_token.expand(i=list(range(64)))
