"""The HTTP provider (``apache-airflow-providers-http``) with the tokens of a ``tokenrefresh_*``
connection, and no token in DAG code.

* ``HttpOperator(..., auth_type=tokenrefresh_auth("vendor_a"))`` and
  ``HttpHook(auth_type=tokenrefresh_auth("vendor_a"))``: the HTTP connection gives the base URL
  (and headers, TLS options), the token connection the bearer token. ``HttpHook`` calls
  ``auth_type`` with the HTTP connection's login and password; they are ignored. A 401 refreshes
  once (unless someone else already did) and resends once.
* :class:`~airflow_provider_tokenrefresh.sensors.http.TokenRefreshHttpSensor`: ``HttpSensor`` with
  one more argument, ``token_conn_id`` (``HttpSensor`` takes no ``auth_type`` in HTTP provider 6.3.0).

This module imports nothing from the HTTP provider (it is not a dependency of this package).

Not for ``deferrable=True`` on ``HttpOperator``/``HttpSensor``: their triggers run
``HttpAsyncHook`` (aiohttp) with an auth type serialized into the trigger's kwargs as a class
path, and aiohttp accepts only ``BasicAuth`` objects; a bearer token could only go in headers,
which are trigger kwargs (stored in the metadata DB). For a deferrable call use
:class:`~airflow_provider_tokenrefresh.operators.http.TokenRefreshHttpOperator`, whose trigger
fetches the token in the triggerer. The upstream change that would lift this:
let ``HttpAsyncHook`` take an auth callable that sets headers at request time in the triggerer,
serialized by import path and constructor arguments (apache/airflow#71254).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.auth import RequestsTokenAuth
    from airflow_provider_tokenrefresh.keeper import RefreshOutcome
    from airflow_provider_tokenrefresh.tokens import TokenRecord


class _PerCallKeeper:
    """The connection's keeper, built for each token lookup and closed after it: a requests
    session has no close hook for its auth, so nothing is left open between requests."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id

    def get_valid_token(self, min_ttl: float = 300.0) -> TokenRecord:
        from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

        with TokenRefreshHook(self.conn_id) as hook:
            return hook.get_record(min_ttl)

    def refresh(
        self, *, force: bool = False, min_ttl: float = 300.0, unless_newer_than: int | None = None
    ) -> RefreshOutcome:
        from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

        with TokenRefreshHook(self.conn_id) as hook:
            outcome: RefreshOutcome = hook._observed(
                lambda: hook.keeper.refresh(force=force, min_ttl=min_ttl, unless_newer_than=unless_newer_than)
            )
            return outcome


class TokenRefreshAuthType:
    """An ``auth_type`` for the HTTP provider; see :func:`tokenrefresh_auth`."""

    def __init__(self, conn_id: str, *, min_ttl: float | None = None) -> None:
        self.conn_id = conn_id
        self.min_ttl = min_ttl

    def __call__(self, *_login_password: object) -> RequestsTokenAuth:
        """What ``HttpHook`` calls (with the HTTP connection's login and password, ignored)."""
        from airflow_provider_tokenrefresh.auth import RequestsTokenAuth
        from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

        min_ttl = self.min_ttl
        if min_ttl is None:
            with TokenRefreshHook(self.conn_id) as hook:
                min_ttl = hook.min_ttl
        return RequestsTokenAuth(_PerCallKeeper(self.conn_id), min_ttl=min_ttl)

    def __repr__(self) -> str:
        return f"tokenrefresh_auth({self.conn_id!r})"


def tokenrefresh_auth(conn_id: str, *, min_ttl: float | None = None) -> TokenRefreshAuthType:
    """``auth_type=tokenrefresh_auth("vendor_a")`` for ``HttpOperator``/``HttpHook``: a bearer token
    of the ``tokenrefresh_*`` connection ``conn_id``, valid for ``min_ttl`` seconds (default: the
    connection's), refreshed once and the request resent once on a 401."""
    return TokenRefreshAuthType(conn_id, min_ttl=min_ttl)


__all__ = ["TokenRefreshAuthType", "tokenrefresh_auth"]
