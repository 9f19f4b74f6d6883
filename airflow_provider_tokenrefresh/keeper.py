"""The coordinator: "a valid token for connection X", with exactly one refresh per expiry window.

Everything that needs a token — hooks, operators, sensors, triggers, the CLI — calls
:meth:`TokenKeeper.get_valid_token` or :meth:`TokenKeeper.refresh`. The decision of what to do
is the pure function :func:`airflow_provider_tokenrefresh.lease.decide`; this module does the I/O
it says, in this order:

1. in-process cache hit with at least ``min_ttl`` left → return (no store read);
2. read the store, decide: *use* → return; *refuse* → raise; *wait* (another process's young
   intent) → read again after a pause, bounded, sending nothing;
3. *refresh* or *replay*: take the per-connection lock (it only spares waiters a spin), read and
   decide again under it;
4. **claim**: write a refresh intent with a fresh random id. Stores with compare-and-set (file,
   Vault/OpenBao, AWS) make that write the mutual exclusion. Airflow Variables have none, so the
   claim is *write, wait ``settle`` seconds, read back*: a claim whose read-to-acknowledged time
   exceeded ``settle / 2`` is withdrawn, and one that reads back another id lost. Under the stated
   bound (a Variable write is visible to every reader within ``settle / 2`` of its read), two
   claims cannot both read back their own id;
5. ask the lock whether the lease is still held (Redis owner key, PostgreSQL session): if not,
   withdraw the intent and make no vendor call;
6. call the vendor once;
7. **write the answer compare-and-set on the writer's own intent** before returning or logging
   anything. A holder whose lease lapsed during the call still stores what the vendor gave it —
   it holds the only live refresh token — unless another process has taken the record over since
   (it stalled past the bound ``stale_after``); then both answers are kept on the record, which is
   marked ``suspect``, and the caller gets an error: never a token that may be revoked;
8. a rejected refresh token: if the record is still ours, try the alternates it keeps, else
   ``reauth_required`` (with the interrupted refresh explained after a replay); if another process
   wrote meanwhile (a lost race — the vendor may have revoked the whole family on the reuse), the
   record is marked ``suspect`` and one more refresh decides.

Crash-safe rotation, as a state machine (``R`` is the stored record, ``g`` its generation)::

    VALID ──(less than min_ttl left)──► DUE ──lock──► re-read ──(someone refreshed)──► VALID
                                                  │
                        young intent of another ◄─┤ (wait; never send the same token)
                                                  ▼
                         INTENT (id): CAS / write+settle+read-back                   [crash: see (a)]
                                                  │ lease still held?
                                             vendor call                            [crash: see (b)]
            ┌──────────────┬──────────────┬───────┴────────┬──────────────────────┐
         success       rejected        transient /      outcome unknown      (process dies)
            │              │           configuration    (timeout, dropped)
            ▼              ▼               │                 │
      write g+1, CAS   ours? alternates,   ▼                 ▼
      on own intent    else REAUTH;    clear own intent, keep intent: others
      (taken over:     someone else's? note error,       wait until it is older
      keep both,       SUSPECT, one    raise (retry      than stale_after, then
      SUSPECT)         refresh decides later is safe)    replay (see (b))

Recovery: (a) a crash before the vendor call leaves an intent whose refresh token is still good:
once the intent is older than ``stale_after`` the next holder replays it normally. (b) a crash
after the vendor rotated but before the write leaves the intent and a refresh token the vendor no
longer accepts: the replay is rejected, the record becomes ``reauth_required`` and its reason
names the interrupted refresh (when and by which process). An access token is never handed out
before the refresh token that came with it is durable.

This module imports nothing from Airflow.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_tokenrefresh.errors import (
    AmbiguousRejection,
    ConfigurationError,
    LockLost,
    LockTimeout,
    RecordTakenOver,
    RefreshInFlight,
    RefreshOutcomeUnknown,
    RefreshTokenRejected,
    StoreConflict,
    StoreError,
    TokenRefreshError,
)
from airflow_provider_tokenrefresh.lease import (
    DEFAULT_ROUND_TRIP,
    Decision,
    View,
    decide,
    effective_margin,
    expiry_basis_for,
    grace_retry_allowed,
    lapse_warning,
)
from airflow_provider_tokenrefresh.redaction import redact, remember_secrets
from airflow_provider_tokenrefresh.shield import deferred_signals
from airflow_provider_tokenrefresh.tokens import AlternateTokens, TokenRecord, fingerprint, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from airflow_provider_tokenrefresh.client import RefreshClient
    from airflow_provider_tokenrefresh.locks import Lease, RefreshLock
    from airflow_provider_tokenrefresh.stores import TokenStore, Version
    from airflow_provider_tokenrefresh.tokens import RefreshExpiryBasis, TokenSet

log = logging.getLogger(__name__)

#: Default seconds of validity a caller wants left on a token it is handed.
DEFAULT_MIN_TTL = 300.0
#: Default settle time of a claim in a store without compare-and-set (Airflow Variables): at least
#: twice the worst read-to-visible time of a Variable write measured on real components under load
#: (2.7 s in 20,000 writes from tasks, benchmarks/variable_latency.py; docs/concurrency.md).
DEFAULT_SETTLE = 6.0
#: Added to the worst-case duration of one refresh to get the stale bound.
STALE_MARGIN = 30.0
#: Longest a waiter watches the record in one go before it reads it and tries the lock again.
WATCH_SLICE = 1.0
#: How long a process uses its cached record without reading the store again (seconds). Within it,
#: a token another process stored (a rotation, a re-seed, a record marked suspect or
#: reauth_required) is not seen; a 401 from the vendor still makes the caller re-read at once
#: (TokenAuth). After it, the next call re-reads the store: one store read per key per minute.
CACHE_FOR = 60.0


@dataclass(frozen=True, slots=True)
class _HotEntry:
    """A cached record with its deadlines precomputed (epoch seconds) for the hot path."""

    record: TokenRecord
    #: The access token itself (what ``hook.get_token()`` returns on a hit).
    access: str = field(repr=False)
    #: Seed fingerprints this record serves (its own and the ones it superseded).
    seeds: frozenset[str]
    expires_at: float
    #: Half the access token's lifetime (the cap of any margin: lease.effective_margin), or inf.
    half_life: float
    #: min(when the refresh token falls due, when the cache stops being trusted).
    trusted_until: float


def hot_entry(record: TokenRecord, now: float, refresh_margin: float, cache_for: float) -> _HotEntry | None:
    """The hot-path entry of ``record``, or ``None`` when it must not be served from memory
    (not valid, a refresh in flight, no access token or expiry). Pure; the same rule as
    :func:`~airflow_provider_tokenrefresh.lease.needs_refresh`, with the dates turned into floats."""
    if (
        record.state != "valid"
        or record.refresh_started_at is not None
        or record.access_token is None
        or record.expires_at is None
    ):
        return None
    lifetime = record.access_lifetime()
    half_life = lifetime / 2 if lifetime is not None and lifetime > 0 else float("inf")
    until = now + cache_for
    if record.reauth_deadline is None:
        if record.refresh_token is None:
            return None
        if record.refresh_expires_at is not None:
            due = record.refresh_expires_at.timestamp() - effective_margin(
                refresh_margin, record.refresh_lifetime()
            )
            until = min(until, due)
    seeds = frozenset(fp for fp in (record.seed_fingerprint, *record.superseded_seeds) if fp)
    access = record.access_token.get_secret_value()
    return _HotEntry(record, access, seeds, record.expires_at.timestamp(), half_life, until)


#: The same refresh-token warning is logged again by one process after this many seconds.
LAPSE_WARNING_EVERY = 3600.0


def default_stale_after(
    *,
    timeout: float,
    attempts: int,
    max_retry_after: float,
    lease_ttl: float,
    settle: float,
    reuse_grace: float = 0.0,
) -> float:
    """The bound ``B``: an intent younger than this may still have a request at the vendor.

    Every attempt's full timeout, the longest waits between attempts, the lock's lease, the claim's
    settle time and a margin for clock skew and store latency. 186 s with the defaults (30 s
    timeout, 3 attempts, 30 s Retry-After cap, file lock, Variable store). With a vendor reuse
    window, a lost answer may be asked again until the window closes: the window and one more
    request's timeout are added.
    """
    attempts = max(1, attempts)
    again = reuse_grace + timeout if reuse_grace > 0 else 0.0
    return attempts * timeout + (attempts - 1) * max_retry_after + lease_ttl + settle + again + STALE_MARGIN


def process_identity() -> str:
    """``host:pid`` of this process, as written on intents."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Seed:
    """The initial tokens a person put on the connection."""

    refresh_token: str = field(repr=False)
    access_token: str | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        """Non-reversible fingerprint of the initial refresh token."""
        return fingerprint(self.refresh_token)


