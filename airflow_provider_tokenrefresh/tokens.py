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
#: ``reauth_deadline`` was added later without a bump: it is optional (``None`` when absent), a
#: release that does not know it ignores it on read, and the next refresh recomputes it.
RECORD_SCHEMA_VERSION = 2

#: Default ``[tokenrefresh] refresh_token_horizon``: a refresh token lapsing (or a re-authorization
#: deadline falling) within this many seconds is warned about. Same value as the health page's.
DEFAULT_REFRESH_TOKEN_HORIZON = 7 * 86400.0

#: Where a refresh token's expiry comes from, which decides whether a refresh *renewed* it:
#:
#: * ``stated``: the vendor's answer carries it (iSales ``refreshExpirationTime``);
#: * ``per_token``: a lifetime counted from the token's issue (the dialect's documented lifetime, or
#:   the connection's ``refresh_lifetime``): it restarts only when the vendor issues a *new*
#:   refresh token; the same one sent back keeps the expiry it had;
#: * ``fixed_maximum``: a maximum counted from the authorization ("a maximum validity of 30
#:   days"): no refresh extends it.
RefreshExpiryBasis = Literal["stated", "per_token", "fixed_maximum"]


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
    #: Set when the last refresh did not move the refresh token's expiry (a fixed maximum
    #: lifetime, or the vendor sent the same token back): by then a person must re-authorize at the
    #: vendor and re-seed the connection. ``None`` while refreshes renew it (or nothing is known).
    reauth_deadline: datetime | None = None
    #: The Airflow connection whose record this is; another connection pointed at the same store
    #: key is refused instead of re-seeding over it (``None`` in records older than 0.2.1).
    conn_id: str | None = None
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

    def advanced(
        self,
        answer: TokenSet,
        *,
        refresh_token_ttl: float | None = None,
        basis: RefreshExpiryBasis = "stated",
    ) -> TokenRecord:
        """Return the next generation after a successful refresh.

        An answer without a refresh token keeps the old one (and its expiry). The new refresh-token
        expiry follows ``basis`` (:func:`next_refresh_expiry`); when it did not move later
        (:func:`refresh_renewed`), the record carries it as :attr:`reauth_deadline`.
        """
        refresh_token = answer.refresh_token if answer.refresh_token is not None else self.refresh_token
        new_token = answer.refresh_token is not None and (
            self.refresh_token is None
            or answer.refresh_token.get_secret_value() != self.refresh_token.get_secret_value()
        )
        refresh_expires_at = next_refresh_expiry(
            previous=self.refresh_expires_at,
            answered=answer.refresh_expires_at if answer.refresh_token is not None else None,
            sent_token=answer.refresh_token is not None,
            new_token=new_token,
            obtained_at=answer.obtained_at,
            lifetime=refresh_token_ttl,
            basis=basis,
        )
        renewed = refresh_renewed(
            previous=self.refresh_expires_at,
            new=refresh_expires_at,
            elapsed=(answer.obtained_at - self.obtained_at).total_seconds() if self.obtained_at else 0.0,
            basis=basis,
        )
        if renewed or refresh_expires_at is None:
            deadline = None if renewed or new_token else self.reauth_deadline
        else:
            deadline = refresh_expires_at
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
            reauth_deadline=deadline,
            conn_id=self.conn_id,
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

    def status(
        self, now: datetime | None = None, *, horizon: float = DEFAULT_REFRESH_TOKEN_HORIZON
    ) -> dict[str, Any]:
        """Non-secret metadata: safe for XCom, logs and the ``status`` command.

        ``refresh_expires_in`` is the time left on the refresh token (seconds, negative once
        lapsed; ``None`` when unknown); ``reauth_deadline`` / ``reauth_deadline_in`` say by when a
        person must re-authorize because refreshing no longer extends the chain; ``warnings``
        includes that deadline once it is within ``horizon`` seconds.
        """
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
            "refresh_lifetime": self.refresh_lifetime(),
            "refresh_expires_in": None
            if self.refresh_expires_at is None or self.refresh_token is None
            else round(self.refresh_ttl(now), 1),
            "reauth_deadline": _iso(self.reauth_deadline),
            "reauth_deadline_in": None
            if self.reauth_deadline is None
            else round((self.reauth_deadline - now).total_seconds(), 1),
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
            "warnings": self.warnings(now, horizon=horizon),
        }

    def warnings(
        self, now: datetime | None = None, *, horizon: float = DEFAULT_REFRESH_TOKEN_HORIZON
    ) -> list[str]:
        """Misconfigurations the record shows (no secrets): for status, logs and the Test button;
        and a re-authorization deadline falling within ``horizon`` seconds."""
        found = []
        if self.reauth_deadline is not None and self.state != "reauth_required":
            left = (self.reauth_deadline - (now or utcnow())).total_seconds()
            if left < horizon:
                found.append(deadline_message(self.reauth_deadline, left))
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


