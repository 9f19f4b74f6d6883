"""Downstream authentication: put a valid token on vendor API calls, refresh once on a 401.

:class:`TokenAuth` is an ``httpx.Auth`` built like httpx's own auth classes: one generator
(``auth_flow``) serves the sync client; the async client runs the blocking token lookup in a
thread. :class:`RequestsTokenAuth` does the same for ``requests`` (the HTTP provider's hook).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

import httpx

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Generator

    from airflow_provider_tokenrefresh.keeper import RefreshOutcome
    from airflow_provider_tokenrefresh.tokens import TokenRecord


class KeeperLike(Protocol):
    """What the auth classes need of a keeper (:class:`~airflow_provider_tokenrefresh.keeper.TokenKeeper`
    has it; so does the HTTP provider's per-call adapter)."""

    def get_valid_token(self, min_ttl: float = ...) -> TokenRecord: ...

    def refresh(
        self, *, force: bool = ..., min_ttl: float = ..., unless_newer_than: int | None = ...
    ) -> RefreshOutcome: ...


class _BearerFromKeeper:
    """What both auth classes share: which header, which token, and the refresh after a 401.

    :param keeper: the connection's coordinator.
    :param min_ttl: seconds of validity a token must have left to be sent.
    :param header: header name (some vendors use another one).
    :param prefix: value prefix before the token.
    """

    def __init__(
        self,
        keeper: KeeperLike,
        *,
        min_ttl: float = 60.0,
        header: str = "Authorization",
        prefix: str = "Bearer ",
    ) -> None:
        self.keeper = keeper
        self.min_ttl = min_ttl
        self.header = header
        self.prefix = prefix

    def _value(self, record: TokenRecord) -> str:
        assert record.access_token is not None
        return f"{self.prefix}{record.access_token.get_secret_value()}"

    def _after_401(self, seen: TokenRecord) -> TokenRecord:
        # Anyone's newer generation answers a 401 on ``seen``: a burst of 401s refreshes once.
        return self.keeper.refresh(force=True, min_ttl=self.min_ttl, unless_newer_than=seen.generation).record


class TokenAuth(_BearerFromKeeper, httpx.Auth):
    """``httpx.Auth`` that sets ``Authorization: Bearer <token>`` and refreshes once on a 401."""

    def _apply(self, request: httpx.Request, record: TokenRecord) -> None:
        request.headers[self.header] = self._value(record)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send with the current token; on 401, refresh (once per generation) and resend once."""
        record = self.keeper.get_valid_token(self.min_ttl)
        self._apply(request, record)
        response = yield request
        if response.status_code == 401:
            self._apply(request, self._after_401(record))
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """As :meth:`auth_flow`, with the blocking store and lock calls in a worker thread."""
        record = await asyncio.to_thread(self.keeper.get_valid_token, self.min_ttl)
        self._apply(request, record)
        response = yield request
        if response.status_code == 401:
            self._apply(request, await asyncio.to_thread(self._after_401, record))
            yield request


class RequestsTokenAuth(_BearerFromKeeper):
    """``requests`` auth object: ``requests.get(url, auth=hook.requests_auth())``.

    Sets the bearer header and, on a 401, refreshes once and resends the request once.
    """

    def __call__(self, request: Any) -> Any:
        """Attach the token and a one-shot 401 handler to a prepared request."""
        record = self.keeper.get_valid_token(self.min_ttl)
        request.headers[self.header] = self._value(record)
        retried: list[bool] = []

        def on_response(response: Any, **kwargs: Any) -> Any:
            if response.status_code != 401 or retried:
                return response
            retried.append(True)
            fresh = self._after_401(record)
            response.content  # noqa: B018 - drain so the connection can be reused
            response.close()
            again = response.request.copy()
            again.headers[self.header] = self._value(fresh)
            new_response = response.connection.send(again, **kwargs)
            new_response.history.append(response)
            new_response.request = again
            return new_response

        request.register_hook("response", on_response)
        return request


def bearer_header(
    record: TokenRecord, header: str = "Authorization", prefix: str = "Bearer "
) -> dict[str, str]:
    """``{header: prefix + access token}`` for code that sets headers itself."""
    assert record.access_token is not None
    return {header: f"{prefix}{record.access_token.get_secret_value()}"}
