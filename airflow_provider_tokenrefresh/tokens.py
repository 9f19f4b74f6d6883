"""Core token types: what a vendor answered (:class:`TokenSet`) and what we keep (:class:`TokenRecord`).

Both are pydantic models free of Airflow imports. Secret fields are :class:`pydantic.SecretStr`,
so they show as ``**********`` in ``repr``, ``str``, log output and ``model_dump_json()``. The
only way to get a record with its secrets in clear is :meth:`TokenRecord.to_storage_json`, which
the stores call and nothing else.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

#: Version 2 (0.2.0) adds the intent id, superseded seeds, the lock in use, the file-lock writers,
#: alternates and the ``suspect`` state. Version-1 records (0.1.0) read as version 2 with those empty.
RECORD_SCHEMA_VERSION = 2


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def fingerprint(secret: str) -> str:
    """Return a short, non-reversible fingerprint of a secret (to notice a re-seeded connection)."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


class TokenSet(BaseModel):
    """A successful refresh answer, normalized: absolute expiries computed at receipt time.

    ``refresh_token`` is ``None`` when the vendor did not send one (RFC 6749 section 6 allows
    that): the caller keeps the refresh token it already had.
    """

    model_config = ConfigDict(frozen=True)

    access_token: SecretStr
    token_type: str = "Bearer"
    expires_at: datetime
    refresh_token: SecretStr | None = None
    refresh_expires_at: datetime | None = None
    scope: str | None = None
    obtained_at: datetime


RecordState = Literal["valid", "suspect", "reauth_required"]


class AlternateTokens(BaseModel):
    """Tokens a refresh obtained after another process had taken the record over (its lease
    lapsed, e.g. a frozen VM): kept, never dropped, since they may hold the only live chain."""

    model_config = ConfigDict(frozen=True)

    access_token: SecretStr | None = None
    expires_at: datetime | None = None
    refresh_token: SecretStr
    refresh_expires_at: datetime | None = None
    obtained_at: datetime
    obtained_by: str | None = None


