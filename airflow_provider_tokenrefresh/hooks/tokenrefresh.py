"""The Airflow hook: "give me a valid token for this connection".

The hook reads the Connection lazily (never in ``__init__``), turns it into typed settings
(:mod:`airflow_provider_tokenrefresh.settings`) and builds the coordinator
(:class:`~airflow_provider_tokenrefresh.keeper.TokenKeeper`) with the connection's store, lock and
dialect. It has no refresh logic of its own.

One class serves every ``tokenrefresh_*`` connection type; the small subclasses at the bottom
exist because Airflow registers exactly one hook class per connection type.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from datetime import datetime

    import httpx

    from airflow_provider_tokenrefresh.auth import RequestsTokenAuth, TokenAuth
    from airflow_provider_tokenrefresh.keeper import RefreshOutcome, TokenKeeper
    from airflow_provider_tokenrefresh.locks import RefreshLock
    from airflow_provider_tokenrefresh.metrics import ConnectionMetrics
    from airflow_provider_tokenrefresh.settings import ConnectionSettings
    from airflow_provider_tokenrefresh.stores import TokenStore
    from airflow_provider_tokenrefresh.tokens import TokenRecord


#: Secrets this process already gave Airflow's masker (their SHA-256), so each is sent once. In a
#: task or trigger, every ``mask_secret`` call is a round trip to the supervisor even for a value it
#: knows; a keeper registers its record's tokens on every store read.
_MASKED: set[bytes] = set()
_MASKED_LOCK = threading.Lock()


def _mask(secret: str) -> None:
    """Register ``secret`` with Airflow's masker (task and supervisor), once per process."""
    import hashlib

    digest = hashlib.sha256(secret.encode()).digest()
    with _MASKED_LOCK:
        if digest in _MASKED:
            return
    from airflow.sdk.log import mask_secret

    mask_secret(secret)
    with _MASKED_LOCK:
        _MASKED.add(digest)


