"""``HttpSensor`` (``apache-airflow-providers-http``) with a token of a ``tokenrefresh_*`` connection.

Needs the HTTP provider installed; see :mod:`airflow_provider_tokenrefresh.http_provider`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.http.sensors.http import HttpSensor

from airflow_provider_tokenrefresh.http_provider import tokenrefresh_auth

if TYPE_CHECKING:
    from airflow.sdk import Context


class TokenRefreshHttpSensor(HttpSensor):
    """``HttpSensor`` whose requests carry a token of the ``tokenrefresh_*`` connection
    ``token_conn_id`` (the HTTP connection ``http_conn_id`` gives the base URL).

    :param token_conn_id: the token-refresh connection.
    :param token_min_ttl: seconds the token must have left (default: the connection's).
    """

    def __init__(self, *, token_conn_id: str, token_min_ttl: float | None = None, **kwargs: Any) -> None:
        if kwargs.get("deferrable"):
            from airflow_provider_tokenrefresh.errors import ConfigurationError

            raise ConfigurationError(
                f"TokenRefreshHttpSensor (token connection {token_conn_id!r}): deferrable=True is not "
                "supported, the HTTP provider's trigger would need the token in its kwargs; use "
                "mode='reschedule', or TokenValidSensor (deferrable) before the HTTP call"
            )
        super().__init__(**kwargs)
        self.token_conn_id = token_conn_id
        self.token_min_ttl = token_min_ttl

    def poke(self, context: Context) -> Any:
        """``HttpSensor.poke`` with the token connection's auth on the hook."""
        from airflow.providers.common.compat.sdk import AirflowException
        from airflow.providers.http.hooks.http import HttpHook
        from airflow.sdk.bases.decorator import determine_kwargs

        hook = HttpHook(
            method=self.method,
            http_conn_id=self.http_conn_id,
            auth_type=tokenrefresh_auth(self.token_conn_id, min_ttl=self.token_min_ttl),
            tcp_keep_alive=self.tcp_keep_alive,
            tcp_keep_alive_idle=self.tcp_keep_alive_idle,
            tcp_keep_alive_count=self.tcp_keep_alive_count,
            tcp_keep_alive_interval=self.tcp_keep_alive_interval,
        )
        self.log.info("Poking: %s", self.endpoint)
        try:
            response = hook.run(
                self.endpoint,
                data=self.request_params,
                headers=self.headers,
                extra_options=self.extra_options,
                **self.request_kwargs,
            )
            if self.response_check:
                kwargs = determine_kwargs(self.response_check, [response], context)
                return self.response_check(response, **kwargs)
        except AirflowException as exc:
            if str(exc).startswith(self.response_error_codes_allowlist):
                return False
            raise
        return True


__all__ = ["TokenRefreshHttpSensor"]