class TokenRecord(BaseModel):
    """The token state of one connection, as persisted in a store.

    :param generation: increases by one with every successful refresh; a reader that sees a
        higher generation than the one it started from knows someone else refreshed.
    :param seed_fingerprint: fingerprint of the connection's initial refresh token; when the
        connection is re-seeded with a new one the fingerprints differ and the new seed wins.
    :param state: ``reauth_required`` once the vendor rejected the refresh token and a re-read
        showed nobody else rotated it; ``reason`` then says why and what to do.
    """

    model_config = ConfigDict(frozen=True)

    schema_version: int = RECORD_SCHEMA_VERSION
    access_token: SecretStr | None = None
    token_type: str = "Bearer"
    expires_at: datetime | None = None
    refresh_token: SecretStr | None = None
    refresh_expires_at: datetime | None = None
    scope: str | None = None
    obtained_at: datetime | None = None
    generation: int = 0
    seed_fingerprint: str | None = None
    state: RecordState = "valid"
    reason: str | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    refresh_started_at: datetime | None = None
    refresh_started_by: str | None = None
    fence: int | None = None
    #: Random id of the refresh intent in ``refresh_started_at``; writes after the vendor call are
    #: compare-and-set on it ("is the intent still mine?").
    intent_id: str | None = None
    #: Fingerprints of the seeds this record superseded: a process that still sees one of them
    #: uses the record and never starts over from it.
    superseded_seeds: tuple[str, ...] = ()
    #: The lock that coordinates this record (``file``, ``redis://host:port/db``, ``postgres://...``).
    lock_in_use: str | None = None
    #: Lock domains (host and directory) of file-lock writers; more than one is a misconfiguration.
    file_lock_hosts: tuple[str, ...] = ()
    alternates: tuple[AlternateTokens, ...] = ()
    updated_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def seeded(
        cls,
        refresh_token: str,
        access_token: str | None = None,
        *,
        expires_at: datetime | None = None,
        refresh_expires_at: datetime | None = None,
    ) -> TokenRecord:
        """Build generation 0 from a connection's initial tokens."""
        return cls(
            access_token=SecretStr(access_token) if access_token else None,
            # An initial access token of unknown age is treated as expired unless told otherwise.
            expires_at=expires_at,
            refresh_token=SecretStr(refresh_token),
            refresh_expires_at=refresh_expires_at,
            seed_fingerprint=fingerprint(refresh_token),
        )

    def advanced(self, answer: TokenSet, *, refresh_token_ttl: float | None = None) -> TokenRecord:
        """Return the next generation after a successful refresh.

        An answer without a refresh token keeps the old one (and its expiry). When the vendor does
        not state the refresh token's lifetime, ``refresh_token_ttl`` seconds from now is used.
        """
        refresh_token: SecretStr | None
        if answer.refresh_token is not None:
            refresh_token = answer.refresh_token
            refresh_expires_at = answer.refresh_expires_at
            if refresh_expires_at is None and refresh_token_ttl:
                refresh_expires_at = answer.obtained_at + timedelta(seconds=refresh_token_ttl)
        else:
            refresh_token = self.refresh_token
            refresh_expires_at = self.refresh_expires_at
        return TokenRecord(
            access_token=answer.access_token,
            token_type=answer.token_type,
            expires_at=answer.expires_at,
            refresh_token=refresh_token,
            refresh_expires_at=refresh_expires_at,
            scope=answer.scope if answer.scope is not None else self.scope,
            obtained_at=answer.obtained_at,
            generation=self.generation + 1,
            seed_fingerprint=self.seed_fingerprint,
            state="valid",
            fence=self.fence,
            superseded_seeds=self.superseded_seeds,
            lock_in_use=self.lock_in_use,
            file_lock_hosts=self.file_lock_hosts,
            updated_at=answer.obtained_at,
        )

    def with_error(self, error: str, *, reauth: bool = False, now: datetime | None = None) -> TokenRecord:
        """Return this record annotated with a (redacted) error, optionally marking re-auth needed."""
        now = now or utcnow()
        update: dict[str, Any] = {"last_error": error, "last_error_at": now, "updated_at": now}
        if reauth:
            update.update(state="reauth_required", reason=error)
        return self.model_copy(update=update)

    def access_ttl(self, now: datetime | None = None) -> float:
        """Seconds the access token stays valid (negative when expired, ``-inf`` when unknown)."""
        if self.access_token is None or self.expires_at is None:
            return float("-inf")
        return (self.expires_at - (now or utcnow())).total_seconds()

    def access_lifetime(self) -> float | None:
        """Seconds the access token was issued for (``None`` when unknown, e.g. a seed)."""
        if self.expires_at is None or self.obtained_at is None:
            return None
        return (self.expires_at - self.obtained_at).total_seconds()

    def refresh_lifetime(self) -> float | None:
        """Seconds the refresh token was issued for, when the vendor (or the connection) said."""
        if self.refresh_expires_at is None or self.obtained_at is None:
            return None
        return (self.refresh_expires_at - self.obtained_at).total_seconds()

    def refresh_ttl(self, now: datetime | None = None) -> float:
        """Seconds the refresh token stays valid (``inf`` when the vendor did not say)."""
        if self.refresh_token is None:
            return float("-inf")
        if self.refresh_expires_at is None:
            return float("inf")
        return (self.refresh_expires_at - (now or utcnow())).total_seconds()

    def is_usable(self, min_ttl: float, now: datetime | None = None) -> bool:
        """Whether the access token is valid for at least ``min_ttl`` more seconds."""
        return self.state == "valid" and self.access_ttl(now) >= min_ttl

    def secrets(self) -> tuple[str, ...]:
        """The secret values this record holds, for registering with a log masker."""
        values = [self.access_token, self.refresh_token]
        for alt in self.alternates:
            values += [alt.access_token, alt.refresh_token]
        return tuple(s.get_secret_value() for s in values if s is not None)

    def without_intent(self) -> TokenRecord:
        """This record with no refresh in flight."""
        return self.model_copy(
            update={"refresh_started_at": None, "refresh_started_by": None, "intent_id": None}
        )

    def to_storage_json(self) -> str:
        """Serialize with secrets in clear, for a store to persist. Never log the result."""
        if self.schema_version > RECORD_SCHEMA_VERSION:
            # Written by a newer release: its fields may mean more than this one knows.
            raise ValueError(
                f"refusing to write a token record of schema {self.schema_version} (this release knows "
                f"{RECORD_SCHEMA_VERSION})"
            )
        data = self.model_dump(mode="json")
        data["schema_version"] = RECORD_SCHEMA_VERSION  # an older record is upgraded when rewritten
        for name in ("access_token", "refresh_token"):
            secret = getattr(self, name)
            data[name] = secret.get_secret_value() if secret is not None else None
        for alt, dumped in zip(self.alternates, data["alternates"], strict=True):
            dumped["refresh_token"] = alt.refresh_token.get_secret_value()
            dumped["access_token"] = alt.access_token.get_secret_value() if alt.access_token else None
        import json

        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_storage_json(cls, payload: str | bytes) -> TokenRecord:
        """Parse what :meth:`to_storage_json` wrote."""
        return cls.model_validate_json(payload)

    def status(self, now: datetime | None = None) -> dict[str, Any]:
        """Non-secret metadata: safe for XCom, logs and the ``status`` command."""
        now = now or utcnow()

        def _iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "generation": self.generation,
            "state": self.state,
            "token_type": self.token_type,
            "expires_at": _iso(self.expires_at),
            "expires_in": None if self.expires_at is None else round(self.access_ttl(now), 1),
            "lifetime": self.access_lifetime(),
            "refresh_expires_at": _iso(self.refresh_expires_at),
            "has_refresh_token": self.refresh_token is not None,
            "scope": self.scope,
            "last_refresh_at": _iso(self.obtained_at),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "reason": self.reason,
            "refresh_in_flight_since": _iso(self.refresh_started_at),
            "refresh_in_flight_by": self.refresh_started_by,
            "seed_fingerprint": self.seed_fingerprint,
            "superseded_seeds": list(self.superseded_seeds),
            "lock_in_use": self.lock_in_use,
            "alternates": len(self.alternates),
            "schema_version": self.schema_version,
            "warnings": self.warnings(),
        }

    def warnings(self) -> list[str]:
        """Misconfigurations the record shows (no secrets): for status, logs and the Test button."""
        found = []
        if len(self.file_lock_hosts) > 1:
            found.append(
                f"written under file locks of {len(self.file_lock_hosts)} hosts or homes "
                f"({', '.join(self.file_lock_hosts)}): a file lock does not coordinate them. Set extra "
                "'lock' to 'redis' or 'postgres' (or run CeleryExecutor with a Redis broker for lock: auto)"
            )
        if self.alternates:
            found.append(
                f"{len(self.alternates)} alternate refresh token(s) kept from a refresh whose lease had "
                "lapsed; the next refresh tries them if the main one is rejected"
            )
        return found
