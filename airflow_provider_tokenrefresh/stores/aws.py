"""Token records in AWS Secrets Manager, written optimistically.

Secrets Manager has no compare-and-set on values, but it has one on staging labels: moving
``AWSCURRENT`` with ``RemoveFromVersionId=<version read>`` is refused
(``InvalidParameterException``) when that version no longer holds the label. So a write stages the
new value as ``AWSPENDING`` and then moves ``AWSCURRENT`` to it; the first write (nothing read yet)
is ``CreateSecret``, which refuses an existing name. Reads always ask for ``AWSCURRENT`` by name:
a read without a stage may return an older version.

Error messages are built here from the operation, the secret's name and AWS's error code only:
botocore's exception text can quote request parameters, and so the record.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from typing import TYPE_CHECKING, Any

from airflow_provider_tokenrefresh.errors import ConfigurationError, StoreConflict, StoreError
from airflow_provider_tokenrefresh.stores import KEEP

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_tokenrefresh.stores import Version
    from airflow_provider_tokenrefresh.stores.vault import ConnectionLike
    from airflow_provider_tokenrefresh.tokens import TokenRecord

DEFAULT_PREFIX = "airflow/tokenrefresh/"
DESCRIPTION = (
    "Token record kept by airflow-provider-tokenrefresh (rotating refresh token inside: do not edit or "
    "delete it; to start over, put a new refresh_token on the connection)."
)

# Secrets Manager's own rule for secret names.
_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
# VersionIds are client request tokens: 32 to 64 characters.
_VERSION_ID = re.compile(r"^[A-Za-z0-9-]{32,64}$")

_HINTS = {
    "AccessDeniedException": "permission denied: check the credentials and their IAM policy on this secret",
    "UnrecognizedClientException": "the access key is not valid",
    "InvalidSignatureException": "the secret access key is not valid",
    "ExpiredTokenException": "the session token has expired",
    "DecryptionFailure": "the secret's KMS key cannot be used by these credentials",
    "InvalidRequestException": "the secret may be scheduled for deletion: restore it, or set extra "
    "'store_path' to another key",
    "LimitExceededException": "a Secrets Manager quota was reached",
    "ThrottlingException": "throttled by Secrets Manager",
}


def _code(exc: BaseException) -> str:
    """AWS's error code of a ``ClientError``, else the exception's class name."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    return None


