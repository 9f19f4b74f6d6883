"""Token records in HashiCorp Vault / OpenBao KV v2, written with check-and-set.

The record is one field (``record``) of the secret at ``<mount_point>/data/<path_prefix><key>``.
The version is KV v2's own version number; a write passes ``cas=<version read>`` (``0`` for "must
not exist yet"), so the server itself refuses a stale writer.

Error messages are built here from the exception type and HTTP status only: hvac's exception text
and attributes carry the server's answer and the request URL, and an error must never repeat a
token, the Vault token or a record.
"""

from __future__ import annotations

import os
import re
import threading
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_tokenrefresh.errors import ConfigurationError, StoreConflict, StoreError
from airflow_provider_tokenrefresh.redaction import redact_url
from airflow_provider_tokenrefresh.stores import KEEP

if TYPE_CHECKING:
    from collections.abc import Callable

    from hvac import Client

    from airflow_provider_tokenrefresh.stores import Version
    from airflow_provider_tokenrefresh.tokens import TokenRecord

#: The KV field that holds the record's JSON.
RECORD_FIELD = "record"
DEFAULT_PATH_PREFIX = "airflow/tokenrefresh/"

# The characters AWS Secrets Manager allows in names: one rule for both stores keeps a key portable.
_PATH_CHARS = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")

# hvac raises one class per status; the status is only implied by the class.
_STATUS_OF = {
    "InvalidRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "InvalidPath": 404,
    "RateLimitExceeded": 429,
    "InternalServerError": 500,
    "VaultNotInitialized": 501,
    "BadGateway": 502,
    "VaultDown": 503,
}
_HINTS = {
    401: "the Vault token is missing or malformed",
    403: "permission denied: check the Vault token, its expiry and its policy on this path",
    404: "no such mount or path: check extra 'mount_point' (a KV version 2 mount)",
    429: "rate limited by Vault",
    501: "Vault is not initialized",
    503: "Vault is sealed or unavailable",
}


class ConnectionLike(Protocol):
    """The attributes of an Airflow ``Connection`` that the stores read."""

    host: str | None
    port: int | None
    schema: str | None
    login: str | None
    password: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """The connection's extra, parsed."""
        ...


_BOOL_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def tls_verify_option(value: object, store: str) -> bool | str:
    """Read extra ``verify``: a boolean (maybe as text) or the path of a CA bundle that must exist.

    Any text that is not a boolean word is a path, so a mistyped path fails loudly instead of
    silently turning verification off.
    """
    if isinstance(value, str):
        word = _BOOL_WORDS.get(value.strip().lower())
        if word is not None:
            return word
        if not os.path.exists(value):
            raise ConfigurationError(f"{store} store: extra 'verify': CA bundle {value!r} does not exist")
        return value
    return bool(value)


