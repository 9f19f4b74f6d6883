"""``TokenValidTrigger``: waits in the triggerer until a connection's stored token is valid.

Its kwargs are the connection id and numbers only — never a token.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class TokenValidTrigger(BaseTrigger):
    """Fires when the token of ``conn_id`` is valid for at least ``min_ttl`` seconds.

    :param conn_id: a ``tokenrefresh_*`` connection.
    :param min_ttl: seconds of validity required.
    :param refresh: refresh the token itself (through the same lock and store) instead of waiting
        for a keeper task to do it.
    :param poke_interval: seconds between checks.
    """

    def __init__(
        self, conn_id: str, min_ttl: float, refresh: bool = False, poke_interval: float = 30.0
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.min_ttl = min_ttl
        self.refresh = refresh
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and kwargs (no secrets)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "min_ttl": self.min_ttl,
                "refresh": self.refresh,
                "poke_interval": self.poke_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Check, sleep, check again; one event with non-secret status when valid or hopeless."""
        from airflow_provider_tokenrefresh.errors import (
            ConfigurationError,
            RefreshTokenRejected,
            TokenRefreshError,
        )
        from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
        from airflow_provider_tokenrefresh.lease import effective_margin

        hook = TokenRefreshHook(self.conn_id, min_ttl=self.min_ttl)
        try:
            checks = 0
            while True:
                # The sensor checked just before deferring: wait first, then look again.
                await asyncio.sleep(self.poke_interval)
                checks += 1
                try:
                    if self.refresh:
                        status = await hook.arefresh(min_ttl=self.min_ttl)
                    else:
                        status = await hook.atoken_status()
                except (RefreshTokenRejected, ConfigurationError) as exc:
                    # Waiting cannot fix these: a person must act.
                    yield TriggerEvent(
                        {"status": "error", "conn_id": self.conn_id, "kind": exc.kind, "message": str(exc)}
                    )
                    return
                except TokenRefreshError as exc:
                    self.log.warning("Token of %s not available yet: %s", self.conn_id, exc)
                    status = None
                if status is not None:
                    if status.get("state") == "reauth_required":
                        yield TriggerEvent(
                            {
                                "status": "error",
                                "conn_id": self.conn_id,
                                "kind": "reauth_required",
                                "message": f"connection {self.conn_id!r} needs re-authorization: {status.get('reason')}",
                            }
                        )
                        return
                    expires_in = status.get("expires_in")
                    if expires_in is not None and expires_in >= effective_margin(
                        self.min_ttl, status.get("lifetime")
                    ):
                        yield TriggerEvent(
                            {
                                "status": "success",
                                "conn_id": self.conn_id,
                                "generation": status.get("generation"),
                                "expires_at": status.get("expires_at"),
                                "checks": checks,
                            }
                        )
                        return
        finally:
            hook.close()  # the HTTP client and lock/store connections it built
