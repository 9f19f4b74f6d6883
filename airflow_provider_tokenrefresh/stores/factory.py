"""Pick a store from a connection's ``store`` extra."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from airflow_provider_tokenrefresh.errors import ConfigurationError

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.settings import ConnectionSettings
    from airflow_provider_tokenrefresh.stores import TokenStore


def store_for(settings: ConnectionSettings) -> TokenStore:
    """The store the connection asks for."""
    kind = settings.extra.store
    if kind == "variable":
        from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore

        return VariableTokenStore()
    if kind == "file":
        from airflow_provider_tokenrefresh.stores import FileTokenStore

        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        return FileTokenStore(os.path.join(home, "tokenrefresh-store"))
    raise ConfigurationError(
        f"connection {settings.conn_id!r}: extra field 'store': {kind!r} is not supported"
    )