def human_duration(seconds: float) -> str:
    """``3d 4h``, ``2h 5m``, ``4m 10s``: a duration for messages (absolute value)."""
    total = int(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def deadline_message(deadline: datetime, left: float) -> str:
    """The warning of a re-authorization deadline (no connection name: callers add it)."""
    when = deadline.isoformat(timespec="seconds")
    if left <= 0:
        return (
            f"re-authorization deadline passed {human_duration(left)} ago ({when}): the vendor did not extend "
            "the refresh token's life; re-authorize at the vendor and save the new refresh token in the "
            "connection's extra 'refresh_token'"
        )
    return (
        f"re-authorize by {when} ({human_duration(left)} left): the last refresh did not extend the refresh "
        "token's life (a fixed maximum lifetime), so refreshing cannot keep this connection alive; run the "
        "vendor's authorization flow and save the new refresh token in the connection's extra 'refresh_token'"
    )


def next_refresh_expiry(
    *,
    previous: datetime | None,
    answered: datetime | None,
    sent_token: bool,
    new_token: bool,
    obtained_at: datetime,
    lifetime: float | None,
    basis: RefreshExpiryBasis,
) -> datetime | None:
    """The refresh token's expiry after a refresh (pure).

    :param previous: the expiry before the refresh (``None``: unknown).
    :param answered: the expiry on the vendor's answer, as parsed (the dialect's documented
        lifetime from now when the answer states none).
    :param sent_token: whether the answer carried a refresh token at all.
    :param new_token: whether that refresh token differs from the one presented.
    :param lifetime: the lifetime to assume (the connection's ``refresh_lifetime``, else the
        dialect's documented one).

    * no refresh token in the answer: the old one and its expiry stay;
    * ``stated``: the vendor's expiry, else ``obtained_at + lifetime``;
    * ``per_token``: ``obtained_at + lifetime`` for a new token; the same token keeps ``previous``;
    * ``fixed_maximum``: never later than ``previous``: the first known expiry
      (``obtained_at + lifetime``) caps the chain.
    """
    if not sent_token:
        return previous
    assumed = obtained_at + timedelta(seconds=lifetime) if lifetime else answered
    if basis == "stated":
        return answered if answered is not None else assumed
    if basis == "per_token":
        return assumed if new_token or previous is None else previous
    candidates = [t for t in (previous, assumed) if t is not None]
    return min(candidates) if candidates else None


def refresh_renewed(
    *, previous: datetime | None, new: datetime | None, elapsed: float, basis: RefreshExpiryBasis
) -> bool:
    """Whether a refresh renewed the refresh token: its expiry moved *later* (pure).

    Later means by more than half the time since the previous refresh (``elapsed`` seconds), so a
    vendor stating a fixed expiry as "seconds left" (rounded) is not mistaken for a renewal, while
    a sliding lifetime (which moves by ``elapsed``) is. A first known expiry counts as renewed,
    except for a ``fixed_maximum`` lifetime, which is never renewed. An unknown expiry is not.
    """
    if new is None or basis == "fixed_maximum":
        return False
    if previous is None:
        return True
    return (new - previous).total_seconds() > max(0.0, elapsed) / 2
