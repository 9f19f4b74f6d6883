"""``TokenRefreshHttpOperator``: a deferrable HTTP call with a token of a ``tokenrefresh_*``
connection, the token fetched in the triggerer (the HTTP provider's own deferrable path cannot
take a bearer token without putting it in trigger kwargs; see
:mod:`airflow_provider_tokenrefresh.http_provider`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class TokenRefreshHttpOperator(BaseOperator):
    """``method endpoint`` on the HTTP connection ``http_conn_id`` with a bearer token of
    ``token_conn_id``; returns the answer's text (XCom). Deferrable by default: the request and the
    token lookup run in the triggerer; ``deferrable=False`` sends it from the worker through the
    HTTP provider's ``HttpHook``. A 401 refreshes once and resends once; any other non-2xx answer
    fails the task with its status.

    :param token_conn_id: the token-refresh connection.
    :param http_conn_id: an HTTP connection (its host, schema and port give the base URL).
    :param endpoint: path below the base URL.
    :param method: HTTP method.
    :param data: query parameters (GET, HEAD, DELETE) or a JSON body.
    :param headers: extra, non-secret headers (a templated field).
    :param token_min_ttl: seconds the token must have left (default: the connection's).
    """

    template_fields = ("endpoint", "data", "headers")

    def __init__(
        self,
        *,
        token_conn_id: str,
        http_conn_id: str = "http_default",
        endpoint: str = "",
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        token_min_ttl: float | None = None,
        request_timeout: float = 60.0,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.token_conn_id = token_conn_id
        self.http_conn_id = http_conn_id
        self.endpoint = endpoint
        self.method = method
        self.data = data
        self.headers = headers or {}
        self.token_min_ttl = token_min_ttl
        self.request_timeout = request_timeout
        self.deferrable = deferrable

    def execute(self, context: Context) -> Any:
        """Defer to the trigger (or send from the worker when not deferrable)."""
        if not self.deferrable:
            from airflow.providers.http.hooks.http import HttpHook

            from airflow_provider_tokenrefresh.http_provider import tokenrefresh_auth

            hook = HttpHook(
                method=self.method,
                http_conn_id=self.http_conn_id,
                auth_type=tokenrefresh_auth(self.token_conn_id, min_ttl=self.token_min_ttl),
            )
            return hook.run(self.endpoint, data=self.data, headers=self.headers).text
        from airflow_provider_tokenrefresh.triggers.http import TokenRefreshHttpTrigger

        self.defer(
            trigger=TokenRefreshHttpTrigger(
                token_conn_id=self.token_conn_id,
                http_conn_id=self.http_conn_id,
                endpoint=self.endpoint,
                method=self.method,
                data=self.data,
                headers=self.headers,
                min_ttl=self.token_min_ttl,
                timeout=self.request_timeout,
            ),
            method_name="execute_complete",
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """The trigger's answer: its text, or the task fails naming the connection and the status."""
        from airflow_provider_tokenrefresh.errors import TokenRefreshError

        if not event or event.get("status") != "success":
            message = (event or {}).get("message", "no event")
            raise TokenRefreshError(
                f"{self.method} {self.endpoint} on {self.http_conn_id!r} with the token of "
                f"{self.token_conn_id!r} failed: {message}",
                conn_id=self.token_conn_id,
            )
        return event["body"]


__all__ = ["TokenRefreshHttpOperator"]
