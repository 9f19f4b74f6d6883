"""Pick a lock from a connection's ``lock`` extra (``lock_conn_id`` names the lock server's connection)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_tokenrefresh.errors import ConfigurationError

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.locks import RefreshLock
    from airflow_provider_tokenrefresh.settings import ConnectionSettings


def _server_connection(settings: ConnectionSettings) -> Any:
    from airflow.sdk import BaseHook

    conn_id = settings.extra.lock_conn_id
    assert conn_id is not None  # settings_from_fields requires it for server locks
    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # noqa: BLE001 - named, without the server's details
        raise ConfigurationError(
            f"connection {settings.conn_id!r}: extra field 'lock_conn_id' names connection {conn_id!r}, "
            f"which cannot be read ({type(exc).__name__})"
        ) from None


def lock_for(settings: ConnectionSettings) -> RefreshLock:
    """The lock the connection asks for."""
    kind = settings.extra.lock
    if kind == "file":
        from airflow_provider_tokenrefresh.locks.file import FileRefreshLock

        return FileRefreshLock()
    if kind == "redis":
        from airflow_provider_tokenrefresh.locks.redis import RedisRefreshLock

        return RedisRefreshLock.from_connection(_server_connection(settings))
    if kind == "postgres":
        from airflow_provider_tokenrefresh.locks.postgres import PostgresRefreshLock

        return PostgresRefreshLock.from_connection(_server_connection(settings))
    raise ConfigurationError(
        f"connection {settings.conn_id!r}: extra field 'lock': {kind!r} is not supported"
    )