@dataclass
class RefreshOutcome:
    """What :meth:`TokenKeeper.refresh` did, for operators and the CLI (no secrets)."""

    record: TokenRecord
    refreshed: bool
    rotated: bool = False
    #: After a refresh: whether the vendor's answer moved the refresh token's expiry later
    #: (``None`` when nothing was refreshed, or the expiry is unknown).
    renewed: bool | None = None

    def status(self) -> dict[str, Any]:
        """Non-secret summary for XCom and logs."""
        return {
            **self.record.status(),
            "refreshed": self.refreshed,
            "rotated": self.rotated,
            "refresh_token_renewed": self.renewed,
        }


class _Retry:
    """The claim was lost or withdrawn: read and decide again."""


_RETRY = _Retry()


class TokenKeeper:
    """Keeps one connection's token valid through one store and one lock.

    :param key: store key of the record (per connection).
    :param client: the refresh client of the connection's dialect.
    :param store: where the record lives.
    :param lock: spares waiters a spin; the record itself is the lease.
    :param seed: the connection's initial tokens.
    :param refresh_token_ttl: refresh-token lifetime to assume when the vendor does not say.
    :param refresh_margin: refresh this long before the *refresh* token expires, so it never lapses.
    :param lock_timeout: seconds to wait for the lock, and for another process's refresh in flight,
        before giving up (no refresh is sent then).
    :param stale_after: the bound ``B`` (seconds) after which an intent counts as a crashed refresh;
        default :func:`default_stale_after` of the client's timeouts and the lock's lease.
    :param settle: claim settle time for stores without compare-and-set (default 6 s).
    :param lock_explicit: whether the connection named its lock (else ``lock: auto`` chose it).
    :param on_secret: called with every secret read or received (Airflow's ``mask_secret``).
    :param refresh_expiry_basis: how the refresh token's expiry is known, which decides whether a
        refresh renewed it (default: from the client's dialect, :func:`~airflow_provider_tokenrefresh.lease.expiry_basis_for`).
    :param refresh_token_horizon: warn (log WARNING) when the refresh token lapses, or the
        re-authorization deadline falls, within this many seconds (default: Airflow's
        ``[tokenrefresh] refresh_token_horizon``, else 7 days).
    """

    # In-process cache shared by every keeper of a key in this process: a hit costs no store read,
    # no datetime arithmetic and no allocation (deadlines precomputed as epoch floats; _HotEntry).
    _cache: ClassVar[dict[str, _HotEntry]] = {}
    # Rotated records whose write failed, with the id of the intent they answer: the only copy of a
    # live refresh token; retried first.
    _unsaved: ClassVar[dict[str, tuple[TokenRecord, str | None]]] = {}
    _guard = threading.Lock()
    # Refresh-token warnings logged by this process: key -> (what was warned about, monotonic time).
    _lapse_warned: ClassVar[dict[str, tuple[tuple[object, ...], float]]] = {}

    def __init__(
        self,
        key: str,
        client: RefreshClient,
        store: TokenStore,
        lock: RefreshLock,
        seed: Seed,
        *,
        conn_id: str | None = None,
        refresh_token_ttl: float | None = None,
        refresh_margin: float = DEFAULT_MIN_TTL,
        lock_timeout: float = 60.0,
        write_attempts: int = 4,
        write_backoff: float = 0.2,
        stale_after: float | None = None,
        settle: float | None = None,
        lock_explicit: bool = True,
        reuse_grace: float = 0.0,
        on_secret: Callable[[str], object] | None = None,
        clock: Callable[[], datetime] = utcnow,
        refresh_expiry_basis: RefreshExpiryBasis | None = None,
        refresh_token_horizon: float | None = None,
    ) -> None:
        self.key = key
        self.client = client
        self.store = store
        self.lock = lock
        self.seed = seed
        self.conn_id = conn_id
        self.refresh_token_ttl = refresh_token_ttl
        self.refresh_margin = refresh_margin
        if refresh_expiry_basis is None:
            spec = getattr(client, "spec", None)
            response = getattr(spec, "response", None)
            refresh_expiry_basis = expiry_basis_for(
                str(getattr(spec, "name", "")),
                states_refresh_expiry=bool(getattr(response, "refresh_expires_in", None)),
            )
        self.refresh_expiry_basis: RefreshExpiryBasis = refresh_expiry_basis
        self._refresh_token_horizon = refresh_token_horizon
        self.lock_timeout = lock_timeout
        self.write_attempts = max(1, write_attempts)
        self.write_backoff = write_backoff
        self.settle = DEFAULT_SETTLE if settle is None else settle
        if stale_after is None:
            cs = getattr(client, "settings", None)
            stale_after = default_stale_after(
                timeout=getattr(cs, "timeout", 30.0),
                attempts=getattr(cs, "max_attempts", 3),
                max_retry_after=getattr(cs, "max_retry_after", 30.0),
                lease_ttl=getattr(lock, "lease_ttl", 0.0),
                settle=0.0 if getattr(store, "atomic", False) else self.settle,
                reuse_grace=max(0.0, float(reuse_grace)),
            )
        self.stale_after = stale_after
        self.lock_explicit = lock_explicit
        #: The vendor's reuse window (extra ``reuse_grace``): a lost answer is retried inside it.
        self.reuse_grace = max(0.0, float(reuse_grace))
        #: The last successful vendor round trip (seconds); what a retry must leave of the window.
        self._round_trip = DEFAULT_ROUND_TRIP
        #: Answers that may or may not mean a dead token are asked this often before being believed.
        self.ambiguous_attempts = 3
        self.ambiguous_pause = 2.0
        self.me = process_identity()
        self._on_secret = on_secret
        self._clock = clock
        #: The same clock as epoch seconds (``time.time`` itself for the default clock: no datetime).
        self._now: Callable[[], float] = time.time if clock is utcnow else (lambda: clock().timestamp())
        #: How long a cached record is used without looking at the store (CACHE_FOR, seconds).
        self.cache_for = CACHE_FOR
        self._fingerprint = seed.fingerprint
        #: Called with the name of each step of a refresh ("intent_written", "before_request",
        #: "after_answer", "after_write"): tracing, and the chaos tests' crash points.
        self.checkpoint: Callable[[str], None] | None = None
        self._register(seed.refresh_token, seed.access_token)

    # -- helpers -----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The connection id (or the store key) for messages."""
        return self.conn_id or self.key

    @property
    def lock_identity(self) -> str:
        """The lock recorded on the record: its identity, or just ``file`` for a file lock (whose
        domains are listed in ``file_lock_hosts`` instead)."""
        identity = str(getattr(self.lock, "identity", self.lock.name))
        return "file" if self.lock.name == "file" else identity

    def _register(self, *values: str | None) -> None:
        remember_secrets(*values)
        if self._on_secret is not None:
            for value in values:
                if value:
                    self._on_secret(value)

    def _named(self, exc: TokenRefreshError) -> TokenRefreshError:
        return exc.with_conn_id(self.conn_id) if self.conn_id else exc

    def _seed_record(self) -> TokenRecord:
        seed = TokenRecord.seeded(self.seed.refresh_token, self.seed.access_token)
        return seed.model_copy(update={"conn_id": self.conn_id}) if self.conn_id else seed

    def _read(self) -> tuple[TokenRecord | None, Version]:
        try:
            record, version = self.store.read(self.key)
        except TokenRefreshError as exc:
            raise self._named(exc) from None
        except Exception as exc:  # noqa: BLE001 - any backend failure becomes a StoreError
            raise self._named(
                StoreError(
                    f"reading the {self.store.name} store failed: {type(exc).__name__}: {redact(str(exc))}"
                )
            ) from None
        if record is not None:
            self._register(*record.secrets())
        return record, version

    def _view(
        self,
        record: TokenRecord | None,
        *,
        min_ttl: float,
        force: bool = False,
        satisfied_above: int | None = None,
        retry_rejected: bool = False,
        refresh_margin: float | None = None,
    ) -> View:
        return View(
            record=record,
            seed_fingerprint=self.seed.fingerprint,
            now=self._clock(),
            min_ttl=min_ttl,
            refresh_margin=self.refresh_margin if refresh_margin is None else refresh_margin,
            stale_after=self.stale_after,
            force=force,
            satisfied_above=satisfied_above,
            retry_rejected=retry_rejected,
            lock=self.lock_identity,
            lock_explicit=self.lock_explicit,
            conn_id=self.conn_id,
        )

    def _step(self, name: str) -> None:
        if self.checkpoint is not None:
            self.checkpoint(name)

    def _cache_put(self, record: TokenRecord) -> None:
        # One dict operation, atomic under the GIL: no lock (a fan-out's threads queued on a shared
        # one behind the GIL).
        entry = hot_entry(record, self._now(), self.refresh_margin, self.cache_for)
        if entry is None:
            self._cache.pop(self.key, None)
        else:
            self._cache[self.key] = entry

    def _forget(self) -> None:
        with self._guard:
            self._cache.pop(self.key, None)

    def close(self) -> None:
        """Close the HTTP client, and the store's and lock's connections where they have any."""
        self.client.close()
        for part in (self.store, self.lock):
            closer = getattr(part, "close", None)
            if closer is not None:
                closer()

    @classmethod
    def clear_cache(cls) -> None:
        """Forget every cached record in this process (tests, long-lived CLI sessions)."""
        with cls._guard:
            cls._cache.clear()

    # -- public API -----------------------------------------------------------------------------------

    def current(self) -> TokenRecord:
        """The record as stored (generation 0 from the connection's seed when none is), without refreshing."""
        record, _ = self._read()
        return record if record is not None else self._seed_record()

    def get_valid_token(self, min_ttl: float = DEFAULT_MIN_TTL) -> TokenRecord:
        """Return a record whose access token is valid for at least ``min_ttl`` seconds.

        :raises TokenRefreshError: a subclass naming the connection; never with a secret in it.
        """
        hot = self.cached(min_ttl)
        return hot.record if hot is not None else self.refresh(min_ttl=min_ttl).record

    def cached(self, min_ttl: float = DEFAULT_MIN_TTL) -> _HotEntry | None:
        """This process's cached entry (``.record``, ``.access``: the access token) if it serves
        ``min_ttl`` now, else ``None`` (then :meth:`get_valid_token` reads the store and refreshes
        if needed). The hot path: no store read, no datetime, no allocation."""
        hot = self._cache.get(self.key)
        if hot is not None and self._fingerprint in hot.seeds:
            now = self._now()
            if now < hot.trusted_until and hot.expires_at - now >= (
                min_ttl if min_ttl < hot.half_life else hot.half_life
            ):
                return hot
        return None

    @property
    def refresh_token_horizon(self) -> float:
        """Seconds ahead a lapsing refresh token or a re-authorization deadline is warned about."""
        if self._refresh_token_horizon is None:
            from airflow_provider_tokenrefresh.horizon import configured_refresh_token_horizon

            self._refresh_token_horizon = configured_refresh_token_horizon()
        return self._refresh_token_horizon

    def warn_if_lapsing(self, record: TokenRecord) -> str | None:
        """Log a WARNING when ``record``'s refresh token lapses (or its re-authorization deadline
        falls) within the horizon (:func:`~airflow_provider_tokenrefresh.lease.lapse_warning`); the
        same warning at most once per :data:`LAPSE_WARNING_EVERY` seconds per process.

        :returns: the warning (also when it was not logged again), or ``None``.
        """
        message = lapse_warning(record, self._clock(), self.refresh_token_horizon, self.name)
        if message is None:
            return None
        about = (record.refresh_expires_at, record.reauth_deadline, record.seed_fingerprint)
        now = time.monotonic()
        with self._guard:
            last = self._lapse_warned.get(self.key)
            if last is not None and last[0] == about and now - last[1] < LAPSE_WARNING_EVERY:
                return message
            self._lapse_warned[self.key] = (about, now)
        log.warning("%s", message)
        return message

    def refresh(
        self,
        *,
        force: bool = False,
        min_ttl: float = DEFAULT_MIN_TTL,
        retry_rejected: bool = False,
        unless_newer_than: int | None = None,
        refresh_margin: float | None = None,
    ) -> RefreshOutcome:
        """Refresh if the token has less than ``min_ttl`` left (or always, with ``force``).

        :param force: refresh even if the token is still valid — unless someone else refreshed
            while this call waited, which satisfies the request.
        :param retry_rejected: call the vendor even though the record says re-authorization is
            needed (a person asked for it: ``refresh --force``).
        :param unless_newer_than: with ``force``, a stored generation above this one satisfies the
            request (a 401 on generation N is answered by anyone's generation N+1).
        :param refresh_margin: the refresh-token margin of this call (default: the keeper's);
            :func:`~airflow_provider_tokenrefresh.fanout.refresh_all` passes :func:`~.lease.keeper_refresh_margin`.

        Afterwards, a refresh token lapsing within the horizon is logged (:meth:`warn_if_lapsing`).
        """
        outcome = self._refresh(
            force=force,
            min_ttl=min_ttl,
            retry_rejected=retry_rejected,
            unless_newer_than=unless_newer_than,
            refresh_margin=refresh_margin,
        )
        self.warn_if_lapsing(outcome.record)
        return outcome

    def _refresh(
        self,
        *,
        force: bool,
        min_ttl: float,
        retry_rejected: bool,
        unless_newer_than: int | None,
        refresh_margin: float | None,
    ) -> RefreshOutcome:
        deadline = time.monotonic() + self.lock_timeout
        if self.key in self._unsaved:
            self._flush_unsaved()  # our own answer first: compare-and-set on our own intent
        record, _ = self._read()
        if unless_newer_than is None and force:
            # Someone else's refresh while this call waits satisfies a forced refresh too.
            unless_newer_than = record.generation if record is not None else -1

        def decision_for(current: TokenRecord | None) -> Decision:
            view = self._view(
                current,
                min_ttl=min_ttl,
                force=force,
                satisfied_above=unless_newer_than,
                retry_rejected=retry_rejected,
                refresh_margin=refresh_margin,
            )
            return decide(view, self._seed_record())

        pause = 0.05
        waited_once = False
        watch = getattr(self.store, "watch", None)
        decision = decision_for(record)
        while True:
            if decision.action in ("use", "refuse"):
                return self._finish(decision)
            if decision.action == "wait":
                if time.monotonic() >= deadline:
                    raise self._named(
                        RefreshInFlight(
                            f"{decision.reason}; waited {self.lock_timeout:.0f}s and sent nothing. If no "
                            "process is refreshing any more, the intent counts as crashed once it is older "
                            f"than {self.stale_after:.0f}s"
                        )
                    ) from None
                if watch is not None:
                    watch(self.key, min(WATCH_SLICE, max(0.0, deadline - time.monotonic())))
                elif not self._wait_on_lock(deadline):
                    # The lock is free here: the refresh runs under another lock domain (another
                    # host's file lock); watch the record, backing off, bounded by the deadline.
                    time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                    pause = min(pause * 2, 1.0)
                record, _ = self._read()
                decision = decision_for(record)
                continue
            if watch is not None:
                # A store that can be watched: take the lock only if it is free; while someone
                # holds it, watch the record (all waiters side by side, none queued on the lock).
                try:
                    with self.lock.hold(self.key, 0.0) as lease:
                        outcome = self._refresh_under(lease, decision_for)
                except LockTimeout:
                    outcome = None
                if isinstance(outcome, RefreshOutcome):
                    return outcome
                if outcome is None:
                    if time.monotonic() >= deadline:
                        raise self._named(
                            RefreshInFlight(
                                f"another process held the refresh lock of {self.name} for "
                                f"{self.lock_timeout:.0f}s; sent nothing"
                            )
                        ) from None
                    watch(self.key, min(WATCH_SLICE, max(0.0, deadline - time.monotonic())))
                record, _ = self._read()
                decision = decision_for(record)
                self._check_claims_deadline(decision, deadline)
                continue
            if not waited_once and self._wait_on_lock(deadline):
                # Someone in our lock domain was refreshing: look again outside the lock, so that
                # waiters re-read the store side by side instead of one at a time under it.
                waited_once = True
                record, _ = self._read()
                decision = decision_for(record)
                continue
            with self.lock.hold(self.key, max(0.1, deadline - time.monotonic())) as lease:
                outcome = self._refresh_under(lease, decision_for)
            if isinstance(outcome, RefreshOutcome):
                return outcome
            record, _ = self._read()
            decision = decision_for(record)
            self._check_claims_deadline(decision, deadline)

    def _check_claims_deadline(self, decision: Decision, deadline: float) -> None:
        if decision.action in ("refresh", "replay") and time.monotonic() >= deadline:
            raise self._named(
                RefreshInFlight(
                    f"another process claimed each refresh of {self.name} first for "
                    f"{self.lock_timeout:.0f}s; sent nothing"
                )
            ) from None

    def _refresh_under(
        self, lease: Lease, decision_for: Callable[[TokenRecord | None], Decision]
    ) -> RefreshOutcome | _Retry:
        """Holding the lock: read again, and refresh if the record still says so.

        :returns: the outcome, or ``_RETRY`` (nothing done here: someone else had refreshed, or a
            claim lost) for the caller to read and decide again.
        """
        self._flush_unsaved()
        read_at = time.monotonic()
        record, version = self._read()
        decision = decision_for(record)
        if decision.action in ("refresh", "replay"):
            return self._refresh_locked(decision, version, lease, read_at=read_at)
        return _RETRY

    def _wait_on_lock(self, deadline: float) -> bool:
        """Block on the lock instead of polling the store while a holder in our lock domain works.

        :returns: whether the lock was busy (someone here was refreshing, and is done or timed out).
        """
        started = time.monotonic()
        try:
            with self.lock.hold(self.key, max(0.01, deadline - started)):
                pass
        except LockTimeout:
            return True
        return time.monotonic() - started > 0.05

    def _finish(self, decision: Decision) -> RefreshOutcome:
        """Carry out *use* or *refuse*."""
        if decision.action == "use":
            assert decision.base is not None
            if decision.stale_seed:
                log.warning(
                    "Connection %s still carries a superseded refresh token (this process's view of the "
                    "connection is stale); using the stored record",
                    self.name,
                )
            if decision.base.state == "valid":
                self._cache_put(decision.base)
            return RefreshOutcome(decision.base, refreshed=False)
        if decision.refuse in ("reauth_required", "stale_seed"):
            message = decision.reason + (
                ". Put a new refresh_token on the connection (or run "
                "'airflow-tokenrefresh refresh CONN_ID --force' to try the stored one again)."
            )
            if decision.refuse == "stale_seed":
                message += (
                    " This process sees an older refresh token on the connection than the one the record "
                    "was seeded from: its view of the connection is stale (environment variable, "
                    "secrets-backend cache); it never starts over from it."
                )
            raise self._named(RefreshTokenRejected(message))
        raise self._named(ConfigurationError(decision.reason))

    # -- the refresh itself ---------------------------------------------------------------------------

    def _claim(self, intent: TokenRecord, version: Version, *, read_at: float) -> Version | _Retry:
        """Write the intent so that at most one process can go on to the vendor.

        :returns: the version of the stored intent, or ``_RETRY`` when another claim won.
        """
        assert intent.intent_id is not None
        for attempt in range(1, self.write_attempts + 1):
            try:
                written = self.store.write(self.key, intent, version)
                break
            except StoreConflict:
                return _RETRY
            except Exception as exc:  # noqa: BLE001 - retried, then reported
                if attempt == self.write_attempts:
                    raise self._named(
                        StoreError(
                            f"could not write the refresh intent to the {self.store.name} store "
                            f"({type(exc).__name__}: {redact(str(exc))}); the vendor was not called"
                        )
                    ) from None
                time.sleep(random.uniform(0.5, 1.0) * self.write_backoff * 2 ** (attempt - 1))  # noqa: S311
        if getattr(self.store, "atomic", False):
            return written
        # No compare-and-set: write, let every earlier write settle, read back. The window that
        # matters runs from the read the write was compared against to the write's acknowledgement.
        window = getattr(self.store, "last_write_window", None)
        if window is None:
            window = time.monotonic() - read_at
        if window > self.settle / 2:
            log.warning(
                "Claiming the refresh of %s took longer than the store's stated bound (%.1fs); withdrawing",
                self.name,
                self.settle / 2,
            )
            self._withdraw(intent.intent_id)
            return _RETRY
        time.sleep(self.settle)
        stored, settled = self._read()
        if stored is None or stored.intent_id != intent.intent_id:
            return _RETRY
        return settled

    def _withdraw(self, intent_id: str) -> None:
        """Clear our own intent (nothing was sent); leave anyone else's alone."""
        try:
            stored, version = self._read()
            if stored is not None and stored.intent_id == intent_id:
                self.store.write(self.key, stored.without_intent(), version)
        except Exception:  # noqa: BLE001 - the intent then ages out after stale_after
            log.warning("Could not withdraw the refresh intent of %s; it ages out", self.name)

    def _intent(self, base: TokenRecord, lease: Lease) -> TokenRecord:
        hosts = base.file_lock_hosts
        if self.lock.name == "file":
            identity = str(getattr(self.lock, "identity", "file"))
            hosts = tuple(dict.fromkeys((*hosts, identity)))[-8:]
            if len(hosts) > 1 and identity not in base.file_lock_hosts:
                log.warning(
                    "Token record of %s is written under file locks of %d hosts or homes: a file lock "
                    "does not coordinate them (the record itself still does). Set extra 'lock' to "
                    "'redis' or 'postgres'",
                    self.name,
                    len(hosts),
                )
        return base.model_copy(
            update={
                "refresh_started_at": self._clock(),
                "refresh_started_by": self.me,
                "intent_id": secrets.token_hex(8),
                "fence": lease.fencing if lease.fencing is not None else base.fence,
                "lock_in_use": self.lock_identity,
                "file_lock_hosts": hosts,
                "conn_id": self.conn_id or base.conn_id,  # records older than 0.2.1 get it here
            }
        )

    def _refresh_locked(
        self, decision: Decision, version: Version, lease: Lease, *, read_at: float
    ) -> RefreshOutcome | _Retry:
        base = decision.base
        assert base is not None and base.refresh_token is not None
        replay = decision.action == "replay"
        if replay or decision.reason.startswith("the connection carries"):
            log.warning("%s: %s", self.name, decision.reason)
        intent = self._intent(base, lease)
        claimed = self._claim(intent, version, read_at=read_at)
        if isinstance(claimed, _Retry):
            return claimed
        assert intent.intent_id is not None
        self._step("intent_written")
        if not lease.still_held():
            self._withdraw(intent.intent_id)
            raise self._named(
                LockLost(
                    f"the {self.lock.name} lock's lease was lost before the vendor call (expired or its "
                    "session ended); no refresh was sent"
                )
            )
        return self._present(intent, claimed, replay=replay, suspect=base.state == "suspect", lease=lease)

    def _present(
        self,
        intent: TokenRecord,
        version: Version,
        *,
        replay: bool,
        suspect: bool,
        lease: Lease | None = None,
    ) -> RefreshOutcome | _Retry:
        """Call the vendor with the intent's refresh token and store what it says."""
        assert intent.refresh_token is not None and intent.intent_id is not None
        self._step("before_request")
        # From the request on, this process may hold the only live refresh token: a SIGTERM,
        # SIGINT or SIGALRM (execution_timeout) raised now would drop it. They are held until the
        # answer is stored (main thread only; see airflow_provider_tokenrefresh.shield).
        with deferred_signals("a refresh answer was on its way to the store"):
            return self._ask_and_store(intent, version, replay=replay, suspect=suspect, lease=lease)

    def _ask_and_store(
        self,
        intent: TokenRecord,
        version: Version,
        *,
        replay: bool,
        suspect: bool,
        lease: Lease | None = None,
    ) -> RefreshOutcome | _Retry:
        assert intent.refresh_token is not None and intent.intent_id is not None
        old_refresh = intent.refresh_token.get_secret_value()
        access = intent.access_token.get_secret_value() if intent.access_token else None
        first_sent = time.monotonic()
        try:
            answer = self._call_vendor(old_refresh, access)
            self._round_trip = time.monotonic() - first_sent
        except RefreshTokenRejected as exc:
            return self._on_rejected(intent, self._named(exc), replay=replay, suspect=suspect)
        except TokenRefreshError as exc:
            named = self._named(exc)
            again = (
                self._again_in_reuse_window(intent, lease, first_sent)
                if isinstance(exc, RefreshOutcomeUnknown)
                else None
            )
            if isinstance(again, RefreshTokenRejected):
                return self._on_rejected(intent, again, replay=replay, suspect=suspect)
            if again is None:
                # Only an unknown outcome keeps the intent: the vendor may have rotated the token.
                self._note_error(
                    intent, named, keep_intent=named.kind in ("outcome_unknown", "malformed_response")
                )
                raise named from None
            answer = again
        self._step("after_answer")
        new = (
            intent.without_intent()
            .model_copy(update={"alternates": ()})
            .advanced(answer, refresh_token_ttl=self.refresh_token_ttl, basis=self.refresh_expiry_basis)
        )
        self._register(*new.secrets())
        stored = self._persist_own(new, intent.intent_id, version)
        self._step("after_write")
        if stored.state != "valid":
            raise self._named(
                RecordTakenOver(
                    f"the refresh succeeded, but another process presented a refresh token meanwhile "
                    f"({stored.reason}); both answers are kept on the record, marked suspect: the next "
                    "refresh decides which chain the vendor still honours"
                )
            )
        self._cache_put(stored)
        rotated = stored.refresh_token is not None and stored.refresh_token.get_secret_value() != old_refresh
        renewed = None if stored.refresh_expires_at is None else stored.reauth_deadline is None
        log.info(
            "Token refreshed for %s: generation %d, rotated=%s, expires_at=%s, refresh token %s",
            self.name,
            stored.generation,
            rotated,
            stored.expires_at.isoformat(timespec="seconds") if stored.expires_at else None,
            "lifetime unknown"
            if renewed is None
            else f"renewed until {stored.refresh_expires_at.isoformat(timespec='seconds')}"
            if renewed and stored.refresh_expires_at
            else f"NOT renewed (re-authorize by {stored.reauth_deadline.isoformat(timespec='seconds')})"
            if stored.reauth_deadline
            else "not renewed",
        )
        return RefreshOutcome(stored, refreshed=True, rotated=rotated, renewed=renewed)

    def _again_in_reuse_window(
        self, intent: TokenRecord, lease: Lease | None, first_sent: float
    ) -> TokenSet | RefreshTokenRejected | None:
        """The answer was lost (``outcome_unknown``): inside the vendor's reuse window
        (``reuse_grace``), send the same refresh token again, as the vendor allows.

        Each try first re-reads the store (the intent must still be ours) and re-checks the lease,
        and goes only while the time since the first send plus one round trip is inside the window
        (:func:`~airflow_provider_tokenrefresh.lease.grace_retry_allowed`); the client sends nothing
        once the window has closed. ``None``: not recovered (today's path: the intent is kept and
        the outcome stays unknown); a rejection is returned for the caller to handle as one.
        """
        if self.reuse_grace <= 0 or lease is None:
            return None
        assert intent.refresh_token is not None
        refresh_token = intent.refresh_token.get_secret_value()
        access = intent.access_token.get_secret_value() if intent.access_token else None
        while True:
            elapsed = time.monotonic() - first_sent
            if not grace_retry_allowed(elapsed, self._round_trip, self.reuse_grace):
                log.warning(
                    "%s: the vendor's answer was lost; %.1fs after the first send, its reuse window (%gs) "
                    "less a round trip (%.2fs) leaves no time, so the refresh token is not sent again",
                    self.name,
                    elapsed,
                    self.reuse_grace,
                    self._round_trip,
                )
                return None
            try:
                stored, _ = self._read()
            except TokenRefreshError:
                return None
            if stored is None or stored.intent_id != intent.intent_id or not lease.still_held():
                log.warning("%s: the answer was lost and the refresh is no longer this process's", self.name)
                return None
            log.warning(
                "%s: the vendor's answer was lost; sending the same refresh token again inside the "
                "vendor's reuse window (%.1fs of %gs gone)",
                self.name,
                elapsed,
                self.reuse_grace,
            )
            self._step("reuse_window_retry")
            try:
                answer = self.client.refresh(
                    refresh_token, access, send_before=first_sent + self.reuse_grace - self._round_trip
                )
            except RefreshTokenRejected as exc:
                rejected = self._named(exc)
                assert isinstance(rejected, RefreshTokenRejected)  # with_conn_id keeps the type
                return rejected
            except RefreshOutcomeUnknown:
                continue
            except TokenRefreshError:
                return None
            log.warning("%s: recovered inside the vendor's reuse window", self.name)
            return answer

    def _call_vendor(self, refresh_token: str, access_token: str | None) -> TokenSet:
        """One refresh; an ambiguous rejection (a gateway's HTML 403, a code the vendor document
        leaves open) is asked again ``ambiguous_attempts`` times, ``ambiguous_pause`` x n seconds
        apart (3 answers over about 6 s by default), before it is believed."""
        started = time.monotonic()
        for attempt in range(1, self.ambiguous_attempts + 1):
            try:
                return self.client.refresh(refresh_token, access_token)
            except AmbiguousRejection as exc:
                if attempt == self.ambiguous_attempts:
                    raise RefreshTokenRejected(
                        f"{exc.message} ({attempt} such answers over {time.monotonic() - started:.0f}s)",
                        dialect=exc.dialect,
                        endpoint=exc.endpoint,
                        conn_id=exc.conn_id,
                        vendor_code=exc.vendor_code,
                        status_code=exc.status_code,
                    ) from None
                log.warning("%s: %s; asking again", self.name, exc.message)
                time.sleep(self.ambiguous_pause * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _persist_own(self, new: TokenRecord, intent_id: str | None, version: Version) -> TokenRecord:
        """Write a rotated record, compare-and-set on our own intent; never drop the answer.

        :returns: what was stored: ``new``, or — when another process took the record over while we
            were at the vendor — the other record with ``new`` kept as an alternate, marked suspect.
        """
        last: Exception | None = None
        for attempt in range(1, self.write_attempts + 1):
            try:
                self.store.write(self.key, new, version)
            except StoreConflict:
                try:
                    stored, version = self._read()
                except TokenRefreshError as exc:
                    last = exc
                    continue
                if stored is not None and intent_id is not None and stored.intent_id == intent_id:
                    if stored.state == "suspect":  # someone found our chain doubtful meanwhile
                        new = new.model_copy(update={"state": "suspect", "reason": stored.reason})
                    continue  # our intent still stands (an error note changed the version): again
                if stored is not None and stored.intent_id is None and _same_tokens(stored, new):
                    return stored  # our write did land
                merged = self._taken_over(stored, new)
                try:
                    self.store.write(self.key, merged, version)
                    return merged
                except Exception as exc:  # noqa: BLE001 - keep trying; the answer stays in memory
                    last = exc
                    continue
            except Exception as exc:  # noqa: BLE001 - retried, then reported as a StoreError
                last = exc
                if attempt < self.write_attempts:
                    time.sleep(random.uniform(0.5, 1.0) * self.write_backoff * 2 ** (attempt - 1))  # noqa: S311
                continue
            if self.key in self._unsaved:  # rare: only after a failed write
                with self._guard:
                    self._unsaved.pop(self.key, None)
            return new
        detail = f"{type(last).__name__}: {redact(str(last))}" if last else "unknown"
        with self._guard:
            self._unsaved[self.key] = (new, intent_id)
        raise self._named(
            StoreError(
                f"the vendor rotated the refresh token (generation {new.generation}) but writing it to the "
                f"{self.store.name} store failed ({detail}). The new token is held in this process's memory and "
                "the write is retried on the next call; no access token is handed out until it is stored."
            )
        ) from None

    def _taken_over(self, stored: TokenRecord | None, new: TokenRecord) -> TokenRecord:
        """``stored`` (someone else's), keeping our answer as an alternate and marked suspect."""
        assert new.refresh_token is not None
        alternate = AlternateTokens(
            access_token=new.access_token,
            expires_at=new.expires_at,
            refresh_token=new.refresh_token,
            refresh_expires_at=new.refresh_expires_at,
            obtained_at=new.obtained_at or self._clock(),
            obtained_by=self.me,
        )
        reason = (
            f"possible double send: a refresh by {self.me} answered after another process "
            f"({stored.refresh_started_by if stored else 'unknown'}) had taken the record over (this one "
            f"stalled past the {self.stale_after:.0f}s bound); the vendor may have revoked either chain"
        )
        log.warning("%s: %s", self.name, reason)
        base = stored if stored is not None else new
        return base.model_copy(
            update={
                "state": "suspect" if base.state != "reauth_required" else base.state,
                "reason": reason,
                "alternates": (*base.alternates, alternate)[-4:],
                "updated_at": self._clock(),
            }
        )

    def _flush_unsaved(self) -> None:
        """Retry the write of a rotated record a previous call in this process could not store."""
        pending = self._unsaved.get(self.key)
        if pending is None:
            return
        new, intent_id = pending
        stored, version = self._read()
        if stored is not None and stored.generation >= new.generation and _same_tokens(stored, new):
            with self._guard:
                self._unsaved.pop(self.key, None)
            return
        written = self._persist_own(new, intent_id, version)
        if written.state == "valid":
            self._cache_put(written)

    def _on_rejected(
        self, intent: TokenRecord, exc: TokenRefreshError, *, replay: bool, suspect: bool
    ) -> RefreshOutcome | _Retry:
        """The vendor rejected the refresh token: whose was it, and what is left?"""
        assert intent.intent_id is not None
        stored, version = self._read()
        if stored is None or stored.intent_id != intent.intent_id:
            # Another process wrote since we claimed (we stalled past the bound): a lost race. With
            # reuse detection the vendor may have revoked the whole family, the other's new token too.
            if stored is not None and stored.state == "valid":
                reason = (
                    f"the vendor rejected a refresh token presented by {self.me} after another process "
                    f"({stored.refresh_started_by or 'generation ' + str(stored.generation)}) had used it: "
                    "with reuse detection the vendor may have revoked that process's tokens too"
                )
                log.warning("%s: %s; marking the record suspect", self.name, reason)
                try:
                    self.store.write(
                        self.key,
                        stored.model_copy(
                            update={"state": "suspect", "reason": reason, "updated_at": self._clock()}
                        ),
                        version,
                    )
                except Exception:  # noqa: BLE001 - the next reader decides again
                    log.warning("Could not mark the record of %s suspect", self.name)
            self._forget()
            return _RETRY
        if stored.alternates:
            alternate, rest = stored.alternates[0], stored.alternates[1:]
            log.warning(
                "%s: the main refresh token was rejected; trying an alternate kept from %s",
                self.name,
                alternate.obtained_by,
            )
            promoted = stored.model_copy(
                update={
                    "refresh_token": alternate.refresh_token,
                    "access_token": alternate.access_token,
                    "expires_at": alternate.expires_at,
                    "refresh_expires_at": alternate.refresh_expires_at,
                    "alternates": rest,
                }
            )
            try:
                version = self.store.write(self.key, promoted, version)
            except StoreConflict:
                return _RETRY
            return self._present(promoted, version, replay=False, suspect=True)
        reason = f"{exc.message} (vendor answered at {self._clock().isoformat(timespec='seconds')})"
        if replay:
            reason += (
                f". An earlier refresh started at {stored.refresh_started_at} by {stored.refresh_started_by} "
                "never stored its answer (process killed or answer lost), so the vendor had most likely "
                "rotated this refresh token already"
            )
        elif suspect and stored.reason:
            reason += f". The record was suspect: {stored.reason}"
        marked = stored.without_intent().with_error(reason, reauth=True, now=self._clock())
        try:
            self.store.write(self.key, marked, version)
        except Exception as write_exc:  # noqa: BLE001 - the rejection is the error to report
            log.warning(
                "Could not record re-authorization state for %s: %s", self.name, type(write_exc).__name__
            )
        self._forget()
        if replay or suspect:
            raise RefreshTokenRejected(
                reason,
                dialect=exc.dialect,
                endpoint=exc.endpoint,
                conn_id=exc.conn_id,
                vendor_code=exc.vendor_code,
                status_code=exc.status_code,
            )
        raise exc

    def _note_error(self, intent: TokenRecord, exc: TokenRefreshError, *, keep_intent: bool = False) -> None:
        """Best effort: remember the last error in the record for ``status`` (never loses tokens)."""
        try:
            stored, current = self._read()
            if stored is None or stored.intent_id != intent.intent_id:
                return  # not ours any more: leave it alone
            noted = stored.with_error(f"{exc.kind}: {exc.message}", now=self._clock())
            if not keep_intent:
                noted = noted.without_intent()
            self.store.write(self.key, noted, current)
        except Exception:  # noqa: BLE001 - bookkeeping must not mask the real error
            log.debug("could not record last error", exc_info=False)


def _same_tokens(a: TokenRecord, b: TokenRecord) -> bool:
    return a.secrets()[:2] == b.secrets()[:2]
