"""Lock + store combinations as plain data, rebuilt inside spawned worker processes."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from airflow_provider_tokenrefresh.locks import Lease, RefreshLock

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_tokenrefresh.stores import TokenStore


class NoLock:
    """The naive deployment's "lock": none at all (the herd test's negative control)."""

    name = "none"
    identity = "none"
    lease_ttl = 0.0

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[Lease]:
        yield Lease(key)


def build_client(spec: dict[str, Any], *, clock: Any = None, **settings: Any) -> Any:
    """The refresh client for the emulated vendor described by ``spec``."""
    from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
    from airflow_provider_tokenrefresh.dialects import PRESETS
    from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials

    return RefreshClient(
        PRESETS[spec["dialect"]],
        ClientSettings(
            base_url=spec["base_url"],
            credentials=ClientCredentials(spec["client_id"], spec["client_secret"]),
            allow_insecure_http=True,
            **settings,
        ),
        clock=clock,
    )


def build_lock(spec: dict[str, Any]) -> RefreshLock:
    """The lock described by ``spec`` (``{"lock": "file", "lock_dir": ...}`` and so on)."""
    kind = spec["lock"]
    if kind == "none":
        return NoLock()
    if kind == "file":
        from airflow_provider_tokenrefresh.locks.file import FileRefreshLock

        return FileRefreshLock(spec["lock_dir"])
    if kind == "redis":
        import redis

        from airflow_provider_tokenrefresh.locks.redis import RedisRefreshLock

        return RedisRefreshLock(redis.Redis.from_url(spec["redis_url"]), ttl=spec.get("lock_ttl", 30))
    if kind == "postgres":
        from airflow_provider_tokenrefresh.locks.postgres import PostgresRefreshLock

        return PostgresRefreshLock(spec["postgres_dsn"])
    raise ValueError(kind)


def build_store(spec: dict[str, Any]) -> TokenStore:
    """The store described by ``spec``."""
    kind = spec["store"]
    if kind == "variable":
        import os

        # The worker is a plain process outside any task: the Variable store then talks to the
        # metadata database directly, as the CLI and the api-server do.
        os.environ.update(spec["airflow_env"])
        from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore

        return VariableTokenStore()
    if kind == "file":
        from airflow_provider_tokenrefresh.stores import FileTokenStore

        return FileTokenStore(spec["store_dir"])
    if kind == "blind_file":
        # The naive deployment's store: last writer wins, no compare-and-set (negative control).
        from airflow_provider_tokenrefresh.stores import FileTokenStore

        class BlindFileStore(FileTokenStore):
            def write(self, key: str, record: Any, expected_version: Any) -> Any:
                _, current = self.read(key)
                return super().write(key, record, current)

        return BlindFileStore(spec["store_dir"])
    if kind == "vault":
        import hvac

        from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

        return VaultTokenStore(hvac.Client(url=spec["vault_url"], token=spec["vault_token"]))
    if kind == "aws":
        import boto3

        from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore

        client = boto3.client(
            "secretsmanager",
            endpoint_url=spec["aws_endpoint"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        return AwsSecretsManagerTokenStore(client)
    raise ValueError(kind)
