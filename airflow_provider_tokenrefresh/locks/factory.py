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


#: ``lock: auto`` results per (executor, broker URL): one PING per process, not one per hook.
_AUTO: dict[tuple[str, str | None], str | None] = {}


def _airflow_conf(section: str, key: str) -> str | None:
    from airflow.sdk import conf

    value = conf.get(section, key, fallback=None)
    return None if value is None else str(value)


def celery_redis_broker(*, ping_timeout: float = 2.0) -> str | None:
    """The deployment's Celery broker URL when ``lock: auto`` may use it, else ``None``.

    Only when the executor is CeleryExecutor *and* ``[celery] broker_url`` is a ``redis://`` or
    ``rediss://`` URL that answers a PING: the Celery provider gives the option a default
    (``redis://redis:6379/0``), so its being set proves nothing.
    """
    executor = _airflow_conf("core", "executor") or ""
    broker = _airflow_conf("celery", "broker_url")
    cache_key = (executor, broker)
    if cache_key in _AUTO:
        return _AUTO[cache_key]
    found: str | None = None
    if any(part.strip().split(".")[-1] == "CeleryExecutor" for part in executor.split(",")) and (
        broker and broker.startswith(("redis://", "rediss://"))
    ):
        try:
            import redis

            client = redis.Redis.from_url(
                broker, socket_timeout=ping_timeout, socket_connect_timeout=ping_timeout
            )
            try:
                if client.ping():
                    found = broker
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - an unreachable broker means: not usable as the lock
            found = None
    _AUTO[cache_key] = found
    return found


def lock_for(settings: ConnectionSettings) -> RefreshLock:
    """The lock the connection asks for (``auto``: the Celery broker's Redis when usable, else file)."""
    kind = settings.extra.lock
    if kind == "auto":
        broker = celery_redis_broker()
        if broker is not None:
            from airflow_provider_tokenrefresh.locks.redis import RedisRefreshLock

            return RedisRefreshLock(broker)
        kind = "file"
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
