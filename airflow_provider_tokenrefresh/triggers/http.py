"""``TokenRefreshHttpTrigger``: one HTTP request to a vendor API from the triggerer, with a bearer
token of a ``tokenrefresh_*`` connection fetched there (store, lock and refresh on the provider's
own trigger threads). Its kwargs are connection ids, the endpoint, the method, non-secret headers
and the request data — never a token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def base_url_of(host: str | None, schema: str | None, port: int | None) -> str:
    """The base URL of an HTTP connection, as the HTTP provider's ``HttpHook`` builds it."""
    host = host or ""
    url = host if "://" in host else f"{schema or 'http'}://{host}"
    return f"{url}:{port}" if port else url


class TokenRefreshHttpTrigger(BaseTrigger):
    """Send ``method endpoint`` to the HTTP connection ``http_conn_id``'s base URL with a token of
    ``token_conn_id``; on a 401 refresh once (unless someone already did) and resend once. One
    event: ``status`` (``success`` for a 2xx answer), ``status_code``, ``body`` (text)."""

    def __init__(
        self,
        token_conn_id: str,
        http_conn_id: str,
        endpoint: str,
        *,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        min_ttl: float | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.token_conn_id = token_conn_id
        self.http_conn_id = http_conn_id
        self.endpoint = endpoint
        self.method = method
        self.data = data
        self.headers = dict(headers or {})
        self.min_ttl = min_ttl
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and kwargs (no secrets)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "token_conn_id": self.token_conn_id,
                "http_conn_id": self.http_conn_id,
                "endpoint": self.endpoint,
                "method": self.method,
                "data": self.data,
                "headers": self.headers,
                "min_ttl": self.min_ttl,
                "timeout": self.timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Fetch the token in the triggerer, send the request, one event with the answer."""
        import functools

        import httpx

        from airflow_provider_tokenrefresh.errors import TokenRefreshError
        from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook, _in_trigger_thread

        hook = TokenRefreshHook(self.token_conn_id)
        try:
            await hook.aload()
            http_conn = await hook.aget_connection(self.http_conn_id)
            base_url = base_url_of(http_conn.host, http_conn.schema, http_conn.port)
            min_ttl = hook.min_ttl if self.min_ttl is None else self.min_ttl
            record = await _in_trigger_thread(functools.partial(hook.get_record, min_ttl))
            body_kw: dict[str, Any] = {}
            if self.data is not None:
                body_kw["params" if self.method.upper() in ("GET", "HEAD", "DELETE") else "json"] = self.data
            async with httpx.AsyncClient(base_url=base_url, timeout=self.timeout) as client:
                response = await client.request(
                    self.method, self.endpoint, headers={**self.headers, **_bearer(record)}, **body_kw
                )
                if response.status_code == 401:
                    fresh = await _in_trigger_thread(
                        functools.partial(
                            hook.keeper.refresh,
                            force=True,
                            min_ttl=min_ttl,
                            unless_newer_than=record.generation,
                        )
                    )
                    record = fresh.record
                    response = await client.request(
                        self.method, self.endpoint, headers={**self.headers, **_bearer(record)}, **body_kw
                    )
        except TokenRefreshError as exc:
            yield TriggerEvent({"status": "error", "kind": exc.kind, "message": str(exc)})
            return
        except httpx.HTTPError as exc:
            yield TriggerEvent({"status": "error", "kind": "http", "message": f"{type(exc).__name__}: {exc}"})
            return
        finally:
            hook.close()
        token = record.access_token.get_secret_value() if record.access_token else None
        body = response.text.replace(token, "***") if token else response.text  # an API that echoes it
        yield TriggerEvent(
            {
                "status": "success" if response.is_success else "error",
                "kind": None if response.is_success else "http",
                "status_code": response.status_code,
                "body": body,
                "message": f"{self.method} {self.endpoint}: HTTP {response.status_code}",
            }
        )


def _bearer(record: Any) -> dict[str, str]:
    from airflow_provider_tokenrefresh.auth import bearer_header

    return bearer_header(record)
