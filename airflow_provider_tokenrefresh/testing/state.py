"""Token state shared by every emulated vendor: families, rotation, reuse detection, expiry.

:class:`TokenState` is the half of :class:`~airflow_provider_tokenrefresh.testing.emulator.VendorEmulator`
that knows nothing about HTTP: it issues token families, runs the refresh engine (rotation, reuse
detection that revokes the whole family, expiry on the emulator's clock) and answers what is valid.
Stdlib only; imports nothing from Airflow or the rest of the package.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    import threading
    from collections import Counter
    from collections.abc import Callable

DAY = 86400.0

TokenCharset = Literal["urlsafe", "base64"]
#: How a vendor with a reuse window (``reuse_grace`` > 0) answers a retired refresh token presented
#: within it (the industry's variants; strict reuse detection, no window, is the default):
#:
#: * ``same_pair``: the answer the token got when it was rotated, once more (an idempotent replay);
#: * ``new_pair``: a new pair in the same chain; the family's current refresh token is retired;
#: * ``previous_only``: like ``new_pair``, but only the most recently retired token is tolerated
#:   (an older one within its window is reuse).
GraceMode = Literal["same_pair", "new_pair", "previous_only"]
GRACE_MODES: tuple[GraceMode, ...] = ("same_pair", "new_pair", "previous_only")


def secrets_equal(given: str, expected: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@dataclass(frozen=True)
class IssuedTokens:
    """A token pair handed out by an emulator (tokens are left out of ``repr``).

    :param access_token: the access token.
    :param refresh_token: the refresh token.
    :param family_id: the token family both belong to.
    :param expires_in: access-token lifetime in seconds.
    :param refresh_expires_in: refresh-token lifetime left, in seconds.
    :param scope: the family's scope, if the vendor has one.
    """

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    family_id: str = ""
    expires_in: float = 0.0
    refresh_expires_in: float = 0.0
    scope: str | None = None


@dataclass(frozen=True)
class FamilySnapshot:
    """The state of one token family at one moment (tokens are left out of ``repr``).

    :param family_id: the family's id.
    :param access_token: the latest access token issued to the family.
    :param refresh_token: the family's current refresh token.
    :param access_expires_at: epoch seconds at which ``access_token`` expires.
    :param refresh_expires_at: epoch seconds at which ``refresh_token`` expires.
    :param revoked: whether the family was revoked (by reuse detection or an admin call).
    :param revoked_reason: why, when revoked.
    :param refreshes: how many successful refreshes the family had.
    :param scope: the family's scope.
    """

    family_id: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: float
    refresh_expires_at: float
    revoked: bool
    revoked_reason: str | None
    refreshes: int
    scope: str | None


@dataclass
class _Family:
    family_id: str
    scope: str | None
    refresh_token: str
    refresh_expires_at: float
    access_token: str
    access_expires_at: float
    access_tokens: dict[str, float] = field(default_factory=dict)
    retired_refresh: set[str] = field(default_factory=set)
    #: When each retired refresh token was retired, and the answer it got (for the reuse window).
    retired_at: dict[str, float] = field(default_factory=dict)
    rotation_answers: dict[str, IssuedTokens] = field(default_factory=dict)
    previous_refresh: str | None = None
    revoked: bool = False
    revoked_reason: str | None = None
    refreshes: int = 0

    def snapshot(self) -> FamilySnapshot:
        return FamilySnapshot(
            family_id=self.family_id,
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            access_expires_at=self.access_expires_at,
            refresh_expires_at=self.refresh_expires_at,
            revoked=self.revoked,
            revoked_reason=self.revoked_reason,
            refreshes=self.refreshes,
            scope=self.scope,
        )


@dataclass(frozen=True)
class AccessUse:
    """The first presentation of an access token at the protected sample API.

    :param at: wall-clock time (``time.time()``) at which the request arrived.
    :param accepted: whether the sample API answered 200.
    """

    at: float
    accepted: bool


def _use_key(access_token: str) -> str:
    # The first-use log keys tokens by a digest: it never holds a token itself.
    import hashlib

    return hashlib.sha256(access_token.encode("utf-8")).hexdigest()


RefreshOutcome = Literal["ok", "invalid_grant", "bad_auth"]


@dataclass(frozen=True)
class RefreshResult:
    """What the shared refresh engine decided (vendor subclasses render it).

    ``outcome`` is ``"ok"``, ``"invalid_grant"`` (the refresh token is rejected: ``reason`` is
    ``unknown``, ``revoked``, ``reused`` or ``expired``) or ``"bad_auth"`` (the access token bound to
    the request is not the family's current one; nothing changed).
    """

    outcome: RefreshOutcome
    reason: str = ""
    tokens: IssuedTokens | None = None
    rotated: bool = False


class Ledger:
    """The lock and the counters every part of an emulator shares (a base of the mixins)."""

    name: ClassVar[str] = "vendor"
    _lock: threading.RLock
    _counters: Counter[str]

    def _count(self, key: str) -> None:
        with self._lock:
            self._counters[key] += 1


class TokenState(Ledger):
    """Token families and the refresh engine (a mixin of ``VendorEmulator``; see its parameters)."""

    default_scope: ClassVar[str | None] = None
    access_ttl: float
    refresh_ttl: float
    rotation: bool
    reuse_detection: bool
    reuse_grace: float = 0.0
    grace_mode: GraceMode = "new_pair"
    revoke_old_access_tokens: bool
    token_charset: TokenCharset
    clock: Callable[[], float]
    _families: dict[str, _Family]
    _refresh_index: dict[str, str]
    _access_index: dict[str, str]

    def _new_token(self, kind: str) -> str:
        if self.token_charset == "base64":
            # 22 random bytes -> 30 base64 characters + "==", and explicit "+" and "/".
            return f"emu+{kind}/" + base64.b64encode(secrets.token_bytes(22)).decode("ascii")
        return f"emu-{kind}-" + secrets.token_urlsafe(24)

    def issue_tokens(self, scope: str | None = None) -> IssuedTokens:
        """Start a new token family, as the vendor's authorization flow would; return its tokens."""
        with self._lock:
            now = self.clock()
            family_id = "fam-" + secrets.token_hex(6)
            access = self._new_token("at")
            refresh = self._new_token("rt")
            family = _Family(
                family_id=family_id,
                scope=scope if scope is not None else self.default_scope,
                refresh_token=refresh,
                refresh_expires_at=now + self.refresh_ttl,
                access_token=access,
                access_expires_at=now + self.access_ttl,
            )
            family.access_tokens[access] = family.access_expires_at
            self._families[family_id] = family
            self._refresh_index[refresh] = family_id
            self._access_index[access] = family_id
            self._counters["issued"] += 1
            return IssuedTokens(
                access_token=access,
                refresh_token=refresh,
                family_id=family_id,
                expires_in=self.access_ttl,
                refresh_expires_in=self.refresh_ttl,
                scope=family.scope,
            )

    def refresh(
        self,
        refresh_token: str,
        *,
        bound_access_token: str | None = None,
        bound_may_be_expired: bool = True,
    ) -> RefreshResult:
        """The refresh engine every vendor shares (also callable directly from tests).

        :param refresh_token: the presented refresh token.
        :param bound_access_token: when given, it must be the family's current access token or the
            answer is ``bad_auth`` and nothing changes (isales' ``Authentication``).
        :param bound_may_be_expired: whether that access token still counts once it has expired
            (``False``: an expired one is ``bad_auth`` with reason ``expired access token``).
        """
        with self._lock:
            now = self.clock()
            family_id = self._refresh_index.get(refresh_token)
            family = self._families.get(family_id) if family_id is not None else None
            if family is None:
                return RefreshResult("invalid_grant", "unknown")
            if family.revoked:
                return RefreshResult("invalid_grant", "revoked")
            if refresh_token != family.refresh_token:
                # A retired (already rotated) refresh token of this family.
                if self._within_grace(family, refresh_token, now):
                    self._counters["grace_reuse"] += 1
                    if self.grace_mode == "same_pair":
                        return RefreshResult(
                            "ok", tokens=family.rotation_answers[refresh_token], rotated=True
                        )
                    return self._rotate(family, now)
                if self.reuse_detection:
                    self._revoke(family, "refresh token reuse detected")
                    self._counters["reuse_detected"] += 1
                return RefreshResult("invalid_grant", "reused")
            if now >= family.refresh_expires_at:
                return RefreshResult("invalid_grant", "expired")
            if bound_access_token is not None and not secrets_equal(bound_access_token, family.access_token):
                return RefreshResult("bad_auth", "access token is not the family's current one")
            if (
                bound_access_token is not None
                and not bound_may_be_expired
                and now >= family.access_expires_at
            ):
                return RefreshResult("bad_auth", "expired access token")
            return self._rotate(family, now)

    def _within_grace(self, family: _Family, refresh_token: str, now: float) -> bool:
        """Whether a retired ``refresh_token`` falls inside the vendor's reuse window."""
        retired = family.retired_at.get(refresh_token)
        if self.reuse_grace <= 0 or retired is None or now - retired >= self.reuse_grace:
            return False
        return self.grace_mode != "previous_only" or refresh_token == family.previous_refresh

    def _rotate(self, family: _Family, now: float) -> RefreshResult:
        """A successful refresh of ``family`` (caller holds the lock): a new access token and, with
        rotation, a new refresh token that retires the current one."""
        access = self._new_token("at")
        if self.revoke_old_access_tokens:
            for old in family.access_tokens:
                self._access_index.pop(old, None)
            family.access_tokens.clear()
        family.access_token = access
        family.access_expires_at = now + self.access_ttl
        family.access_tokens[access] = family.access_expires_at
        self._access_index[access] = family.family_id
        retiring = family.refresh_token
        if self.rotation:
            new_refresh = self._new_token("rt")
            family.retired_refresh.add(retiring)
            family.previous_refresh = retiring
            if self.reuse_grace > 0:  # only a vendor with a reuse window remembers when and what
                family.retired_at[retiring] = now
            family.refresh_token = new_refresh
            family.refresh_expires_at = now + self.refresh_ttl
            self._refresh_index[new_refresh] = family.family_id
        family.refreshes += 1
        tokens = IssuedTokens(
            access_token=access,
            refresh_token=family.refresh_token,
            family_id=family.family_id,
            expires_in=self.access_ttl,
            refresh_expires_in=max(0.0, family.refresh_expires_at - now),
            scope=family.scope,
        )
        if self.rotation and self.reuse_grace > 0:
            family.rotation_answers[retiring] = tokens
        return RefreshResult("ok", tokens=tokens, rotated=self.rotation)

    def process_refresh(
        self,
        refresh_token: str,
        *,
        bound_access_token: str | None = None,
        bound_may_be_expired: bool = True,
    ) -> RefreshResult:
        """:meth:`refresh` plus counting: ``ok``, ``invalid_grant`` and ``invalid_grant:<reason>``
        (``unknown``, ``revoked``, ``reused``, ``expired``), or ``bad_auth_header`` (and
        ``bad_auth_header:expired`` when the bound access token had expired)."""
        result = self.refresh(
            refresh_token, bound_access_token=bound_access_token, bound_may_be_expired=bound_may_be_expired
        )
        with self._lock:
            if result.outcome == "ok":
                self._counters["ok"] += 1
            elif result.outcome == "bad_auth":
                self._counters["bad_auth_header"] += 1
                if result.reason == "expired access token":
                    self._counters["bad_auth_header:expired"] += 1
            else:
                self._counters["invalid_grant"] += 1
                self._counters[f"invalid_grant:{result.reason}"] += 1
        return result

    def _revoke(self, family: _Family, reason: str) -> None:
        if family.revoked:
            return
        family.revoked = True
        family.revoked_reason = reason
        self._counters["family_revoked"] += 1

    def revoke_family(self, family_id: str, reason: str = "revoked by test") -> None:
        """Revoke a whole family (as a user withdrawing consent would)."""
        with self._lock:
            self._revoke(self._families[family_id], reason)

    def family_of(self, token: str) -> str | None:
        """The family id of an access or refresh token (current or retired), else ``None``."""
        with self._lock:
            return self._refresh_index.get(token) or self._access_index.get(token)

    def current_tokens(self, family_id: str) -> FamilySnapshot:
        """The family's current state (raises ``KeyError`` for an unknown family)."""
        with self._lock:
            return self._families[family_id].snapshot()

    def families(self) -> list[str]:
        """Every family id, oldest first."""
        with self._lock:
            return list(self._families)

    @property
    def families_revoked(self) -> int:
        """How many families are revoked."""
        with self._lock:
            return sum(1 for f in self._families.values() if f.revoked)

    def is_refresh_token_valid(self, refresh_token: str) -> bool:
        """Whether a refresh now with this token would succeed (current, unexpired, family alive)."""
        with self._lock:
            family_id = self._refresh_index.get(refresh_token)
            family = self._families.get(family_id) if family_id is not None else None
            return (
                family is not None
                and not family.revoked
                and family.refresh_token == refresh_token
                and self.clock() < family.refresh_expires_at
            )

    def note_access_use(self, access_token: str, at: float, accepted: bool) -> None:
        """Log a presentation of ``access_token`` at the protected sample API (the server calls this
        for every sample request, with its wall-clock arrival time ``at``); only the first is kept."""
        key = _use_key(access_token)
        with self._lock:
            uses = self.__dict__.setdefault("_access_uses", {})
            if key not in uses:
                uses[key] = AccessUse(at=at, accepted=accepted)

    def first_use(self, access_token: str) -> AccessUse | None:
        """When the vendor first saw ``access_token`` at its protected API (``None``: never)."""
        with self._lock:
            uses: dict[str, AccessUse] = self.__dict__.get("_access_uses", {})
            return uses.get(_use_key(access_token))

    def first_use_by_digest(self, token_digest: str) -> AccessUse | None:
        """:meth:`first_use` by the token's SHA-256 hex digest (for reports that hold no token)."""
        with self._lock:
            uses: dict[str, AccessUse] = self.__dict__.get("_access_uses", {})
            return uses.get(token_digest)

    def is_access_token_valid(self, access_token: str) -> bool:
        """Whether the sample API would accept this access token now."""
        with self._lock:
            family_id = self._access_index.get(access_token)
            family = self._families.get(family_id) if family_id is not None else None
            if family is None or family.revoked:
                return False
            expires_at = family.access_tokens.get(access_token)
            return expires_at is not None and self.clock() < expires_at