class VaultTokenStore:
    """Token records in a KV v2 secrets engine, written with check-and-set.

    :param client: an authenticated ``hvac.Client``, or a function without arguments that returns
        one. A function is called once per thread and again after a fork, because the client's
        ``requests`` session must not be shared across processes (nor, strictly, across threads).
    :param mount_point: the KV v2 mount (``secret`` on a dev server).
    :param path_prefix: prepended to every key; a trailing ``/`` is added when missing, ``""`` for
        none.
    :param url: the server's URL, only for messages (taken from the client when not given).
    """

    name = "vault"
    atomic = True

    def __init__(
        self,
        client: Client | Callable[[], Client],
        *,
        mount_point: str = "secret",
        path_prefix: str | None = DEFAULT_PATH_PREFIX,
        url: str | None = None,
    ) -> None:
        mount_point = mount_point.strip("/")
        if not mount_point:
            raise ConfigurationError("vault store: mount_point must not be empty")
        prefix = (path_prefix or "").strip("/")
        self.mount_point = mount_point
        self.path_prefix = f"{prefix}/" if prefix else ""
        # An hvac.Client is not callable; anything else callable is a factory.
        is_factory = callable(client) and not hasattr(client, "secrets")
        self._factory: Callable[[], Client] | None = client if is_factory else None
        self._client: Client | None = None if is_factory else client
        self._made: list[Client] = []
        self._local = threading.local()
        self.url = redact_url(url if url is not None else getattr(self._client, "url", "") or "")

    def __repr__(self) -> str:
        return (
            f"VaultTokenStore(url={self.url!r}, mount_point={self.mount_point!r}, "
            f"path_prefix={self.path_prefix!r})"
        )

    @property
    def client(self) -> Client:
        """The hvac client for this thread (made by the factory on first use)."""
        if self._factory is None:
            return self._client
        pid = os.getpid()
        if getattr(self._local, "pid", None) != pid:
            self._local.client = self._factory()
            self._local.pid = pid
            self._made.append(self._local.client)
        return self._local.client

    def close(self) -> None:
        """Close the HTTP sessions of the clients this store made (not one it was given)."""
        made, self._made = self._made, []
        for client in made:
            adapter = getattr(client, "adapter", None)
            if adapter is not None:
                adapter.close()
        self._local = threading.local()

    def path(self, key: str) -> str:
        """The KV path of ``key`` (relative to the mount), validated.

        ``.`` and ``..`` segments are refused: the server resolves them, so ``a/../b`` would leave
        the prefix.
        """
        path = f"{self.path_prefix}{key}"
        segments = path.split("/")
        if not _PATH_CHARS.match(path) or any(s in ("", ".", "..") for s in segments):
            raise ConfigurationError(
                f"vault store: key {key!r} is not a valid path (letters, digits and /_+=.@- only; "
                "no empty, '.' or '..' segments)"
            )
        return path

    def _where(self, key: str) -> str:
        return f"{self.mount_point}/{self.path_prefix}{key}"

    def _error(self, action: str, key: str, exc: BaseException) -> StoreError:
        """A message from the exception's type and status only: hvac's own text is never used."""
        kind = type(exc).__name__
        status = _STATUS_OF.get(kind)
        detail = kind + (f" (HTTP {status})" if status else "")
        hint = _HINTS.get(status or 0)
        if hint is None:
            hint = _transport_hint(exc, self.url)
        return StoreError(
            f"vault store: {action} {self._where(key)} failed: {detail}" + (f"; {hint}" if hint else "")
        )

    def _read_raw(self, key: str) -> tuple[dict[str, Any] | None, int | None]:
        """The secret's fields and version: ``(None, None)`` when absent, ``(None, v)`` when deleted."""
        import hvac.exceptions

        path = self.path(key)
        client = self.client
        try:
            response = client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.mount_point, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath as exc:
            answer = exc.json if isinstance(exc.json, dict) else {}
            if answer.get("errors"):
                # A 404 with reasons is not "no secret": typically no such mount.
                raise self._error("reading", key, exc) from None
            # The latest version was deleted (or destroyed): no record, but check-and-set must name
            # that version, or no writer could ever store a new one.
            metadata = (answer.get("data") or {}).get("metadata") or {}
            version = metadata.get("version")
            return None, version if isinstance(version, int) and version > 0 else None
        except Exception as exc:  # noqa: BLE001 - hvac and requests errors alike; never their text
            raise self._error("reading", key, exc) from None
        data = response.get("data") if isinstance(response, dict) else None
        version = ((data or {}).get("metadata") or {}).get("version")
        if not isinstance(version, int):
            raise StoreError(
                f"vault store: {self._where(key)} answered without a KV version 2 version: "
                f"is mount {self.mount_point!r} a KV version 2 engine?"
            )
        fields = (data or {}).get("data")
        return fields if isinstance(fields, dict) else {}, version

    def read(self, key: str) -> tuple[TokenRecord | None, Version]:
        """Return the record and its KV version, or ``(None, None)``.

        When the latest version was deleted the answer is ``(None, <that version>)``: there is no
        record, and a write with that version creates the next one.
        """
        from airflow_provider_tokenrefresh.tokens import TokenRecord

        fields, version = self._read_raw(key)
        if fields is None:
            return None, version
        payload = fields.get(RECORD_FIELD)
        if not isinstance(payload, str):
            raise ConfigurationError(
                f"vault store: {self._where(key)} has no string field {RECORD_FIELD!r}, so it does not hold a "
                f"token record written by this provider; {KEEP}"
            )
        try:
            record = TokenRecord.from_storage_json(payload)
        except ValueError:
            raise ConfigurationError(
                f"vault store: {self._where(key)} holds an unreadable token record (version {version}); {KEEP}"
            ) from None
        return record, version

    def write(self, key: str, record: TokenRecord, expected_version: Version) -> Version:
        """Write with ``cas=expected_version`` (``0``: the key must not exist); return the new version.

        A refused check-and-set is a :class:`StoreConflict`, unless the current version already
        holds exactly this record: then an earlier attempt of this same write succeeded and only
        its answer was lost, and its version is returned.
        """
        import hvac.exceptions

        path = self.path(key)
        cas = _cas(expected_version)
        if cas is None:
            raise StoreConflict(
                f"vault store: {self._where(key)}: version {expected_version!r} is not a KV version 2 "
                "version, so it cannot be the current one"
            )
        payload = record.to_storage_json()
        client = self.client
        try:
            response = client.secrets.kv.v2.create_or_update_secret(
                path=path, secret={RECORD_FIELD: payload}, cas=cas, mount_point=self.mount_point
            )
        except hvac.exceptions.InvalidRequest as exc:
            errors = exc.errors if isinstance(exc.errors, list) else []
            if not any("check-and-set" in str(e) for e in errors):
                raise self._error("writing", key, exc) from None
            fields, version = self._read_raw(key)
            if fields is not None and fields.get(RECORD_FIELD) == payload and version is not None:
                return version
            raise StoreConflict(
                f"vault store: {self._where(key)} changed since it was read (check-and-set refused)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - hvac and requests errors alike; never their text
            raise self._error("writing", key, exc) from None
        data = response.get("data") if isinstance(response, dict) else None
        version = (data or {}).get("version")
        if not isinstance(version, int):
            # A KV version 1 mount accepts the same request and answers 204 without a version.
            raise StoreError(
                f"vault store: writing {self._where(key)} returned no KV version 2 version: is mount "
                f"{self.mount_point!r} a KV version 2 engine?"
            )
        return version

    @classmethod
    def from_connection(cls, conn: ConnectionLike, *, path_prefix: str | None = None) -> VaultTokenStore:
        """Build the store from an Airflow Connection (or anything with the same attributes).

        The URL comes from ``host`` (a full URL, or a host name with ``schema`` as the scheme,
        ``https`` by default) and ``port``; the Vault token is ``password``. From the extra:
        ``mount_point`` (default ``secret``), ``path_prefix`` (default ``airflow/tokenrefresh/``,
        the argument wins), ``verify`` (``true``/``false`` or a CA bundle path; on by default),
        ``namespace`` (Vault Enterprise / OpenBao namespaces) and ``timeout`` (seconds, default 10).
        """
        try:
            import hvac
        except ImportError:
            raise ConfigurationError(
                "vault store: the hvac package is missing; install airflow-provider-tokenrefresh[vault]"
            ) from None

        extra: dict[str, Any] = dict(getattr(conn, "extra_dejson", None) or {})
        url = _vault_url(conn)
        token = conn.password or ""
        if not token:
            raise ConfigurationError("vault store: the connection has no password (the Vault token)")
        verify = tls_verify_option(extra.get("verify", True), "vault")
        namespace = extra.get("namespace") or None
        try:
            timeout = float(extra.get("timeout", 10))
        except (TypeError, ValueError):
            raise ConfigurationError("vault store: extra 'timeout' must be a number of seconds") from None

        def make_client() -> Client:
            return hvac.Client(url=url, token=token, verify=verify, namespace=namespace, timeout=timeout)

        return cls(
            make_client,
            mount_point=str(extra.get("mount_point") or "secret"),
            path_prefix=path_prefix
            if path_prefix is not None
            else extra.get("path_prefix", DEFAULT_PATH_PREFIX),
            url=url,
        )


def _cas(expected_version: Version) -> int | None:
    """The check-and-set value for ``expected_version``; ``None`` when it cannot be a KV version."""
    if expected_version is None:
        return 0
    if isinstance(expected_version, bool):
        return None
    if isinstance(expected_version, int):
        return expected_version if expected_version > 0 else None
    if expected_version.isdigit():
        return int(expected_version) or None
    return None


def _vault_url(conn: ConnectionLike) -> str:
    from urllib.parse import urlsplit, urlunsplit

    host = (conn.host or "").strip()
    if not host:
        raise ConfigurationError("vault store: the connection has no host (the Vault URL)")
    if "://" not in host:
        scheme = (conn.schema or "https").strip().lower()
        if scheme not in ("http", "https"):
            raise ConfigurationError(
                f"vault store: connection schema {conn.schema!r} is not a URL scheme (http or https)"
            )
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"vault store: {redact_url(host)!r} is not an http(s) URL")
    netloc = parts.netloc
    if conn.port and parts.port is None:
        netloc = f"{netloc}:{int(conn.port)}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _transport_hint(exc: BaseException, url: str) -> str:
    """Name a network failure without repeating its text (which quotes the request)."""
    import requests.exceptions

    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS verification of {url} failed (extra 'verify')"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"{url} did not answer in time"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"cannot connect to {url}"
    return ""
