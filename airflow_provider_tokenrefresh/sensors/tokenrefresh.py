"""``TokenValidSensor``: wait until a connection's token is valid for a while (deferrable by default)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class TokenValidSensor(BaseSensorOperator):
    """Succeeds when the stored token of ``conn_id`` has at least ``min_ttl`` seconds left.

    Fails at once (no retries can help) when the connection needs re-authorization or is
    misconfigured, with the connection named and what to do.

    :param conn_id: a ``tokenrefresh_*`` connection (templated).
    :param min_ttl: seconds of validity required.
    :param refresh: refresh the token itself when needed (through the same lock and store),
        instead of waiting for a keeper DAG.
    :param deferrable: wait in the triggerer (default) instead of occupying a worker slot.
    :param on_reauth_required: a notifier (an Airflow ``BaseNotifier`` such as ``SmtpNotifier``) or
        a list of them, told once when the connection turns ``reauth_required`` — once across the
        whole deployment, not on every poke or run (docs/notifications.md). The notice is in the
        template context as ``tokenrefresh``; it never holds a secret. A failing notifier never
        fails the sensor.
    :param on_refresh_token_expiring: notifier(s) told once when the refresh token expires within
        ``expiring_within`` seconds (once per refresh-token expiry).
    :param expiring_within: how far ahead (seconds or a ``timedelta``); default one day.
    """

    template_fields: Sequence[str] = ("conn_id",)
    ui_color = "#e8f0f8"

    def __init__(
        self,
        *,
        conn_id: str,
        min_ttl: float = 300.0,
        refresh: bool = False,
        deferrable: bool = True,
        poke_interval: float = 30.0,
        timeout: float = 3600.0,
        on_reauth_required: Any = None,
        on_refresh_token_expiring: Any = None,
        expiring_within: float | timedelta = 86400.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.on_reauth_required = on_reauth_required
        self.on_refresh_token_expiring = on_refresh_token_expiring
        self.expiring_within = expiring_within
        self.conn_id = conn_id
        self.min_ttl = min_ttl
        self.refresh = refresh
        self.deferrable = deferrable

    def _fail(self, message: str) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(message)

    def poke(self, context: Context) -> bool:
        """One check (and refresh, with ``refresh=True``)."""
        return self._check(context, refresh=self.refresh)

    def _notify(self, hook: Any, context: Context | None) -> None:
        """Tell the notifiers what is due for this connection (once per state change; never raises)."""
        from airflow_provider_tokenrefresh.notify import notify_connection

        notify_connection(
            hook,
            context,
            on_reauth_required=self.on_reauth_required,
            on_refresh_token_expiring=self.on_refresh_token_expiring,
            expiring_within=self.expiring_within,
        )

    def _check(self, context: Context | None, *, refresh: bool) -> bool:
        from airflow_provider_tokenrefresh.errors import (
            ConfigurationError,
            RefreshTokenRejected,
            TokenRefreshError,
        )
        from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

        try:
            with TokenRefreshHook(self.conn_id, min_ttl=self.min_ttl) as hook:
                try:
                    status = hook.refresh(min_ttl=self.min_ttl) if refresh else hook.token_status()
                finally:
                    self._notify(hook, context)
        except (RefreshTokenRejected, ConfigurationError) as exc:
            self._fail(str(exc))  # waiting cannot fix these: a person must act
            return False
        except TokenRefreshError as exc:
            # Vendor down, lock busy, outcome unknown: not valid yet, keep waiting.
            self.log.warning("Token of %s not available yet: %s", self.conn_id, exc)
            return False
        if status.get("state") == "reauth_required":
            self._fail(f"connection {self.conn_id!r} needs re-authorization: {status.get('reason')}")
        expires_in = status.get("expires_in")
        self.log.info(
            "Token of %s: generation %s, expires in %ss", self.conn_id, status.get("generation"), expires_in
        )
        from airflow_provider_tokenrefresh.lease import effective_margin

        # The same rule as the keeper's: a short-lived token counts as valid for half its life.
        return expires_in is not None and expires_in >= effective_margin(self.min_ttl, status.get("lifetime"))

    def execute(self, context: Context) -> Any:
        """Check (and refresh) once here; if still not valid and deferrable, hand the wait to the triggerer."""
        if not self.deferrable:
            return super().execute(context)
        if self._check(context, refresh=self.refresh):
            return None
        from airflow_provider_tokenrefresh.triggers.tokenrefresh import TokenValidTrigger

        self.defer(
            trigger=TokenValidTrigger(self.conn_id, self.min_ttl, self.refresh, self.poke_interval),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired; return its non-secret event."""
        if self.on_reauth_required or self.on_refresh_token_expiring:
            from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

            with TokenRefreshHook(self.conn_id, min_ttl=self.min_ttl) as hook:
                self._notify(hook, context)  # what the triggerer saw: told from here, once
        if not event or event.get("status") != "success":
            self._fail((event or {}).get("message") or f"token of {self.conn_id!r} did not become valid")
        assert event is not None
        self.log.info(
            "Token of %s valid: generation %s, expires at %s (after %s checks in the triggerer)",
            self.conn_id,
            event.get("generation"),
            event.get("expires_at"),
            event.get("checks"),
        )
        return event