class TokenRefreshHook(BaseHook):
    """Keeps one token-refresh connection's access token valid.

    :param tokenrefresh_conn_id: id of a connection of one of the ``tokenrefresh_*`` types.
    :param min_ttl: default seconds of validity a returned token must have left.
    """

    conn_name_attr = "tokenrefresh_conn_id"
    default_conn_name = "tokenrefresh_default"
    conn_type = "tokenrefresh_custom"
    hook_name = "Token Refresh (custom dialect)"

    def __init__(
        self, tokenrefresh_conn_id: str = default_conn_name, *, min_ttl: float | None = None
    ) -> None:
        super().__init__()
        self.tokenrefresh_conn_id = tokenrefresh_conn_id
        self._min_ttl = min_ttl

    # -- building blocks -------------------------------------------------------------------------

    @functools.cached_property
    def settings(self) -> ConnectionSettings:
        """The connection, validated (read on first use)."""
        conn = self.get_connection(self.tokenrefresh_conn_id)
        return self._settings_from(conn)

    def _settings_from(self, conn: Any) -> ConnectionSettings:
        from airflow_provider_tokenrefresh.settings import settings_from_fields

        return settings_from_fields(
            self.tokenrefresh_conn_id,
            conn.conn_type,
            host=conn.host,
            login=conn.login,
            password=conn.password,
            extra=conn.extra,
            port=conn.port,
            schema=conn.schema,
        )

    @property
    def min_ttl(self) -> float:
        """Seconds of validity a token must have left (argument, else the connection's refresh_margin)."""
        return self._min_ttl if self._min_ttl is not None else self.settings.extra.refresh_margin

    def build_store(self) -> TokenStore:
        """The store named by extra ``store``."""
        from airflow_provider_tokenrefresh.stores.factory import store_for

        return store_for(self.settings)

    def build_lock(self) -> RefreshLock:
        """The lock named by extra ``lock``."""
        from airflow_provider_tokenrefresh.locks.factory import lock_for

        return lock_for(self.settings)

    @functools.cached_property
    def keeper(self) -> TokenKeeper:
        """The coordinator for this connection."""
        from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
        from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
        from airflow_provider_tokenrefresh.errors import ConfigurationError
        from airflow_provider_tokenrefresh.keeper import STALE_MARGIN, Seed, TokenKeeper, default_stale_after

        s = self.settings
        extra = s.extra
        secret = s.client_secret.get_secret_value() if s.client_secret else None
        if secret:
            _mask(secret)
        client = RefreshClient(
            s.dialect,
            ClientSettings(
                base_url=s.base_url,
                credentials=ClientCredentials(s.client_id, secret),
                endpoint=extra.endpoint,
                verify=extra.verify,
                client_cert=extra.client_cert,
                client_key=extra.client_key,
                allow_insecure_http=extra.allow_insecure_http,
                timeout=extra.timeout,
                default_expires_in=extra.default_expires_in,
                conn_id=s.conn_id,
            ),
            on_secret=_mask,
        )
        assert extra.refresh_token is not None  # settings_from_fields guarantees it
        store, lock = self.build_store(), self.build_lock()
        self.metrics.instrument(client, lock)  # vendor requests and lock waits, whoever asks
        if extra.refresh_stale_after is not None:
            floor = (
                default_stale_after(
                    timeout=client.settings.timeout,
                    attempts=client.settings.max_attempts,
                    max_retry_after=client.settings.max_retry_after,
                    lease_ttl=lock.lease_ttl,
                    settle=0.0 if store.atomic else (extra.intent_settle or 0.0),
                    reuse_grace=extra.reuse_grace,
                )
                - STALE_MARGIN
            )
            if extra.refresh_stale_after < floor:
                raise ConfigurationError(
                    f"connection {s.conn_id!r}: extra field 'refresh_stale_after' ({extra.refresh_stale_after:g}s) "
                    f"is below one refresh's worst case ({floor:g}s: every attempt's timeout, the waits between "
                    "them and the lock's lease); a refresh still at the vendor would be replayed"
                )
        return TokenKeeper(
            s.store_key,
            client,
            store,
            lock,
            Seed(
                extra.refresh_token.get_secret_value(),
                extra.access_token.get_secret_value() if extra.access_token else None,
            ),
            conn_id=s.conn_id,
            refresh_token_ttl=extra.refresh_lifetime or s.dialect.response.refresh_token_lifetime,
            refresh_margin=extra.refresh_margin,
            lock_timeout=extra.lock_timeout,
            stale_after=extra.refresh_stale_after,
            settle=extra.intent_settle,
            lock_explicit=extra.lock != "auto",
            reuse_grace=extra.reuse_grace,
            on_secret=_mask,
        )

    def close(self) -> None:
        """Close what the hook built (HTTP client, lock and store connections); it rebuilds on next use."""
        keeper = self.__dict__.pop("keeper", None)
        if keeper is not None:
            keeper.close()

    def __enter__(self) -> TokenRefreshHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_conn(self) -> TokenKeeper:
        """The coordinator (Airflow's conventional hook entry point)."""
        return self.keeper

    @functools.cached_property
    def metrics(self) -> ConnectionMetrics:
        """This connection's metrics through Airflow's Stats (docs/metrics.md)."""
        from airflow_provider_tokenrefresh.metrics import ConnectionMetrics

        settings = self.__dict__.get("settings")  # its conn_id is the real one under the Test button
        if settings is None:
            return ConnectionMetrics(self.tokenrefresh_conn_id, None)
        return ConnectionMetrics(settings.conn_id, settings.dialect.name)

    def account(self, result: Any) -> None:
        """Report how a token operation ended to the metrics: a failure by kind (``result`` is the
        exception), or the gauges of the record it ended with (a record or a refresh outcome).

        For callers that run the keeper themselves (the keeper operator's concurrent refresh)."""
        if isinstance(result, BaseException):
            if "settings" in self.__dict__ and self.metrics.dialect is None:
                self.metrics.dialect = self.settings.dialect.name
            self.metrics.failure(result)
        else:
            self.metrics.record(getattr(result, "record", result))

    def _observed(self, call: Any) -> Any:
        """Run a token operation; its failure (by kind) or its record's gauges go to the metrics."""
        try:
            result = call()
        except Exception as exc:
            self.account(exc)
            raise
        self.account(result)
        return result

    # -- the API tasks use ----------------------------------------------------------------------------

    def get_record(self, min_ttl: float | None = None) -> TokenRecord:
        """A token record valid for at least ``min_ttl`` seconds, refreshing if needed."""
        record: TokenRecord = self._observed(
            lambda: self.keeper.get_valid_token(self.min_ttl if min_ttl is None else min_ttl)
        )
        return record

    def get_token(self, min_ttl: float | None = None) -> str:
        """A valid access token (masked in task logs). Never put it in XCom or a templated field.

        A token this process holds in its cache (for at most ``keeper.CACHE_FOR`` seconds) is
        returned without a store read; otherwise the keeper reads the store and refreshes if needed.
        """
        keeper = self.__dict__.get("keeper")
        if keeper is not None:
            wanted = self._min_ttl if min_ttl is None else min_ttl
            hot = keeper.cached(self.settings.extra.refresh_margin if wanted is None else wanted)
            if hot is not None:
                token: str = hot.access
                return token
        record = self.get_record(min_ttl)
        assert record.access_token is not None
        return record.access_token.get_secret_value()

    def get_auth_header(self, min_ttl: float | None = None) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}`` for a valid token."""
        from airflow_provider_tokenrefresh.auth import bearer_header

        return bearer_header(self.get_record(min_ttl))

    def token_status(self) -> dict[str, Any]:
        """Non-secret status: dialect, expiries, generation, last refresh, last error."""
        record: TokenRecord = self._observed(lambda: self.keeper.current())  # noqa: PLW0108 - builds the keeper inside
        return self.status_of(record)

    def status_of(self, record: TokenRecord, now: datetime | None = None) -> dict[str, Any]:
        """The non-secret status of ``record`` as this connection's (``status``, the health page)."""
        status: dict[str, Any] = {
            "conn_id": self.tokenrefresh_conn_id,
            "dialect": self.settings.dialect.name,
            "store": self.keeper.store.name,
            "lock": self.keeper.lock.name,
            **record.status(now),
        }
        old_seals: set[str] = getattr(self.keeper.store, "sealed_with_old_key", set())
        if self.settings.sealed_store_key in old_seals:
            status["warnings"] = [
                *status.get("warnings", []),
                f"Variable {self.settings.sealed_store_key!r} is sealed with a [core] fernet_key other than the "
                "first one: keep that key in the list until the record is rewritten (its next refresh; "
                f"'airflow-tokenrefresh refresh --force {self.tokenrefresh_conn_id}' does it now)",
            ]
        return status

    def refresh(
        self, *, force: bool = False, min_ttl: float | None = None, retry_rejected: bool = False
    ) -> dict[str, Any]:
        """Refresh if the token expires within ``min_ttl`` (or always with ``force``); non-secret result."""
        outcome: RefreshOutcome = self._observed(
            lambda: self.keeper.refresh(
                force=force,
                min_ttl=self.min_ttl if min_ttl is None else min_ttl,
                retry_rejected=retry_rejected,
            )
        )
        return {
            "conn_id": self.tokenrefresh_conn_id,
            "dialect": self.settings.dialect.name,
            **outcome.status(),
        }

    def httpx_auth(self, min_ttl: float | None = None) -> TokenAuth:
        """An ``httpx.Auth`` for vendor API calls: bearer header, one refresh and retry on 401."""
        from airflow_provider_tokenrefresh.auth import TokenAuth

        return TokenAuth(self.keeper, min_ttl=self.min_ttl if min_ttl is None else min_ttl)

    def requests_auth(self, min_ttl: float | None = None) -> RequestsTokenAuth:
        """A ``requests`` auth object (for ``HttpHook`` users), with the same 401 handling."""
        from airflow_provider_tokenrefresh.auth import RequestsTokenAuth

        return RequestsTokenAuth(self.keeper, min_ttl=self.min_ttl if min_ttl is None else min_ttl)

    def http_client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` on the connection's base URL, authenticated by :meth:`httpx_auth`."""
        import httpx

        return httpx.Client(base_url=self.settings.base_url, auth=self.httpx_auth(), **kwargs)

    # -- async (triggers) -------------------------------------------------------------------------------

    async def aload(self) -> None:
        """Read the connection with the async API (triggers must not block the event loop)."""
        if "settings" not in self.__dict__:
            conn = await self.aget_connection(self.tokenrefresh_conn_id)
            self.__dict__["settings"] = self._settings_from(conn)

    async def atoken_status(self) -> dict[str, Any]:
        """:meth:`token_status` for triggers."""
        await self.aload()
        result: dict[str, Any] = await _in_trigger_thread(self.token_status)
        return result

    async def arefresh(self, *, min_ttl: float | None = None) -> dict[str, Any]:
        """:meth:`refresh` (not forced) for triggers."""
        await self.aload()
        result: dict[str, Any] = await _in_trigger_thread(functools.partial(self.refresh, min_ttl=min_ttl))
        return result

    # -- UI -------------------------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: harmless on a connection in use (:mod:`.connection_test`)."""
        from airflow_provider_tokenrefresh.hooks.connection_test import run_connection_test

        return run_connection_test(self)


_TRIGGER_POOL: Any = None


async def _in_trigger_thread(call: Any) -> Any:
    """Run blocking token work (store reads, lock waits, the claim's settle time, the vendor call)
    on this provider's own thread pool: never on asgiref's one shared thread nor the loop's small
    default pool, so one slow vendor cannot stall the other token triggers of a triggerer."""
    import asyncio
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    global _TRIGGER_POOL
    if _TRIGGER_POOL is None:
        _TRIGGER_POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="tokenrefresh-trigger")
    # With the caller's context: the triggerer routes each trigger's log lines by context variables.
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_TRIGGER_POOL, context.run, call)


class OAuth2BasicTokenHook(TokenRefreshHook):
    """Hook for ``tokenrefresh_oauth2_basic`` connections (OAuth2, client_secret_basic)."""

    conn_type = "tokenrefresh_oauth2_basic"
    hook_name = "Token Refresh: OAuth2 (client secret basic)"


class OAuth2PostTokenHook(TokenRefreshHook):
    """Hook for ``tokenrefresh_oauth2_post`` connections (OAuth2, client_secret_post)."""

    conn_type = "tokenrefresh_oauth2_post"
    hook_name = "Token Refresh: OAuth2 (client secret post)"


class QueryBasicTokenHook(TokenRefreshHook):
    """Hook for ``tokenrefresh_query_basic`` connections (BabelBird refreshToken.do)."""

    conn_type = "tokenrefresh_query_basic"
    hook_name = "Token Refresh: BabelBird (query string)"


class AppIdJsonTokenHook(TokenRefreshHook):
    """Hook for ``tokenrefresh_appid_json`` connections (IoT platform appId/secret)."""

    conn_type = "tokenrefresh_appid_json"
    hook_name = "Token Refresh: IoT platform (appId/secret JSON)"


class BearerJsonTokenHook(TokenRefreshHook):
    """Hook for ``tokenrefresh_bearer_json`` connections (iSales, Authentication: Bearer)."""

    conn_type = "tokenrefresh_bearer_json"
    hook_name = "Token Refresh: iSales (bearer JSON)"
