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

        legacy = settings.legacy_store_key
        return VariableTokenStore(legacy_keys={settings.store_key: legacy} if legacy else None)
    if kind == "sealed_variable":
        from airflow_provider_tokenrefresh.stores.sealed_variable import SealedVariableTokenStore

        return SealedVariableTokenStore(sealed_keys={settings.store_key: settings.sealed_store_key})
    if kind == "file":
        from airflow_provider_tokenrefresh.stores import FileTokenStore

        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        return FileTokenStore(os.path.join(home, "tokenrefresh-store"))
    if kind in ("vault", "aws"):
        from airflow.sdk import BaseHook

        conn_id = settings.extra.store_conn_id
        assert conn_id is not None  # settings_from_fields requires it
        try:
            conn = BaseHook.get_connection(conn_id)
        except Exception as exc:  # noqa: BLE001 - named, without the server's details
            raise ConfigurationError(
                f"connection {settings.conn_id!r}: extra field 'store_conn_id' names connection {conn_id!r}, "
                f"which cannot be read ({type(exc).__name__})"
            ) from None
        if kind == "vault":
            from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

            return VaultTokenStore.from_connection(conn)
        from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore

        return AwsSecretsManagerTokenStore.from_connection(conn)
    raise ConfigurationError(
        f"connection {settings.conn_id!r}: extra field 'store': {kind!r} is not supported"
    )