class AwsSecretsManagerTokenStore:
    """Token records as Secrets Manager secrets, one secret per key, written optimistically.

    :param client: a boto3 ``secretsmanager`` client, or a function without arguments that returns
        one (called once per process, on first use: boto3 clients are thread-safe but costly to
        build, and must not cross a fork).
    :param prefix: prepended to every key to make the secret's name.
    :param kms_key_id: KMS key for secrets this store creates (the account's default key when
        ``None``).
    """

    name = "aws"
    atomic = True

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        kms_key_id: str | None = None,
    ) -> None:
        is_factory = callable(client) and not hasattr(client, "get_secret_value")
        self._factory: Callable[[], Any] | None = client if is_factory else None
        self._client: Any = None if is_factory else client
        self._client_pid = os.getpid()
        self._client_lock = threading.Lock()
        self.prefix = prefix
        self.kms_key_id = kms_key_id

    def __repr__(self) -> str:
        return f"AwsSecretsManagerTokenStore(prefix={self.prefix!r})"

    @property
    def client(self) -> Any:
        """The boto3 client (made by the factory on first use in this process)."""
        if self._factory is None:
            return self._client
        with self._client_lock:
            if self._client is None or self._client_pid != os.getpid():
                try:
                    self._client = self._factory()
                except Exception as exc:  # noqa: BLE001 - botocore's text may name credentials
                    if _code(exc) == "NoRegionError":
                        raise ConfigurationError(
                            "aws store: no AWS region: set extra 'region_name' on the store connection"
                        ) from None
                    raise StoreError(
                        f"aws store: cannot build the Secrets Manager client: {_code(exc)}"
                    ) from None
                self._client_pid = os.getpid()
            return self._client

    def close(self) -> None:
        """Close the Secrets Manager client this store made (not one it was given)."""
        if self._factory is not None and self._client is not None:
            with self._client_lock:
                closer = getattr(self._client, "close", None)
                if closer is not None:
                    closer()
                self._client = None

    def secret_name(self, key: str) -> str:
        """The secret name of ``key``, validated against Secrets Manager's rules."""
        name = f"{self.prefix}{key}"
        if not _NAME.match(name):
            raise ConfigurationError(
                f"aws store: {name!r} is not a valid Secrets Manager name (1-512 letters, digits and /_+=.@-)"
            )
        return name

    def _error(self, action: str, name: str, exc: BaseException) -> StoreError:
        code = _code(exc)
        status = _status(exc)
        hint = _HINTS.get(code, "")
        if not hint and code in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
            hint = "cannot reach Secrets Manager"
        elif not hint and code in ("NoCredentialsError", "PartialCredentialsError"):
            hint = "no AWS credentials: set login/password on the store connection or use an instance role"
        return StoreError(
            f"aws store: {action} secret {name!r} failed: {code}"
            + (f" (HTTP {status})" if status else "")
            + (f"; {hint}" if hint else "")
        )

    def _current(self, name: str) -> tuple[str | None, str | None]:
        """``(SecretString, VersionId)`` of ``AWSCURRENT``; ``(None, None)`` when there is none."""
        client = self.client
        try:
            response = client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
        except Exception as exc:  # noqa: BLE001 - mapped by error code, never echoed
            if _code(exc) == "ResourceNotFoundException":
                return None, None
            raise self._error("reading", name, exc) from None
        payload = response.get("SecretString")
        return payload if isinstance(payload, str) else None, str(response["VersionId"])

    def read(self, key: str) -> tuple[TokenRecord | None, Version]:
        """Return the ``AWSCURRENT`` record and its VersionId, or ``(None, None)``."""
        from airflow_provider_tokenrefresh.tokens import TokenRecord

        name = self.secret_name(key)
        payload, version = self._current(name)
        if version is None:
            return None, None
        if payload is None:
            raise ConfigurationError(
                f"aws store: secret {name!r} holds binary data, not a token record written by this "
                f"provider; {KEEP}"
            )
        try:
            record = TokenRecord.from_storage_json(payload)
        except ValueError:
            raise ConfigurationError(
                f"aws store: secret {name!r} holds an unreadable token record (version {version}); {KEEP}"
            ) from None
        return record, version

    def write(self, key: str, record: TokenRecord, expected_version: Version) -> Version:
        """Create (nothing read) or stage-and-promote; return the new VersionId.

        A lost race is a :class:`StoreConflict`, unless the current version already holds exactly
        this record: then an earlier attempt of this same write succeeded (botocore retries calls
        whose answer was lost) and its version is returned.
        """
        name = self.secret_name(key)
        payload = record.to_storage_json()
        if expected_version is None:
            return self._create(name, payload)
        if not isinstance(expected_version, str) or not _VERSION_ID.match(expected_version):
            raise StoreConflict(
                f"aws store: version {expected_version!r} is not a Secrets Manager VersionId, so it "
                f"cannot be the current one of {name!r}"
            )
        client = self.client
        try:
            # The request token becomes the VersionId; a retried call with it is idempotent.
            response = client.put_secret_value(
                SecretId=name,
                SecretString=payload,
                ClientRequestToken=str(uuid.uuid4()),
                VersionStages=["AWSPENDING"],
            )
        except Exception as exc:  # noqa: BLE001 - mapped by error code, never echoed
            if _code(exc) == "ResourceNotFoundException":
                raise StoreConflict(f"aws store: secret {name!r} was deleted since it was read") from None
            raise self._error("staging a new version of", name, exc) from None
        new_version = str(response["VersionId"])
        try:
            client.update_secret_version_stage(
                SecretId=name,
                VersionStage="AWSCURRENT",
                MoveToVersionId=new_version,
                RemoveFromVersionId=expected_version,
            )
        except Exception as exc:  # noqa: BLE001 - mapped by error code, never echoed
            if _code(exc) != "InvalidParameterException":
                raise self._error("promoting the new version of", name, exc) from None
            current_payload, current_version = self._current(name)
            if current_version == new_version:
                return new_version  # an earlier attempt of this move succeeded; its answer was lost
            self._unstage(name, new_version)
            if current_payload == payload and current_version is not None:
                return current_version
            raise StoreConflict(
                f"aws store: secret {name!r} changed since it was read (AWSCURRENT moved on)"
            ) from None
        return new_version

    def _create(self, name: str, payload: str) -> str:
        extra: dict[str, Any] = {"KmsKeyId": self.kms_key_id} if self.kms_key_id else {}
        client = self.client
        try:
            response = client.create_secret(
                Name=name,
                SecretString=payload,
                ClientRequestToken=str(uuid.uuid4()),
                Description=DESCRIPTION,
                **extra,
            )
        except Exception as exc:  # noqa: BLE001 - mapped by error code, never echoed
            if _code(exc) != "ResourceExistsException":
                raise self._error("creating", name, exc) from None
            current_payload, current_version = self._current(name)
            if current_version is None:
                # It exists but has no AWSCURRENT value; no writer could ever fill it by CreateSecret.
                raise StoreError(
                    f"aws store: secret {name!r} exists without a current value; set extra 'store_path' to another "
                    "key (or restore a current version of it)"
                ) from None
            if current_payload == payload:
                return current_version
            raise StoreConflict(f"aws store: secret {name!r} was created by another writer first") from None
        return str(response["VersionId"])

    def _unstage(self, name: str, version: str) -> None:
        """Drop ``AWSPENDING`` from a version that lost, so Secrets Manager can expire it."""
        # Best effort: another writer may have taken the label already (InvalidParameterException).
        with contextlib.suppress(Exception):
            self.client.update_secret_version_stage(
                SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=version
            )

    @classmethod
    def from_connection(
        cls, conn: ConnectionLike, *, prefix: str | None = None
    ) -> AwsSecretsManagerTokenStore:
        """Build the store from an Airflow Connection (or anything with the same attributes).

        ``login``/``password`` are the access key id and secret access key (both empty: boto3's
        default chain, e.g. an instance role). From the extra: ``region_name``, ``endpoint_url``
        (moto, LocalStack, a VPC endpoint), ``aws_session_token``, ``prefix`` (default
        ``airflow/tokenrefresh/``; the argument wins), ``kms_key_id``, ``verify`` (``false`` or a CA
        bundle path) and ``timeout`` (connect/read seconds, default 10). The client is built on
        first use.
        """
        try:
            import boto3
            import botocore.config
        except ImportError:
            raise ConfigurationError(
                "aws store: the boto3 package is missing; install airflow-provider-tokenrefresh[aws]"
            ) from None
        from airflow_provider_tokenrefresh.stores.vault import tls_verify_option

        extra: dict[str, Any] = dict(getattr(conn, "extra_dejson", None) or {})
        access_key = conn.login or None
        secret_key = conn.password or None
        if bool(access_key) != bool(secret_key):
            raise ConfigurationError(
                "aws store: set both login (access key id) and password (secret access key), or neither"
            )
        try:
            timeout = float(extra.get("timeout", 10))
        except (TypeError, ValueError):
            raise ConfigurationError("aws store: extra 'timeout' must be a number of seconds") from None
        # None: boto3's default (verify, with its own CA bundle or AWS_CA_BUNDLE).
        verify = None if extra.get("verify") is None else tls_verify_option(extra["verify"], "aws")
        kwargs: dict[str, Any] = {
            "region_name": extra.get("region_name") or None,
            "endpoint_url": extra.get("endpoint_url") or None,
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "aws_session_token": extra.get("aws_session_token") or None,
            "verify": verify,
            "config": botocore.config.Config(
                connect_timeout=timeout, read_timeout=timeout, retries={"mode": "standard"}
            ),
        }

        def make_client() -> Any:
            # A session of our own: boto3's default session is not thread-safe.
            return boto3.session.Session().client("secretsmanager", **kwargs)

        return cls(
            make_client,
            prefix=prefix if prefix is not None else str(extra.get("prefix", DEFAULT_PREFIX)),
            kms_key_id=extra.get("kms_key_id") or None,
        )
