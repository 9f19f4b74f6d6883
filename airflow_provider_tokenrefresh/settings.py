"""One place that turns a connection's fields into typed settings, with errors that name the field.

Airflow-free: :func:`settings_from_fields` takes the plain values of a Connection (host, port,
login, password, extra) so the CLI, the hook and the tests share it. Everything after this module
works with typed objects.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from airflow_provider_tokenrefresh.dialects import PRESETS, load_dialect_spec, validation_message
from airflow_provider_tokenrefresh.dialects.spec import DialectSpec
from airflow_provider_tokenrefresh.errors import ConfigurationError

#: Connection type prefix; ``tokenrefresh_<dialect>`` selects a preset, ``tokenrefresh_custom`` a spec.
CONN_TYPE_PREFIX = "tokenrefresh_"
CUSTOM_CONN_TYPE = "tokenrefresh_custom"

StoreKind = Literal["variable", "sealed_variable", "file", "vault", "aws"]
LockKind = Literal["auto", "file", "redis", "postgres"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def _to_bool(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return value


class ExtraSettings(BaseModel):
    """The connection's ``extra`` fields, validated."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    refresh_token: SecretStr | None = None
    access_token: SecretStr | None = None
    endpoint: str | None = None
    verify: bool | str = True
    client_cert: str | None = None
    client_key: str | None = None
    allow_insecure_http: bool = False
    refresh_margin: float = Field(default=300.0, ge=0)
    refresh_lifetime: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("refresh_lifetime", "refresh_token_ttl")
    )
    default_expires_in: float | None = Field(default=None, gt=0)
    timeout: float = Field(default=30.0, gt=0, le=600)
    store: StoreKind = "variable"
    store_conn_id: str | None = None
    store_path: str | None = None
    lock: LockKind = "auto"
    lock_conn_id: str | None = None
    lock_timeout: float = Field(default=60.0, gt=0, le=3600)
    #: The bound B: a refresh intent older than this counts as crashed (default: computed).
    refresh_stale_after: float | None = Field(default=None, gt=0, le=86400)
    #: Claim settle time for the Variable store (twice its assumed read-to-visible bound).
    intent_settle: float | None = Field(default=None, gt=0, le=60)
    #: The vendor's reuse window in seconds (Okta 30, WorkOS 30...): a lost answer is asked again
    #: with the same refresh token inside it. 0 (default): strict reuse detection, never resent.
    reuse_grace: float = Field(default=0.0, ge=0, le=600)
    dialect: dict[str, Any] | None = None

    @field_validator("verify", mode="before")
    @classmethod
    def _verify(cls, value: Any) -> Any:
        converted = _to_bool(value)
        if isinstance(converted, str) and not converted.strip():
            return True
        return converted

    @field_validator("allow_insecure_http", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> Any:
        return _to_bool(value)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and value and not value.startswith("/"):
            raise ValueError("must be a path starting with '/'")
        return value or None

    @field_validator(
        "refresh_token",
        "access_token",
        "client_cert",
        "client_key",
        "store_conn_id",
        "store_path",
        "lock_conn_id",
        "refresh_lifetime",
        "default_expires_in",
        "refresh_stale_after",
        "intent_settle",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("reuse_grace", mode="before")
    @classmethod
    def _blank_is_zero(cls, value: Any) -> Any:
        return 0.0 if value is None or (isinstance(value, str) and not value.strip()) else value

    @field_validator("dialect", mode="before")
    @classmethod
    def _dialect_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"is not valid JSON ({exc})") from None
        return value


class ConnectionSettings(BaseModel):
    """A token-refresh connection, typed."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    conn_id: str
    conn_type: str
    dialect: DialectSpec
    base_url: str
    client_id: str | None
    client_secret: SecretStr | None
    extra: ExtraSettings

    @property
    def store_key(self) -> str:
        """Store key of this connection's record.

        Airflow masks a Variable's value by its key name, so a Variable key always carries a
        sensitive word: a ``store_path`` without one gets ``__token`` appended (0.1.0 wrote it
        bare: :attr:`legacy_store_key`).
        """
        if not self.extra.store_path:
            return f"tokenrefresh_token__{self.conn_id}"
        if self.extra.store in ("variable", "sealed_variable") and not _masked_by_airflow(
            self.extra.store_path
        ):
            return f"{self.extra.store_path}__token"
        return self.extra.store_path

    @property
    def sealed_store_key(self) -> str:
        """Name of the sealed Variable (``store: sealed_variable``): no sensitive word of its own, so
        Airflow's masker does not learn the (encrypted) value. :attr:`store_key` stays the keeper's
        key: the refresh lock's name and where the record lived before it moved."""
        if self.extra.store_path:
            return f"{self.extra.store_path}__sealed"
        return f"trf_record__{self.conn_id}"

    @property
    def legacy_store_key(self) -> str | None:
        """Where 0.1.0 kept this record, when that differs from :attr:`store_key` (read once, to move)."""
        key = self.extra.store_path
        return key if key and key != self.store_key else None


def _masked_by_airflow(name: str) -> bool:
    """Whether Airflow's secrets masker hides a Variable named ``name`` (its sensitive words)."""
    from airflow_provider_tokenrefresh.redaction import is_sensitive_name

    lowered = name.lower()
    return is_sensitive_name(name) or any(
        word in lowered for word in ("private_key", "api_key", "access_token")
    )


def _extra_dict(conn_id: str, conn_type: str, extra: str | dict[str, Any] | None) -> dict[str, Any]:
    if extra is None or extra == "":
        return {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            raise ConfigurationError(f"connection {conn_id!r}: field 'extra' is not valid JSON") from None
    if not isinstance(extra, dict):
        raise ConfigurationError(f"connection {conn_id!r}: field 'extra' must be a JSON object")
    # Older UIs prefixed form fields: extra__<conn_type>__<name>.
    prefix = f"extra__{conn_type}__"
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in extra.items()}


def resolve_dialect(conn_id: str, conn_type: str, dialect_extra: dict[str, Any] | None) -> DialectSpec:
    """The dialect of a connection: its type's preset, or the spec in extra ``dialect`` for custom."""
    if conn_type == CUSTOM_CONN_TYPE:
        if not dialect_extra:
            raise ConfigurationError(
                f"connection {conn_id!r}: a {CUSTOM_CONN_TYPE} connection needs extra field 'dialect' "
                "holding a dialect spec (JSON)"
            )
        return load_dialect_spec(dialect_extra, source=f"connection {conn_id!r}: extra field 'dialect'")
    name = conn_type.removeprefix(CONN_TYPE_PREFIX)
    if not conn_type.startswith(CONN_TYPE_PREFIX) or name not in PRESETS:
        known = ", ".join(sorted(CONN_TYPE_PREFIX + n for n in [*PRESETS, "custom"]))
        raise ConfigurationError(f"connection {conn_id!r}: conn_type {conn_type!r} is not one of: {known}")
    return PRESETS[name]


def base_url_from(conn_id: str, host: str | None, port: int | None, schema: str | None) -> str:
    """The base URL from ``host`` (with or without scheme), ``port`` and ``schema`` (scheme)."""
    if not host or not host.strip():
        raise ConfigurationError(
            f"connection {conn_id!r}: field 'host' (Base URL) is required, e.g. https://vendor.example"
        )
    host = host.strip().rstrip("/")
    if "://" not in host:
        scheme = (schema or "https").strip().lower() or "https"
        if scheme not in ("http", "https"):
            scheme = "https"
        host = f"{scheme}://{host}"
    if port:
        from urllib.parse import urlsplit

        parts = urlsplit(host)
        if parts.port is None:
            host = f"{parts.scheme}://{parts.hostname}:{port}{parts.path}"
    return host


def settings_from_fields(
    conn_id: str,
    conn_type: str | None,
    *,
    host: str | None,
    login: str | None,
    password: str | None,
    extra: str | dict[str, Any] | None,
    port: int | None = None,
    schema: str | None = None,
) -> ConnectionSettings:
    """Validate a connection's fields.

    :raises ConfigurationError: naming the connection and the field; never echoing a value.
    """
    conn_type = (conn_type or "").strip()
    extras = _extra_dict(conn_id, conn_type, extra)
    try:
        typed_extra = ExtraSettings.model_validate(extras)
    except ValidationError as exc:
        raise ConfigurationError(f"connection {conn_id!r}: {validation_message(exc, 'extra')}") from None
    dialect = resolve_dialect(conn_id, conn_type, typed_extra.dialect)
    if typed_extra.refresh_token is None:
        raise ConfigurationError(
            f"connection {conn_id!r}: extra field 'refresh_token' (the initial refresh token) is required"
        )
    if dialect.needs_access_token and typed_extra.access_token is None:
        raise ConfigurationError(
            f"connection {conn_id!r}: dialect {dialect.name} sends the current access token with every refresh, "
            "so extra field 'access_token' (the initial access token) is required"
        )
    if dialect.request.client_auth != "none":
        if not login:
            raise ConfigurationError(
                f"connection {conn_id!r}: field 'login' (client id) is required by dialect {dialect.name}"
            )
        if not password:
            raise ConfigurationError(
                f"connection {conn_id!r}: field 'password' (client secret) is required by dialect {dialect.name}"
            )
    if typed_extra.lock in ("redis", "postgres") and not typed_extra.lock_conn_id:
        raise ConfigurationError(
            f"connection {conn_id!r}: extra field 'lock_conn_id' is required with lock {typed_extra.lock!r}"
        )
    if typed_extra.store in ("vault", "aws") and not typed_extra.store_conn_id:
        raise ConfigurationError(
            f"connection {conn_id!r}: extra field 'store_conn_id' is required with store {typed_extra.store!r}"
        )
    return ConnectionSettings(
        conn_id=conn_id,
        conn_type=conn_type,
        dialect=dialect,
        base_url=base_url_from(conn_id, host, port, schema),
        client_id=login or None,
        client_secret=SecretStr(password) if password else None,
        extra=typed_extra,
    )
