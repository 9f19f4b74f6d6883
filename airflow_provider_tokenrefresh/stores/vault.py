"""Token records in HashiCorp Vault / OpenBao KV v2, written with check-and-set.

The record is one field (``record``) of the secret at ``<path_prefix><key>``. The version is KV
v2's own version number; a write passes ``cas=<version read>`` (``0`` for "must not exist yet"),
so a stale writer is refused by the server itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_tokenrefresh.errors import StoreConflict, StoreError
from airflow_provider_tokenrefresh.tokens import TokenRecord

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.stores import Version


class VaultTokenStore:
    """KV v2 store with check-and-set.

    :param client: an authenticated ``hvac.Client``.
    :param mount_point: the KV v2 mount (``secret`` in dev servers).
    :param path_prefix: prepended to every key, e.g. ``airflow/tokenrefresh/``.
    """

    name = "vault"

    def __init__(
        self, client: Any, *, mount_point: str = "secret", path_prefix: str = "airflow/tokenrefresh/"
    ) -> None:
        self.client = client
        self.mount_point = mount_point
        self.path_prefix = path_prefix

    def __repr__(self) -> str:
        return f"VaultTokenStore(mount_point={self.mount_point!r}, path_prefix={self.path_prefix!r})"

    def path(self, key: str) -> str:
        """The KV path of ``key``."""
        return f"{self.path_prefix}{key}"

    def _error(self, action: str, key: str, exc: Exception) -> StoreError:
        status = getattr(exc, "status_code", None) or getattr(
            getattr(exc, "response", None), "status_code", None
        )
        where = f"{self.mount_point}/{self.path(key)}"
        return StoreError(
            f"{action} {where} in Vault failed: {type(exc).__name__}"
            + (f" (HTTP {status})" if status else "")
        )

    def read(self, key: str) -> tuple[TokenRecord | None, Version]:
        """Return the record and its KV version, or ``(None, None)``."""
        import hvac.exceptions

        try:
            response = self.client.secrets.kv.v2.read_secret_version(
                path=self.path(key), mount_point=self.mount_point, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None, None
        except Exception as exc:  # noqa: BLE001 - never echo hvac's text (it may carry the request)
            raise self._error("reading", key, exc) from None
        data = response["data"]
        payload = (data.get("data") or {}).get("record")
        if not isinstance(payload, str):
            raise StoreError(
                f"{self.mount_point}/{self.path(key)} in Vault holds no token record field 'record'"
            )
        try:
            record = TokenRecord.from_storage_json(payload)
        except ValueError:
            raise StoreError(
                f"{self.mount_point}/{self.path(key)} in Vault holds an unreadable token record"
            ) from None
        return record, int(data["metadata"]["version"])

    def write(self, key: str, record: TokenRecord, expected_version: Version) -> Version:
        """Write with ``cas=expected_version`` (0 when no record is expected)."""
        import hvac.exceptions

        try:
            response = self.client.secrets.kv.v2.create_or_update_secret(
                path=self.path(key),
                secret={"record": record.to_storage_json()},
                cas=int(expected_version or 0),
                mount_point=self.mount_point,
            )
        except hvac.exceptions.InvalidRequest as exc:
            if "check-and-set" in str(exc):
                raise StoreConflict(
                    f"{self.mount_point}/{self.path(key)} in Vault changed since it was read (check-and-set refused)"
                ) from None
            raise self._error("writing", key, exc) from None
        except Exception as exc:  # noqa: BLE001 - never echo hvac's text
            raise self._error("writing", key, exc) from None
        return int(response["data"]["version"])

    @classmethod
    def from_connection(cls, conn: Any, *, path_prefix: str | None = None) -> VaultTokenStore:
        """Build from an Airflow connection: host (URL), password (token), extra mount_point/verify/namespace."""
        import hvac

        extra = getattr(conn, "extra_dejson", {}) or {}
        host = str(conn.host or "")
        if "://" not in host:
            host = f"{conn.schema or 'https'}://{host}"
        if conn.port and host.count(":") < 2:
            host = f"{host}:{conn.port}"
        verify = extra.get("verify", True)
        if isinstance(verify, str) and verify.lower() in ("true", "false"):
            verify = verify.lower() == "true"
        client = hvac.Client(url=host, token=conn.password, verify=verify, namespace=extra.get("namespace"))
        return cls(
            client,
            mount_point=extra.get("mount_point", "secret"),
            path_prefix=path_prefix
            if path_prefix is not None
            else extra.get("path_prefix", "airflow/tokenrefresh/"),
        )
