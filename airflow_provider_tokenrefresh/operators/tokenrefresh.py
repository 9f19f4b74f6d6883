"""``TokenRefreshOperator``: keep one or many connections' tokens fresh (the keeper DAG's task)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from airflow.sdk import Context


class TokenRefreshOperator(BaseOperator):
    """Refresh the tokens of ``conn_ids`` that expire within ``min_ttl`` seconds (all, with ``force``).

    Connections are handled concurrently (at most ``max_workers`` at once), each through its own
    store and lock, so a keeper task never races a consumer task. The XCom return value holds only
    non-secret metadata per connection (expiry, generation, whether it refreshed or rotated).

    :param conn_ids: one connection id or a list of them (templated, like ``min_ttl`` and ``force``).
    :param min_ttl: refresh tokens with less than this many seconds left; ``None`` uses each
        connection's ``refresh_margin``. A short-lived refresh token is also renewed before it lapses.
    :param force: refresh even valid tokens.
    :param max_workers: connections refreshed at the same time.
    :param fail_on_error: fail the task if any connection failed (after trying all of them).
    :param on_reauth_required: a notifier (an Airflow ``BaseNotifier`` such as ``SmtpNotifier``) or
        a list of them, told once per connection that turns ``reauth_required`` — once across the
        whole deployment, however many tasks see it (docs/notifications.md). The notice is in the
        template context as ``tokenrefresh`` (``conn_id``, ``state``, ``reason``, expiries,
        ``summary``); it never holds a secret. A failing notifier never fails the task.
    :param on_refresh_token_expiring: notifier(s) told once when a connection's refresh token
        expires within ``expiring_within`` seconds (once per refresh-token expiry).
    :param expiring_within: how far ahead (seconds or a ``timedelta``) the refresh token's expiry
        is told; default one day.
    """

    template_fields: Sequence[str] = ("conn_ids", "min_ttl", "force")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        conn_ids: str | Sequence[str],
        min_ttl: float | str | None = None,
        force: bool | str = False,
        max_workers: int = 32,
        fail_on_error: bool = True,
        on_reauth_required: Any = None,
        on_refresh_token_expiring: Any = None,
        expiring_within: float | timedelta = 86400.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.on_reauth_required = on_reauth_required
        self.on_refresh_token_expiring = on_refresh_token_expiring
        self.expiring_within = expiring_within
        self.conn_ids = conn_ids
        self.min_ttl = min_ttl
        self.force = force
        self.max_workers = max_workers
        self.fail_on_error = fail_on_error

    def _ids(self) -> list[str]:
        ids = [self.conn_ids] if isinstance(self.conn_ids, str) else list(self.conn_ids)
        return list(dict.fromkeys(i.strip() for i in ids if i and i.strip()))

    def execute(self, context: Context) -> dict[str, Any]:
        """Refresh concurrently; return ``{conn_id: non-secret status}``."""
        from airflow_provider_tokenrefresh.fanout import refresh_all
        from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
        from airflow_provider_tokenrefresh.keeper import RefreshOutcome, TokenKeeper
        from airflow_provider_tokenrefresh.notify import notify_connection

        ids = self._ids()
        if not ids:
            raise ValueError("TokenRefreshOperator: conn_ids is empty")
        min_ttl = None if self.min_ttl in (None, "") else float(self.min_ttl)
        results: dict[str, dict[str, Any]] = {}
        keepers: dict[str, TokenKeeper] = {}
        hooks: dict[str, TokenRefreshHook] = {}
        dialects: dict[str, str] = {}
        for conn_id in ids:
            try:
                hook = TokenRefreshHook(conn_id, min_ttl=min_ttl)
                keepers[conn_id] = hook.keeper
                hooks[conn_id] = hook
                dialects[conn_id] = hook.settings.dialect.name
            except Exception as exc:  # noqa: BLE001 - a bad connection is reported, the others go on
                _account_unbuilt(conn_id, exc)
                results[conn_id] = {
                    "conn_id": conn_id,
                    "error": str(exc),
                    "error_kind": getattr(exc, "kind", "error"),
                }
        try:
            outcomes = refresh_all(
                keepers, force=_truthy(self.force), min_ttl=min_ttl, max_workers=self.max_workers
            )
            for conn_id, outcome in outcomes.items():
                hooks[conn_id].account(outcome)  # failures by kind and the gauges, as the hook's own calls
            for hook in hooks.values():
                notify_connection(
                    hook,
                    context,
                    on_reauth_required=self.on_reauth_required,
                    on_refresh_token_expiring=self.on_refresh_token_expiring,
                    expiring_within=self.expiring_within,
                )
        finally:
            for keeper in keepers.values():
                keeper.close()
        for conn_id, outcome in outcomes.items():
            if isinstance(outcome, RefreshOutcome):
                results[conn_id] = {"conn_id": conn_id, "dialect": dialects[conn_id], **outcome.status()}
            else:
                results[conn_id] = {
                    "conn_id": conn_id,
                    "error": str(outcome),
                    "error_kind": getattr(outcome, "kind", "error"),
                }
        failed = {cid: r for cid, r in results.items() if "error" in r}
        for cid, result in results.items():
            if cid in failed:
                self.log.error("%s: %s", cid, result["error"])
            else:
                self.log.info(
                    "%s: %s, generation %s, expires at %s",
                    cid,
                    "refreshed" + (" (rotated)" if result.get("rotated") else "")
                    if result.get("refreshed")
                    else "valid",
                    result.get("generation"),
                    result.get("expires_at"),
                )
        if failed and self.fail_on_error:
            from airflow.sdk.exceptions import AirflowException

            raise AirflowException(
                f"{len(failed)} of {len(ids)} connection(s) could not be kept valid: "
                + "; ".join(f"{cid}: {r['error']}" for cid, r in failed.items())
            )
        return results


def _account_unbuilt(conn_id: str, exc: BaseException) -> None:
    """A connection whose hook could not be built (unknown id, bad field) is a failure by kind too."""
    from airflow_provider_tokenrefresh.metrics import ConnectionMetrics

    ConnectionMetrics(conn_id, None).failure(exc)


def _truthy(value: object) -> bool:
    """A templated flag: a real bool, or its rendering as text."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)
