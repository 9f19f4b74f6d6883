"""Pick a lock from a connection's ``lock`` extra."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_tokenrefresh.errors import ConfigurationError

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.locks import RefreshLock
    from airflow_provider_tokenrefresh.settings import ConnectionSettings


def lock_for(settings: ConnectionSettings) -> RefreshLock:
    """The lock the connection asks for."""
    kind = settings.extra.lock
    if kind == "file":
        from airflow_provider_tokenrefresh.locks.file import FileRefreshLock

        return FileRefreshLock()
    raise ConfigurationError(
        f"connection {settings.conn_id!r}: extra field 'lock': {kind!r} is not supported"
    )
