"""Notifications on real components: SmtpNotifier → a real SMTP server (aiosmtpd) on 127.0.0.1.

Eight mapped tasks see one connection change state at once; exactly one mail must arrive, naming
the connection and the state, carrying no secret; a second run in the same state sends none.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from aiosmtpd.controller import Controller

from airflow_provider_tokenrefresh.testing import IsalesBearerEmulator, OAuth2PostEmulator
from airflow_provider_tokenrefresh.testing.connections import emulator_connection
from airflow_provider_tokenrefresh.testing.stack import free_port

from .conftest import Deployment

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_tokenrefresh.testing import VendorEmulator

pytestmark = pytest.mark.airflow


@dataclass
class Mail:
    to: list[str]
    subject: str
    body: str
    raw: str


@dataclass
class Inbox:
    """aiosmtpd handler: every message that reached DATA, parsed."""

    mails: list[Mail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = (
            envelope.content.decode(errors="replace")
            if isinstance(envelope.content, bytes)
            else envelope.content
        )
        msg = email.message_from_string(raw, policy=email.policy.default)
        part = msg.get_body(preferencelist=("html", "plain"))
        body = part.get_content() if part is not None else ""
        with self.lock:
            self.mails.append(Mail(list(envelope.rcpt_tos), str(msg["subject"]), str(body), raw))
        return "250 OK"

    def to(self, address: str) -> list[Mail]:
        with self.lock:
            return [m for m in self.mails if address in m.to]


@pytest.fixture(scope="module")
def smtp(deployment: Deployment) -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    deployment.stack.put_connection(
        "smtp_notify",
        "smtp",
        host="127.0.0.1",
        port=port,
        extra={"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 10},
    )
    try:
        yield inbox, port
    finally:
        controller.stop()


def _secrets(emu: VendorEmulator, *seeds: Any) -> set[str]:
    values = {emu.client_secret}
    for family in emu.families():
        snap = emu.current_tokens(family)
        values |= {snap.access_token, snap.refresh_token}
    for seed in seeds:
        values |= {seed.access_token, seed.refresh_token}
    return {v for v in values if v and len(v) >= 8}


def _run(deployment: Deployment, dag_id: str, conn_id: str) -> str:
    stack = deployment.stack
    stack.wait_for_dag(dag_id)
    run_id = stack.trigger(dag_id, {"conn_id": conn_id})
    stack.wait_run(dag_id, run_id, timeout=300)
    return run_id


def test_eight_sensors_seeing_reauth_required_send_one_mail(
    deployment: Deployment, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    started = time.monotonic()
    emu = OAuth2PostEmulator(client_secret="CANARY-notify-client-secret-7c21").start()
    try:
        seed = emu.issue_tokens()
        emu.revoke_family(emu.family_of(seed.refresh_token) or "", "user removed the app")
        deployment.stack.put_connection(
            "notify_revoked",
            "tokenrefresh_oauth2_post",
            **emulator_connection(emu, seed.refresh_token, None),
        )
        run_id = _run(deployment, "notify_reauth_crowd", "notify_revoked")
        tis = deployment.stack.task_instances("notify_reauth_crowd", run_id)
        assert len(tis) == 8
        assert {ti["state"] for ti in tis} == {"failed"}  # the sensors still fail fast, as before
        mails = inbox.to("oncall@example.test")
        assert len(mails) == 1, [m.subject for m in mails]
        (mail,) = mails
        assert "notify_revoked" in mail.subject and "reauth_required" in mail.subject
        assert "notify_revoked" in mail.body and "reauth_required" in mail.body
        assert "invalid_grant" in mail.body  # the (redacted) reason
        for secret in _secrets(emu, seed):
            assert secret not in mail.raw
        # Same state, a second run: nobody is told again.
        again = _run(deployment, "notify_reauth_crowd", "notify_revoked")
        assert {ti["state"] for ti in deployment.stack.task_instances("notify_reauth_crowd", again)} == {
            "failed"
        }
        assert len(inbox.to("oncall@example.test")) == 1
        log = deployment.stack.run_logs("notify_reauth_crowd", run_id)
        assert log.count("Notified SmtpNotifier for connection notify_revoked") == 1
    finally:
        emu.stop()
    print(
        f"reauth scenario: {len(inbox.to('oncall@example.test'))} mail(s) in {time.monotonic() - started:.1f}s"
    )


def test_refresh_token_expiring_sends_one_mail_and_a_failed_notifier_is_retried(
    deployment: Deployment, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    started = time.monotonic()
    before = len(inbox.to("oncall@example.test"))
    closed = free_port()  # nothing listens there: the second notifier fails
    deployment.stack.put_connection(
        "smtp_flaky",
        "smtp",
        host="127.0.0.1",
        port=closed,
        extra={"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 5},
    )
    emu = IsalesBearerEmulator(
        client_secret="CANARY-notify-isales-secret-93ab", access_ttl=3600, refresh_ttl=600
    ).start()
    try:
        seed = emu.issue_tokens()
        deployment.stack.put_connection(
            "notify_expiring",
            "tokenrefresh_bearer_json",
            **emulator_connection(emu, seed.refresh_token, seed.access_token),
        )
        run_id = _run(deployment, "notify_expiring_crowd", "notify_expiring")
        tis = deployment.stack.task_instances("notify_expiring_crowd", run_id)
        keep = [ti for ti in tis if ti["task_id"] == "keep"]
        assert len(keep) == 8
        assert {ti["state"] for ti in tis} == {"success"}, deployment.stack.explain(
            "notify_expiring_crowd", run_id
        )
        mails = inbox.to("oncall@example.test")[before:]
        assert len(mails) == 1, [m.subject for m in mails]
        (mail,) = mails
        assert "notify_expiring" in mail.subject and "refresh_token_expiring" in mail.subject
        assert "notify_expiring" in mail.body and "refresh token expires at" in mail.body
        for secret in _secrets(emu, seed):
            assert secret not in mail.raw
        assert inbox.to("backup@example.test") == []
        log = deployment.stack.run_logs("notify_expiring_crowd", run_id)
        assert "Notifier SmtpNotifier failed for connection notify_expiring" in log
        # Repair the second mailer's SMTP connection: the next run retries it, once; the first is not resent.
        deployment.stack.put_connection(
            "smtp_flaky",
            "smtp",
            host="127.0.0.1",
            port=port,
            extra={"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 10},
        )
        _run(deployment, "notify_expiring_crowd", "notify_expiring")
        assert len(inbox.to("oncall@example.test")[before:]) == 1
        backup = inbox.to("backup@example.test")
        assert len(backup) == 1
        assert "notify_expiring" in backup[0].subject
    finally:
        emu.stop()
    print(
        f"expiring scenario: 1 + {len(inbox.to('backup@example.test'))} mail(s) in {time.monotonic() - started:.1f}s"
    )
