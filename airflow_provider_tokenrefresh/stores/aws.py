"""Token records in AWS Secrets Manager, written optimistically.

A write stages a new version as ``AWSPENDING`` and then moves ``AWSCURRENT`` to it with
``RemoveFromVersionId=<version read>``: if another writer moved ``AWSCURRENT`` first, the move is
refused (``InvalidParameterException``) and the write is a conflict. Reads always ask for
``AWSCURRENT`` explicitly.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from airflow_provider_tokenrefresh.errors import ConfigurationError, StoreConflict, StoreError
from airflow_provider_tokenrefresh.tokens import TokenRecord

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.stores import Version

_NAME_RE = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code", type(exc).__name__))


class AwsSecretsManagerTokenStore:
    """Secrets Manager store with optimistic version-stage moves.

    :param client: a boto3 ``secretsmanager`` client.
    :param prefix: prepended to every key.
    """

    name = "aws"

    def __init__(self, client: Any, *, prefix: str = "airflow/tokenrefresh/") -> None:
        self.client = client
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"AwsSecretsManagerTokenStore(prefix={self.prefix!r})"

    def secret_name(self, key: str) -> str:
        """The secret name of ``key``."""
        name = f"{self.prefix}{key}"
        if not _NAME_RE.match(name):
            raise ConfigurationError(f"store key {name!r} is not a valid Secrets Manager name")
        return name

    def _error(self, action: str, name: str, exc: Exception) -> StoreError:
        return StoreError(f"{action} secret {name!r} in AWS Secrets Manager failed: {_code(exc)}")

    def read(self, key: str) -> tuple[TokenRecord | None, Version]:
        """Return the ``AWSCURRENT`` record and its VersionId, or ``(None, None)``."""
        name = self.secret_name(key)
        try:
            response = self.client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
        except Exception as exc:  # noqa: BLE001 - mapped by error code, never echoed
            if _code(exc) == "ResourceNotFoundException":
                return None, None
            raise self._error("reading", name, exc) from None
        try:
            record = TokenRecord.from_storage_json(response["SecretString"])
        except (KeyError, ValueError):
            raise StoreError(
                f"secret {name!r} in AWS Secrets Manager holds no readable token record"
            ) from None
        return record, str(response["VersionId"])

    def write(self, key: str, record: TokenRecord, expected_version: Version) -> Version:
        """Create (when nothing was read) or stage-and-move; a lost race raises ``StoreConflict``."""
        name = self.secret_name(key)
        payload = record.to_storage_json()
        token = str(uuid.uuid4())
        if expected_version is None:
            try:
                response = self.client.create_secret(
                    Name=name, SecretString=payload, ClientRequestToken=token
                )
            except Exception as exc:  # noqa: BLE001
                if _code(exc) == "ResourceExistsException":
                    raise StoreConflict(f"secret {name!r} was created by another writer first") from None
                raise self._error("creating", name, exc) from None
            return str(response["VersionId"])
        try:
            response = self.client.put_secret_value(
                SecretId=name, SecretString=payload, ClientRequestToken=token, VersionStages=["AWSPENDING"]
            )
        except Exception as exc:  # noqa: BLE001
            raise self._error("staging a version of", name, exc) from None
        new_version = str(response["VersionId"])
        try:
            self.client.update_secret_version_stage(
                SecretId=name,
                VersionStage="AWSCURRENT",
                MoveToVersionId=new_version,
                RemoveFromVersionId=str(expected_version),
            )
        except Exception as exc:  # noqa: BLE001
            if _code(exc) == "InvalidParameterException":
                raise StoreConflict(f"secret {name!r} changed since it was read (AWSCURRENT moved)") from None
            raise self._error("promoting a version of", name, exc) from None
        return new_version

    @classmethod
    def from_connection(cls, conn: Any, *, prefix: str | None = None) -> AwsSecretsManagerTokenStore:
        """Build from an Airflow connection: login/password = access key, extra region_name/endpoint_url."""
        import boto3

        extra = getattr(conn, "extra_dejson", {}) or {}
        client = boto3.client(
            "secretsmanager",
            region_name=extra.get("region_name"),
            endpoint_url=extra.get("endpoint_url"),
            aws_access_key_id=conn.login or None,
            aws_secret_access_key=conn.password or None,
            aws_session_token=extra.get("aws_session_token"),
        )
        return cls(
            client, prefix=prefix if prefix is not None else extra.get("prefix", "airflow/tokenrefresh/")
        )
