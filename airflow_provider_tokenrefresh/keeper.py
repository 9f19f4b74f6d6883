"""The coordinator: "a valid token for connection X", with exactly one refresh per expiry window.

Everything that needs a token — hooks, operators, sensors, triggers, the CLI — calls
:meth:`TokenKeeper.get_valid_token` or :meth:`TokenKeeper.refresh`. The algorithm is
double-checked locking around the store:

1. in-process cache hit with at least ``min_ttl`` left → return;
2. read the store; reconcile with the connection's seed (a re-seeded connection wins);
   at least ``min_ttl`` left → return;
3. take the per-connection lock (bounded wait), read the store again — someone may have refreshed
   while we waited;
4. refresh once; **write the new record (compare-and-set) before returning or logging anything**;
   if the write fails, retry with backoff, keep the new record in memory, and fail loudly;
5. on a rejected refresh token, re-read: a newer generation means someone else rotated it (use
   theirs); otherwise mark the record ``reauth_required`` and stop calling the vendor until the
   connection is re-seeded.

Crash-safe rotation, as a state machine (``R`` is the stored record, ``g`` its generation)::

    VALID ──(less than min_ttl left)──► DUE ──lock──► re-read ──(someone refreshed)──► VALID
                                                  │
                                                  ▼
                         INTENT: write R + refresh_started_at/by, compare-and-set   [crash: see (a)]
                                                  │
                                             vendor call                            [crash: see (b)]
            ┌──────────────┬──────────────┬───────┴────────┬──────────────────────┐
         success       rejected        transient /      outcome unknown      (process dies)
            │              │           configuration    (timeout, dropped)
            ▼              ▼               │                 │
      write g+1 (CAS)   re-read:           ▼                 ▼
      before anyone    newer g → use   clear intent,     keep intent, note error,
      sees the token   it; else        note error,       raise: the next run tries
            │          REAUTH_REQUIRED raise (retry      the stored token; a
      write fails?     (reason, fix;   later is safe)    rejection then becomes
      retry, keep in   vendor not                        REAUTH_REQUIRED naming
      memory (UNSAVED),called again                      the interrupted refresh
      fail loudly;     until re-seed)
      next call writes
      it first

Recovery: (a) a crash before the vendor call leaves an intent whose refresh token is still good:
the next holder of the lock refreshes normally. (b) a crash after the vendor rotated but before
the write leaves the intent and a refresh token the vendor no longer accepts: the next holder's
refresh is rejected, the record becomes ``reauth_required`` and its reason names the interrupted
refresh (when and by which process), so the person on call knows a re-authorization is needed
and why. An access token is never handed out before the refresh token that came with it is
durable.

This module imports nothing from Airflow.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_tokenrefresh.errors import (
    RefreshTokenRejected,
    StoreConflict,
    StoreError,
    TokenRefreshError,
)
from airflow_provider_tokenrefresh.redaction import redact, remember_secrets
from airflow_provider_tokenrefresh.tokens import TokenRecord, fingerprint, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from airflow_provider_tokenrefresh.client import RefreshClient
    from airflow_provider_tokenrefresh.locks import RefreshLock
    from airflow_provider_tokenrefresh.stores import TokenStore, Version

log = logging.getLogger(__name__)

#: Default seconds of validity a caller wants left on a token it is handed.
DEFAULT_MIN_TTL = 300.0


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

    def status(self) -> dict[str, Any]:
        """Non-secret summary for XCom and logs."""
        return {**self.record.status(), "refreshed": self.refreshed, "rotated": self.rotated}


class TokenKeeper:
    """Keeps one connection's token valid through one store and one lock.

    :param key: store key of the record (per connection).
    :param client: the refresh client of the connection's dialect.
    :param store: where the record lives.
    :param lock: who may refresh.
    :param seed: the connection's initial tokens.
    :param refresh_token_ttl: refresh-token lifetime to assume when the vendor does not say.
    :param refresh_margin: refresh this long before the *refresh* token expires, so it never lapses.
    :param lock_timeout: seconds to wait for the lock before giving up (no second refresh).
    :param on_secret: called with every secret read or received (Airflow's ``mask_secret``).
    """

    # In-process cache shared by every keeper of a key in this process: a hit costs no store read.
    _cache: ClassVar[dict[str, TokenRecord]] = {}
    # Rotated records whose write failed: the only copy of a live refresh token; retried first.
    _unsaved: ClassVar[dict[str, TokenRecord]] = {}
    _guard = threading.Lock()

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
        on_secret: Callable[[str], object] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.key = key
        self.client = client
        self.store = store
        self.lock = lock
        self.seed = seed
        self.conn_id = conn_id
        self.refresh_token_ttl = refresh_token_ttl
        self.refresh_margin = refresh_margin
        self.lock_timeout = lock_timeout
        self.write_attempts = max(1, write_attempts)
        self.write_backoff = write_backoff
        self._on_secret = on_secret
        self._clock = clock
        #: Called with the name of each step of a refresh ("intent_written", "before_request",
        #: "after_answer", "after_write"): tracing, and the chaos tests' crash points.
        self.checkpoint: Callable[[str], None] | None = None
        self._register(seed.refresh_token, seed.access_token)

    # -- helpers -----------------------------------------------------------------------------------

    def _register(self, *secrets: str | None) -> None:
        remember_secrets(*secrets)
        if self._on_secret is not None:
            for secret in secrets:
                if secret:
                    self._on_secret(secret)

    def _named(self, exc: TokenRefreshError) -> TokenRefreshError:
        return exc.with_conn_id(self.conn_id) if self.conn_id else exc

    def _reconcile(self, record: TokenRecord | None) -> TokenRecord:
        """The record to work from: the stored one, unless the connection was (re-)seeded since."""
        if record is not None and record.seed_fingerprint == self.seed.fingerprint:
            self._register(*record.secrets())
            return record
        if record is not None:
            log.warning(
                "Connection %s has a new refresh token (fingerprint %s, stored record was seeded from %s): "
                "starting over from the connection's token",
                self.conn_id or self.key,
                self.seed.fingerprint,
                record.seed_fingerprint,
            )
        seeded = TokenRecord.seeded(self.seed.refresh_token, self.seed.access_token)
        if record is not None:
            seeded = seeded.model_copy(update={"generation": record.generation + 1})
        return seeded

    def _needs_refresh(self, record: TokenRecord, min_ttl: float, now: datetime) -> bool:
        if record.access_ttl(now) < min_ttl:
            return True
        # Keep a short-lived refresh token (bearer_json: one hour) from lapsing while unused.
        return record.refresh_ttl(now) < self.refresh_margin

    def _read(self) -> tuple[TokenRecord | None, Version]:
        try:
            return self.store.read(self.key)
        except TokenRefreshError as exc:
            raise self._named(exc) from None
        except Exception as exc:  # noqa: BLE001 - any backend failure becomes a StoreError
            raise self._named(
                StoreError(
                    f"reading the {self.store.name} store failed: {type(exc).__name__}: {redact(str(exc))}"
                )
            ) from None

    def _step(self, name: str) -> None:
        if self.checkpoint is not None:
            self.checkpoint(name)

    def _cache_put(self, record: TokenRecord) -> None:
        with self._guard:
            self._cache[self.key] = record

    @classmethod
    def clear_cache(cls) -> None:
        """Forget every cached record in this process (tests, long-lived CLI sessions)."""
        with cls._guard:
            cls._cache.clear()

    # -- public API -----------------------------------------------------------------------------------

    def current(self) -> TokenRecord:
        """The record as stored (reconciled with the seed), without refreshing."""
        record, _ = self._read()
        return self._reconcile(record)

    def get_valid_token(self, min_ttl: float = DEFAULT_MIN_TTL) -> TokenRecord:
        """Return a record whose access token is valid for at least ``min_ttl`` seconds.

        :raises TokenRefreshError: a subclass naming the connection; never with a secret in it.
        """
        cached = self._cache.get(self.key)
        now = self._clock()
        if (
            cached is not None
            and cached.seed_fingerprint == self.seed.fingerprint
            and cached.state == "valid"
            and not self._needs_refresh(cached, min_ttl, now)
        ):
            return cached
        return self.refresh(min_ttl=min_ttl).record

    def refresh(
        self,
        *,
        force: bool = False,
        min_ttl: float = DEFAULT_MIN_TTL,
        retry_rejected: bool = False,
        unless_newer_than: int | None = None,
    ) -> RefreshOutcome:
        """Refresh if the token has less than ``min_ttl`` left (or always, with ``force``).

        :param force: refresh even if the token is still valid — unless someone else refreshed
            while this call waited for the lock, which satisfies the request.
        :param retry_rejected: call the vendor even though the record says re-authorization is
            needed (a person asked for it: ``refresh --force``).
        :param unless_newer_than: with ``force``, a stored generation above this one satisfies the
            request (a 401 on generation N is answered by anyone's generation N+1).
        """
        record, _ = self._read()
        record = self._reconcile(record)
        if (
            unless_newer_than is not None
            and record.generation > unless_newer_than
            and record.state == "valid"
        ):
            force = False
        now = self._clock()
        if not force and record.state == "valid" and not self._needs_refresh(record, min_ttl, now):
            self._cache_put(record)
            return RefreshOutcome(record, refreshed=False)
        start_generation = record.generation
        with self.lock.hold(self.key, self.lock_timeout) as lease:
            self._flush_unsaved()
            stored, version = self._read()
            record = self._reconcile(stored)
            now = self._clock()
            someone_else = record.generation > start_generation or (
                unless_newer_than is not None and record.generation > unless_newer_than
            )
            if (
                record.state == "valid"
                and not self._needs_refresh(record, min_ttl, now)
                and (not force or someone_else)
            ):
                self._cache_put(record)
                return RefreshOutcome(record, refreshed=False)
            if record.state == "reauth_required" and not retry_rejected:
                raise self._named(
                    RefreshTokenRejected(
                        f"re-authorization needed, vendor not called: {record.reason or 'refresh token rejected'}. "
                        "Put a new refresh_token on the connection (or run "
                        "'airflow-tokenrefresh refresh CONN_ID --force' to try the stored one again)."
                    )
                )
            return self._refresh_locked(record, version, fence=lease.fencing)

    # -- the refresh itself, under the lock --------------------------------------------------------------

    def _refresh_locked(
        self, record: TokenRecord, version: Version, *, fence: int | None = None
    ) -> RefreshOutcome:
        assert record.refresh_token is not None
        interrupted = record.refresh_started_at is not None
        if interrupted:
            log.warning(
                "A refresh of %s started at %s by %s never finished (the process died or lost its answer); "
                "trying the stored refresh token",
                self.conn_id or self.key,
                record.refresh_started_at,
                record.refresh_started_by,
            )
        # INTENT: recorded before the vendor call, so a crash after it is explained afterwards.
        intent = record.model_copy(
            update={
                "refresh_started_at": record.refresh_started_at or self._clock(),
                "refresh_started_by": record.refresh_started_by or f"{socket.gethostname()}:{os.getpid()}",
                "fence": fence if fence is not None else record.fence,
            }
        )
        version = self._persist(intent, version, what="refresh intent")
        record = intent
        self._step("intent_written")
        old_refresh = record.refresh_token.get_secret_value() if record.refresh_token else ""
        access = record.access_token.get_secret_value() if record.access_token else None
        try:
            self._step("before_request")
            answer = self.client.refresh(old_refresh, access)
        except RefreshTokenRejected as exc:
            return self._on_rejected(record, version, self._named(exc), interrupted=interrupted)
        except TokenRefreshError as exc:
            named = self._named(exc)
            # Only an unknown outcome keeps the intent: the vendor may have rotated the token.
            self._note_error(
                record, version, named, keep_intent=named.kind in ("outcome_unknown", "malformed_response")
            )
            raise named from None
        self._step("after_answer")
        new = record.advanced(answer, refresh_token_ttl=self.refresh_token_ttl)
        self._register(*new.secrets())
        self._persist(new, version)
        self._step("after_write")
        self._cache_put(new)
        rotated = new.refresh_token is not None and new.refresh_token.get_secret_value() != old_refresh
        log.info(
            "Token refreshed for %s: generation %d, rotated=%s, expires_at=%s",
            self.conn_id or self.key,
            new.generation,
            rotated,
            new.expires_at.isoformat(timespec="seconds") if new.expires_at else None,
        )
        return RefreshOutcome(new, refreshed=True, rotated=rotated)

    def _persist(self, new: TokenRecord, version: Version, *, what: str = "rotated record") -> Version:
        """Write a record; a rotated one that cannot be written is kept in memory and fails loudly."""
        last: Exception | None = None
        for attempt in range(1, self.write_attempts + 1):
            try:
                written = self.store.write(self.key, new, version)
            except StoreConflict as exc:
                last = exc
                break  # someone else wrote: never overwrite; keep ours and fail loudly
            except Exception as exc:  # noqa: BLE001 - retried, then reported as a StoreError
                last = exc
                if attempt < self.write_attempts:
                    time.sleep(random.uniform(0.5, 1.0) * self.write_backoff * 2 ** (attempt - 1))  # noqa: S311
                continue
            if what == "rotated record":
                with self._guard:
                    self._unsaved.pop(self.key, None)
            return written
        detail = f"{type(last).__name__}: {redact(str(last))}" if last else "unknown"
        if what != "rotated record":
            # Nothing was sent to the vendor yet: the stored token is untouched.
            raise self._named(
                StoreError(
                    f"could not write the {what} to the {self.store.name} store ({detail}); the vendor "
                    "was not called"
                )
            ) from None
        with self._guard:
            self._unsaved[self.key] = new
        raise self._named(
            StoreError(
                f"the vendor rotated the refresh token (generation {new.generation}) but writing it to the "
                f"{self.store.name} store failed ({detail}). The new token is held in this process's memory and "
                "the write is retried on the next call; no access token is handed out until it is stored."
            )
        ) from None

    def _flush_unsaved(self) -> None:
        """Retry the write of a rotated record a previous call in this process could not store."""
        pending = self._unsaved.get(self.key)
        if pending is None:
            return
        stored, version = self._read()
        if stored is not None and stored.generation >= pending.generation:
            with self._guard:
                self._unsaved.pop(self.key, None)
            return
        self._persist(pending, version)
        self._cache_put(pending)

    def _on_rejected(
        self, record: TokenRecord, version: Version, exc: TokenRefreshError, *, interrupted: bool = False
    ) -> RefreshOutcome:
        """Re-read before declaring re-authorization: a lost race is not an outage."""
        stored, new_version = self._read()
        latest = self._reconcile(stored)
        if latest.generation > record.generation and latest.state == "valid":
            log.info(
                "Refresh token of %s was rotated by another process; using generation %d",
                self.conn_id or self.key,
                latest.generation,
            )
            self._cache_put(latest)
            return RefreshOutcome(latest, refreshed=False)
        reason = f"{exc.message} (vendor answered at {self._clock().isoformat(timespec='seconds')})"
        if interrupted:
            reason += (
                f". An earlier refresh started at {record.refresh_started_at} by {record.refresh_started_by} "
                "never stored its answer (process killed or answer lost), so the vendor had most likely "
                "rotated this refresh token already"
            )
        marked = record.with_error(reason, reauth=True, now=self._clock()).model_copy(
            update={"refresh_started_at": None, "refresh_started_by": None}
        )
        try:
            self.store.write(self.key, marked, new_version if stored is not None else version)
        except Exception as write_exc:  # noqa: BLE001 - the rejection is the error to report
            log.warning(
                "Could not record re-authorization state for %s: %s",
                self.conn_id or self.key,
                type(write_exc).__name__,
            )
        with self._guard:
            self._cache.pop(self.key, None)
        if interrupted:
            raise RefreshTokenRejected(
                reason,
                dialect=exc.dialect,
                endpoint=exc.endpoint,
                conn_id=exc.conn_id,
                vendor_code=exc.vendor_code,
                status_code=exc.status_code,
            )
        raise exc

    def _note_error(
        self, record: TokenRecord, version: Version, exc: TokenRefreshError, *, keep_intent: bool = False
    ) -> None:
        """Best effort: remember the last error in the record for ``status`` (never loses tokens)."""
        try:
            stored, current = self._read()
            if current != version:
                return
            base = (
                stored if stored is not None and stored.seed_fingerprint == self.seed.fingerprint else record
            )
            noted = base.with_error(f"{exc.kind}: {exc.message}", now=self._clock())
            if not keep_intent:
                noted = noted.model_copy(update={"refresh_started_at": None, "refresh_started_by": None})
            self.store.write(self.key, noted, version)
        except Exception:  # noqa: BLE001 - bookkeeping must not mask the real error
            log.debug("could not record last error", exc_info=False)


def refresh_all(
    keepers: dict[str, TokenKeeper],
    *,
    force: bool = False,
    min_ttl: float | None = None,
    max_workers: int = 32,
) -> dict[str, RefreshOutcome | Exception]:
    """Refresh many connections concurrently (bounded), each through its own lock and store.

    Used by ``TokenRefreshOperator``. One connection's failure never stops the others: its entry
    holds the exception instead of an outcome.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(item: tuple[str, TokenKeeper]) -> tuple[str, RefreshOutcome | Exception]:
        name, keeper = item
        try:
            ttl = keeper.refresh_margin if min_ttl is None else min_ttl
            return name, keeper.refresh(force=force, min_ttl=ttl)
        except Exception as exc:  # noqa: BLE001 - reported per connection
            return name, exc

    if not keepers:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(keepers)))) as pool:
        return dict(pool.map(one, keepers.items()))
