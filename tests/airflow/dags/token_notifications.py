"""Eight mapped tasks that all see one connection change state (tests/airflow/test_notifications.py).

``notify_reauth_crowd`` maps ``TokenValidSensor`` eight times over the connection in the run's conf
(a revoked one: every sensor sees it turn ``reauth_required``); ``notify_expiring_crowd`` maps
``TokenRefreshOperator`` eight times over a connection whose refresh token expires soon,
with a second notifier whose SMTP connection fails until the test repairs it. Both
notify through the SMTP provider's ``SmtpNotifier``; the test counts the mails that arrive.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import dag, task

from airflow_provider_tokenrefresh.operators.tokenrefresh import TokenRefreshOperator
from airflow_provider_tokenrefresh.sensors.tokenrefresh import TokenValidSensor

CROWD = 8


def mail(smtp_conn_id: str = "smtp_notify", to: str = "oncall@example.test") -> SmtpNotifier:
    return SmtpNotifier(
        to=to,
        from_email="tokenrefresh@example.test",
        smtp_conn_id=smtp_conn_id,
        subject="[tokenrefresh] {{ tokenrefresh.conn_id }}: {{ tokenrefresh.event }} (state {{ tokenrefresh.state }})",
        html_content=(
            "<p>{{ tokenrefresh.summary }}</p><ul><li>connection: {{ tokenrefresh.conn_id }}</li>"
            "<li>state: {{ tokenrefresh.state }}</li><li>reason: {{ tokenrefresh.reason }}</li>"
            "<li>access token expires at: {{ tokenrefresh.expires_at }}</li>"
            "<li>refresh token expires at: {{ tokenrefresh.refresh_expires_at }}</li></ul>"
        ),
    )


@task
def conn_id_lists(**context: Any) -> list[list[str]]:
    return [[context["dag_run"].conf["conn_id"]]] * CROWD


@dag(schedule=None, catchup=False, max_active_tasks=CROWD, tags=["test"])
def notify_reauth_crowd() -> None:
    TokenValidSensor.partial(
        task_id="wait",
        conn_id="{{ dag_run.conf['conn_id'] }}",
        refresh=True,
        poke_interval=5,
        timeout=120,
        on_reauth_required=mail(),
    ).expand(min_ttl=[60.0] * CROWD)


@dag(schedule=None, catchup=False, max_active_tasks=CROWD, tags=["test"])
def notify_expiring_crowd() -> None:
    TokenRefreshOperator.partial(
        task_id="keep",
        min_ttl=60,
        # The second mailer's SMTP connection points at a closed port on the first run: it fails,
        # is logged, does not stop the first, and is retried on the next run.
        on_refresh_token_expiring=[mail(), mail("smtp_flaky", "backup@example.test")],
        on_reauth_required=mail(),
        expiring_within=3600,
    ).expand(conn_ids=conn_id_lists())


notify_reauth_crowd()
notify_expiring_crowd()
