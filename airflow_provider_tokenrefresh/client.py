"""The refresh client: sends a dialect's refresh request over httpx, sync or async.

One sans-I/O generator (:meth:`RefreshClient._flow`) holds the whole policy — build the request,
decide whether a failure may be retried, parse the answer — and yields *actions* (send this, sleep
that long). Two small drivers run it: :meth:`RefreshClient.refresh` with ``httpx.Client`` and
:meth:`RefreshClient.arefresh` with ``httpx.AsyncClient``, in the way httpx's own ``auth_flow``
serves both clients with one generator.

Retry policy, because a rotated refresh token can be spent only once:

* connection failed before the request was sent (refused, connect timeout, TLS handshake): retried
  with jittered exponential backoff;
* HTTP 429 or 503 with a ``Retry-After`` the vendor promises: retried after that delay;
* anything after the request may have reached the vendor (read timeout, dropped connection):
  never retried — :class:`RefreshOutcomeUnknown` tells the coordinator to re-read the store.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_tokenrefresh.dialects.wire import (
    ClientCredentials,
    ResponseContext,
    WireRequest,
    build_request,
    endpoint_url,
    parse_response,
)
from airflow_provider_tokenrefresh.errors import (
    ConfigurationError,
    MalformedResponseError,
    RefreshOutcomeUnknown,
    TokenRefreshError,
    TransientRefreshError,
)
from airflow_provider_tokenrefresh.redaction import install_log_filter, redact, redact_url, remember_secrets
from airflow_provider_tokenrefresh.transport import (
    Action,
    Body,
    Failure,
    Result,
    Send,
    Sleep,
    ThreadClients,
    default_ssl_context,
    failure_for,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator, Iterator
    from datetime import datetime

    import httpx

    from airflow_provider_tokenrefresh.dialects.spec import DialectSpec
    from airflow_provider_tokenrefresh.tokens import TokenSet

log = logging.getLogger(__name__)

#: Answers larger than this are refused: a token answer is a few hundred bytes.
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ClientSettings:
    """Everything about *where* and *how* to call, as read from a connection.

    :param base_url: scheme, host and optional port (``https://vendor.example:8743``).
    :param endpoint: path override; the dialect's documented path when ``None``.
    :param verify: TLS verification: ``True`` (system/certifi CAs), ``False``, or a CA bundle path.
    :param client_cert: client certificate (PEM) for mutual TLS; ``client_key`` its key if separate.
    :param allow_insecure_http: permit ``http://`` (tests, emulators); refused otherwise.
    :param timeout: seconds for the whole exchange; connecting gets at most 10 of them.
    :param max_attempts: tries for failures that are safe to retry.
    :param default_expires_in: access-token lifetime to assume when an answer has none.
    :param conn_id: Airflow connection id, for error messages.
    """

    base_url: str
    credentials: ClientCredentials = field(default_factory=lambda: ClientCredentials(None, None))
    endpoint: str | None = None
    verify: bool | str = True
    client_cert: str | None = None
    client_key: str | None = None
    allow_insecure_http: bool = False
    timeout: float = 30.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    max_retry_after: float = 30.0
    default_expires_in: float | None = None
    conn_id: str | None = None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


class RefreshClient:
    """Calls one connection's refresh endpoint in one dialect.

    :param spec: the dialect.
    :param settings: where and how to call.
    :param on_secret: called with every secret value on receipt (Airflow passes ``mask_secret``),
        before the new tokens are returned to anyone.
    :param transport: an httpx transport to use instead of the network (tests).
    :param clock: the time expiries are computed from (default: now, UTC).
    """

    def __init__(
        self,
        spec: DialectSpec,
        settings: ClientSettings,
        *,
        on_secret: Callable[[str], object] | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self._on_secret = on_secret
        self._transport = transport
        self._async_transport = async_transport
        self._sleep = sleep
        self._clock = clock
        self.url = endpoint_url(settings.base_url, settings.endpoint or spec.request.path)
        self.safe_url = redact_url(self.url)
        self._check_url()
        self._ssl: ssl.SSLContext | None = None
        self._client: httpx.Client | None = None
        #: A client (or one per thread) another owner lends for a while (:meth:`lend`); never closed here.
        self._lent: httpx.Client | ThreadClients | None = None
        install_log_filter()
        self._secret(settings.credentials.client_secret)

    # -- configuration -------------------------------------------------------------------------

    def _config_error(self, message: str) -> ConfigurationError:
        return ConfigurationError(
            message, dialect=self.spec.name, endpoint=self.safe_url, conn_id=self.settings.conn_id
        )

    def _check_url(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise self._config_error("field 'host' must be a base URL such as https://vendor.example[:port]")
        if parts.username or parts.password:
            raise self._config_error("field 'host' must not contain credentials; use login and password")
        if parts.scheme == "http" and not self.settings.allow_insecure_http:
            raise self._config_error(
                "field 'host' uses plain http://, which would send tokens unencrypted; use https:// or set "
                "extra 'allow_insecure_http' to true (tests and emulators only)"
            )

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context: verification on unless disabled, custom CA bundle, client certificate."""
        if self._ssl is not None:
            return self._ssl
        verify = self.settings.verify
        try:
            if verify is False:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            elif isinstance(verify, str):
                ctx = ssl.create_default_context(cafile=verify)
            else:
                ctx = default_ssl_context()
        except (OSError, ssl.SSLError) as exc:
            raise self._config_error(
                f"extra 'verify' names a CA bundle that cannot be loaded: {exc}"
            ) from None
        if self.settings.client_cert:
            try:
                ctx.load_cert_chain(self.settings.client_cert, self.settings.client_key)
            except (OSError, ssl.SSLError) as exc:
                raise self._config_error(
                    f"extra 'client_cert'/'client_key' cannot be loaded: {type(exc).__name__}"
                ) from None
        self._ssl = ctx
        return ctx

    def _client_kwargs(self) -> dict[str, object]:
        import httpx

        return {
            # Also for http:// (emulators): httpx would otherwise load a CA bundle per client.
            "verify": self.ssl_context(),
            "timeout": httpx.Timeout(self.settings.timeout, connect=min(10.0, self.settings.timeout)),
            "follow_redirects": False,
            "trust_env": False,
        }

    def _secret(self, *values: str | None) -> None:
        remember_secrets(*values)
        if self._on_secret is not None:
            for value in values:
                if value:
                    self._on_secret(value)

    # -- the policy (sans-I/O) -------------------------------------------------------------------

    def _flow(
        self, refresh_token: str, access_token: str | None, send_before: float | None = None
    ) -> Generator[Action, Result, TokenSet]:
        self._secret(refresh_token, access_token)
        try:
            request = build_request(
                self.spec, self.url, self.settings.credentials, refresh_token, access_token
            )
        except TokenRefreshError as exc:
            raise exc.with_conn_id(self.settings.conn_id) if self.settings.conn_id else exc from None
        # The whole Basic credential, as sent: a proxy or vendor that echoes the header is hidden too.
        self._secret(request.headers.get("Authorization", "").removeprefix("Basic ") or None)
        context = ResponseContext(
            endpoint=self.safe_url,
            secrets=(refresh_token, access_token, self.settings.credentials.client_secret),
            default_expires_in=self.settings.default_expires_in,
        )
        attempts = max(1, self.settings.max_attempts)
        for attempt in range(1, attempts + 1):
            log.info(
                "Refreshing token: dialect=%s %s %s (attempt %d)",
                self.spec.name,
                request.method,
                request.safe_url,
                attempt,
            )
            if send_before is not None and time.monotonic() >= send_before:
                raise TransientRefreshError(
                    "not sent: the vendor's reuse window for this refresh token has closed",
                    dialect=self.spec.name,
                    endpoint=self.safe_url,
                    conn_id=self.settings.conn_id,
                )
            result = yield Send(request)
            if isinstance(result, Failure):
                if result.kind == "not_sent" and attempt < attempts:
                    delay = self._backoff(attempt)
                    log.warning("Could not connect (%s); retrying in %.2fs", result.detail, delay)
                    yield Sleep(delay)
                    continue
                raise self._failure_error(result, attempt)
            assert result is not None
            if result.status in (429, 503) and attempt < attempts:
                wait = parse_retry_after(result.headers.get("retry-after"))
                if wait is not None and wait <= self.settings.max_retry_after:
                    delay = wait + random.uniform(0, min(1.0, self.settings.backoff_base))  # noqa: S311
                    log.warning(
                        "Vendor answered HTTP %d with Retry-After; retrying in %.2fs", result.status, delay
                    )
                    yield Sleep(delay)
                    continue
            try:
                now = self._clock() if self._clock is not None else None
                tokens: TokenSet = parse_response(self.spec, result.status, result.body, context, now=now)
            except TokenRefreshError as exc:
                raise (exc.with_conn_id(self.settings.conn_id) if self.settings.conn_id else exc) from None
            # Register the new secrets before anyone can see them.
            self._secret(
                tokens.access_token.get_secret_value(),
                tokens.refresh_token.get_secret_value() if tokens.refresh_token else None,
            )
            log.info(
                "Refresh succeeded: dialect=%s rotated=%s expires_at=%s",
                self.spec.name,
                tokens.refresh_token is not None and tokens.refresh_token.get_secret_value() != refresh_token,
                tokens.expires_at.isoformat(timespec="seconds"),
            )
            return tokens
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography

    def _failure_error(self, failure: Failure, attempt: int) -> TokenRefreshError:
        kwargs: dict[str, Any] = {
            "dialect": self.spec.name,
            "endpoint": self.safe_url,
            "conn_id": self.settings.conn_id,
        }
        detail = redact(failure.detail)
        if failure.kind == "not_sent":
            return TransientRefreshError(
                f"could not reach the vendor after {attempt} attempt(s) ({detail}); the request was not sent, "
                "the refresh token is unchanged",
                **kwargs,
            )
        if failure.kind == "too_large":
            return MalformedResponseError(
                f"answer larger than {self.settings.max_response_bytes} bytes refused; the vendor may have "
                "rotated the refresh token",
                **kwargs,
            )
        return RefreshOutcomeUnknown(
            f"the request was sent but no answer arrived ({detail}); the vendor may have rotated the refresh "
            "token, so it is not retried blindly: re-read the store before trying again",
            **kwargs,
        )

    # -- I/O drivers -----------------------------------------------------------------------------

    def refresh(
        self, refresh_token: str, access_token: str | None = None, *, send_before: float | None = None
    ) -> TokenSet:
        """Refresh synchronously.

        :param refresh_token: the current refresh token.
        :param access_token: the current access token (dialects that send it, e.g. bearer_json).
        :param send_before: a ``time.monotonic()`` after which no request (nor retry) is sent;
            then ``TransientRefreshError`` (a resend inside a vendor's reuse window).
        :raises TokenRefreshError: one of its subclasses; the message holds no secret.
        """
        flow = self._flow(refresh_token, access_token, send_before)
        client = self._sync_client()
        try:
            action = next(flow)
            while True:
                if isinstance(action, Sleep):
                    self._sleep(action.seconds)
                    action = flow.send(None)
                else:
                    action = flow.send(self._send(client, action.request))
        except StopIteration as stop:
            result: TokenSet = stop.value
            return result

    async def arefresh(
        self,
        refresh_token: str,
        access_token: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        asleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> TokenSet:
        """Refresh on an asyncio loop (triggers, the fan-out keeper).

        :param client: a shared ``httpx.AsyncClient`` made by :meth:`async_client`; a private one
            is made and closed when ``None``.
        """
        import asyncio

        import httpx

        sleeper = asleep or asyncio.sleep
        flow = self._flow(refresh_token, access_token)
        own = client is None
        http = client or httpx.AsyncClient(transport=self._async_transport, **self._client_kwargs())  # type: ignore[arg-type]
        try:
            action = next(flow)
            while True:
                if isinstance(action, Sleep):
                    await sleeper(action.seconds)
                    action = flow.send(None)
                else:
                    action = flow.send(await self._asend(http, action.request))
        except StopIteration as stop:
            result: TokenSet = stop.value
            return result
        finally:
            if own:
                await http.aclose()

    def async_client(self, **limits: int) -> httpx.AsyncClient:
        """A new ``httpx.AsyncClient`` configured like this client (TLS, timeouts), to share."""
        import httpx

        kwargs = self._client_kwargs()
        if limits:
            kwargs["limits"] = httpx.Limits(**limits)
        return httpx.AsyncClient(transport=self._async_transport, **kwargs)  # type: ignore[arg-type]

    def _sync_client(self) -> httpx.Client:
        lent = self._lent
        if lent is not None:
            return lent.for_this_thread() if isinstance(lent, ThreadClients) else lent
        if self._client is None:
            import httpx

            self._client = httpx.Client(transport=self._transport, **self._client_kwargs())  # type: ignore[arg-type]
        return self._client

    def share_key(self) -> tuple[object, ...] | None:
        """Clients with equal keys may send through one pooled ``httpx.Client`` (see :meth:`lend`):
        the same TLS context and timeout. ``None`` when they may not: a test transport is injected,
        the TLS settings do not load (the refresh reports that), or this client has its own pool."""
        if self._transport is not None or self._client is not None or self._lent is not None:
            return None
        try:
            return (id(self.ssl_context()), self.settings.timeout)
        except ConfigurationError:
            return None

    def shared_client(self, max_connections: int) -> httpx.Client:
        """A new ``httpx.Client`` configured like this client, pooling up to ``max_connections``
        keep-alive connections, for every client with the same :meth:`share_key` to :meth:`lend`.

        It keeps no cookies: connections with different credentials send through it, and a cookie
        one of them was given must not travel with another's refresh."""
        from http.cookiejar import CookieJar, DefaultCookiePolicy

        import httpx

        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        return httpx.Client(limits=limits, cookies=no_cookies, **self._client_kwargs())  # type: ignore[arg-type]

    def thread_clients(self) -> ThreadClients:
        """Per-thread ``httpx.Client`` s configured like :meth:`shared_client` (one kept-alive
        connection each), for every client with the same :meth:`share_key` to :meth:`lend`."""
        return ThreadClients(lambda: self.shared_client(1))

    @contextlib.contextmanager
    def lend(self, http: httpx.Client | ThreadClients) -> Iterator[None]:
        """Send this client's requests through ``http`` (or, for :class:`ThreadClients`, the calling
        thread's client) until the block ends: ``refresh_all`` keeps one connection alive per worker
        thread for many connections, not one client and one TCP handshake each. ``http`` is not
        closed here; its owner closes it."""
        if self._client is not None or self._lent is not None:  # has a pool already: keep it
            yield
            return
        self._lent = http
        try:
            yield
        finally:
            self._lent = None

    def close(self) -> None:
        """Close the pooled sync HTTP client."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> RefreshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, client: httpx.Client, request: WireRequest) -> Result:
        try:
            with client.stream(
                request.method, request.url, headers=request.headers, content=request.content
            ) as resp:
                body = Body(self.settings.max_response_bytes)
                for chunk in resp.iter_bytes():
                    if not body.add(chunk):
                        return body.too_large
                return body.answer(resp)
        except Exception as exc:  # noqa: BLE001 - classified; non-httpx errors re-raised
            return failure_for(exc)

    async def _asend(self, client: httpx.AsyncClient, request: WireRequest) -> Result:
        try:
            async with client.stream(
                request.method, request.url, headers=request.headers, content=request.content
            ) as resp:
                body = Body(self.settings.max_response_bytes)
                async for chunk in resp.aiter_bytes():
                    if not body.add(chunk):
                        return body.too_large
                return body.answer(resp)
        except Exception as exc:  # noqa: BLE001 - classified; non-httpx errors re-raised
            return failure_for(exc)
