"""Many deferred waits on one triggerer (tests/airflow/test_triggerer_crowd.py).

``token_sensor_crowd`` maps the real ``TokenValidSensor`` over the connection ids in the run's conf;
``token_trigger_crowd`` maps a task that defers straight to ``TokenValidTrigger`` (no check on the
worker first), so that fifty triggers reach the triggerer within seconds of each other.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, dag, task

from airflow_provider_tokenrefresh.sensors.tokenrefresh import TokenValidSensor


class DeferToTokenTrigger(BaseOperator):
    """Defer at once to ``TokenValidTrigger(refresh=True)``; succeed with its event."""

    def __init__(self, *, conn_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def execute(self, context: Any) -> None:
        from datetime import timedelta

        from airflow_provider_tokenrefresh.triggers.tokenrefresh import TokenValidTrigger

        self.defer(
            trigger=TokenValidTrigger(self.conn_id, 300.0, refresh=True, poke_interval=1.0),
            method_name="execute_complete",
            timeout=timedelta(minutes=10),
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if not event or event.get("status") != "success":
            raise RuntimeError(f"token of {self.conn_id!r} did not become valid: {event}")
        return event


@task
def conn_ids(**context: Any) -> list[str]:
    return list(context["dag_run"].conf["conn_ids"])


@task
def sensor_kwargs(**context: Any) -> list[dict[str, Any]]:
    conf = context["dag_run"].conf
    return [{"conn_id": conn_id, "refresh": bool(conf.get("refresh"))} for conn_id in conf["conn_ids"]]


@dag(schedule=None, catchup=False, max_active_tasks=64, tags=["test"])
def token_sensor_crowd() -> None:
    TokenValidSensor.partial(task_id="wait", poke_interval=1.0, timeout=600).expand_kwargs(sensor_kwargs())


@dag(schedule=None, catchup=False, max_active_tasks=64, tags=["test"])
def token_trigger_crowd() -> None:
    DeferToTokenTrigger.partial(task_id="wait").expand(conn_id=conn_ids())


token_sensor_crowd()
token_trigger_crowd()
