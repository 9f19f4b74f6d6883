"""The refresh decision, as a pure function: (stored record, now, who I am) → what to do.

The stored record is the lease. A refresh may only be sent by the process whose refresh intent
was written last and is still *young* — younger than the stale bound ``B``, the worst-case time of
one refresh call plus the lock's lease. Anyone who finds a young intent of another process waits
for it to end and never presents the same refresh token; only an intent older than ``B`` counts as
a crashed refresh and may be replayed. The lock only spares waiters a spin.

:func:`decide` does no I/O and reads no clock: the keeper
(:mod:`airflow_provider_tokenrefresh.keeper`) reads the store and the clock, calls it, and
carries out the :class:`Decision`, in the order the module docstring of the keeper states
(intent durable before the vendor is called; the answer durable before anyone sees a token).

This module imports nothing from Airflow and nothing that does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from airflow_provider_tokenrefresh.tokens import RECORD_SCHEMA_VERSION, TokenRecord

if TYPE_CHECKING:
    from datetime import datetime

Action = Literal["use", "refresh", "replay", "wait", "refuse"]
RefuseKind = Literal["reauth_required", "newer_schema", "lock_mismatch", "stale_seed"]

#: How many superseded seed fingerprints a record remembers.
MAX_SUPERSEDED_SEEDS = 64


@dataclass(frozen=True)
class View:
    """Everything the decision depends on, read by the keeper just before deciding.

    :param record: the stored record, or ``None`` when the store holds none.
    :param seed_fingerprint: fingerprint of the refresh token on the connection as *this* process
        sees it (an environment-variable connection or a cached secret may be older than others').
    :param now: the wall clock (records carry wall-clock times; clock skew between hosts must stay
        well below ``stale_after``).
    :param min_ttl: seconds of validity the caller wants left on the access token.
    :param refresh_margin: refresh this long before the *refresh* token expires.
    :param stale_after: the bound ``B``: an intent older than this counts as a crashed refresh.
    :param force: refresh even when the token is valid (unless ``satisfied_above`` is passed).
    :param satisfied_above: a valid stored generation above this satisfies the request (someone
        else refreshed since the caller looked; a 401 on generation N is answered by N+1).
    :param retry_rejected: call the vendor although the record says re-authorization is needed.
    :param lock: identity of the lock this process would use (``file``, ``redis://h:p/db``...).
    :param lock_explicit: whether the connection names that lock (else ``lock: auto`` chose it).
    """

    record: TokenRecord | None
    seed_fingerprint: str
    now: datetime
    min_ttl: float
    refresh_margin: float
    stale_after: float
    force: bool = False
    satisfied_above: int | None = None
    retry_rejected: bool = False
    lock: str = "file"
    lock_explicit: bool = True


@dataclass(frozen=True)
class Decision:
    """What the keeper must do.

    * ``use``: hand out ``record`` (it is valid for the caller);
    * ``refresh``: write an intent on ``base`` and present ``base.refresh_token`` to the vendor;
      ``base`` may be a freshly seeded record (first use, or a connection re-seeded with a newer
      token), which must then be written over the stored one;
    * ``replay``: the same, from a record whose intent is older than the bound (a crashed
      refresh): the vendor may already have rotated the token, so a rejection is explained;
    * ``wait``: another process's young intent is in flight; read again later, send nothing;
    * ``refuse``: raise, naming the connection and ``reason``; never write.
    """

    action: Action
    reason: str = ""
    base: TokenRecord | None = field(default=None, repr=False)
    refuse: RefuseKind | None = None
    #: This process sees an older seed than the record's: it may use the record, never re-seed.
    stale_seed: bool = False
    #: The record was written by a newer release: it may be used, never written.
    read_only: bool = False


def intent_age(record: TokenRecord, now: datetime) -> float | None:
    """Seconds since the record's refresh intent was written, ``None`` without one.

    An intent dated in the future (clock skew between hosts) is treated as just written.
    """
    if record.refresh_started_at is None:
        return None
    return max(0.0, (now - record.refresh_started_at).total_seconds())


def effective_margin(margin: float, lifetime: float | None) -> float:
    """The rule that lets a token be used for its life, whatever its lifetime: a margin (``min_ttl``
    or ``refresh_margin``) is never more than half the token's lifetime.

    A 300-second iSales token with the default 300 s is refreshed once it has less than 150 s left,
    so repeated use from many processes makes one refresh per 150 s instead of one per use; a
    7200-second token keeps the full 300 s.
    """
    if lifetime is None or lifetime <= 0:
        return margin
    return min(margin, lifetime / 2)


def needs_refresh(record: TokenRecord, view: View) -> bool:
    """Whether the access token is too close to expiry, or the refresh token would lapse unused
    (both margins capped at half the token's lifetime: :func:`effective_margin`)."""
    if record.access_ttl(view.now) < effective_margin(view.min_ttl, record.access_lifetime()):
        return True
    return record.refresh_ttl(view.now) < effective_margin(view.refresh_margin, record.refresh_lifetime())


def lock_kind(identity: str) -> str:
    """``file``, ``redis`` or ``postgres`` from a lock identity."""
    kind = identity.split(":", 1)[0]
    return "redis" if kind == "rediss" else kind


def reseeded(record: TokenRecord | None, seed: TokenRecord) -> TokenRecord:
    """Generation 0 of a new seed, placed after ``record``: generations never go backwards and the
    record remembers every seed it superseded."""
    if record is None:
        return seed
    superseded = [fp for fp in (*record.superseded_seeds, record.seed_fingerprint) if fp]
    superseded = list(dict.fromkeys(fp for fp in superseded if fp != seed.seed_fingerprint))
    return seed.model_copy(
        update={
            "generation": record.generation + 1,
            "superseded_seeds": tuple(superseded[-MAX_SUPERSEDED_SEEDS:]),
            "lock_in_use": record.lock_in_use,
            "file_lock_hosts": record.file_lock_hosts,
        }
    )


def decide(view: View, seed: TokenRecord) -> Decision:
    """The one decision of the refresh protocol. ``seed`` is generation 0 built from the
    connection's tokens as this process sees them (used only when the decision is to start
    from it)."""
    record = view.record
    if record is None:
        return Decision(
            "refresh", "no stored record: starting from the connection's refresh token", base=seed
        )

    read_only = record.schema_version > RECORD_SCHEMA_VERSION
    age = intent_age(record, view.now)
    if age is not None and age < view.stale_after:
        if record.seed_fingerprint not in (view.seed_fingerprint, None) and (
            view.seed_fingerprint not in record.superseded_seeds
        ):
            return _wait(record, age, "the connection was re-seeded; waiting for it to end first")
        return _wait(record, age)

    if (
        record.lock_in_use
        and lock_kind(record.lock_in_use) != lock_kind(view.lock)
        and not view.lock_explicit
    ):
        return Decision(
            "refuse",
            f"the token record is coordinated with the {record.lock_in_use} lock, but this process would "
            f"use {view.lock} (lock: auto). Give every component the same [core] executor and "
            "[celery] broker_url, or set extra 'lock' on the connection",
            refuse="lock_mismatch",
        )

    stale_seed = False
    if record.seed_fingerprint != view.seed_fingerprint:
        if view.seed_fingerprint in record.superseded_seeds:
            stale_seed = True
        elif read_only:
            return _newer_schema(record)
        else:
            return Decision(
                "refresh",
                f"the connection carries a new refresh token (fingerprint {view.seed_fingerprint}; the "
                f"record was seeded from {record.seed_fingerprint}): starting over from it",
                base=reseeded(record, seed),
            )

    def refuse_write(decision: Decision) -> Decision:
        if read_only:
            return _newer_schema(record)
        return decision

    if record.state == "reauth_required" and not view.retry_rejected:
        return Decision(
            "refuse",
            f"re-authorization needed, vendor not called: {record.reason or 'refresh token rejected'}",
            refuse="stale_seed" if stale_seed else "reauth_required",
            stale_seed=stale_seed,
        )
    if age is not None:
        return refuse_write(
            Decision(
                "replay",
                f"a refresh started at {record.refresh_started_at} by {record.refresh_started_by} never "
                f"finished ({age:.0f}s ago, past the {view.stale_after:.0f}s bound): trying the stored token",
                base=record,
                stale_seed=stale_seed,
            )
        )
    if record.state == "reauth_required":
        return refuse_write(Decision("refresh", "retrying a rejected token on request", base=record))
    if record.state == "suspect":
        return refuse_write(
            Decision(
                "refresh",
                f"the record is suspect ({record.reason or 'the vendor may have revoked it'}): one refresh decides",
                base=record,
                stale_seed=stale_seed,
            )
        )
    satisfied = view.satisfied_above is not None and record.generation > view.satisfied_above
    if not needs_refresh(record, view) and (not view.force or satisfied):
        return Decision("use", base=record, stale_seed=stale_seed, read_only=read_only)
    return refuse_write(Decision("refresh", "token due", base=record, stale_seed=stale_seed))


def _wait(record: TokenRecord, age: float, why: str = "") -> Decision:
    reason = (
        f"a refresh is in flight on {record.refresh_started_by or 'another process'} since "
        f"{record.refresh_started_at} ({age:.1f}s)"
    )
    return Decision("wait", f"{reason}; {why}" if why else reason, base=record)


def _newer_schema(record: TokenRecord) -> Decision:
    return Decision(
        "refuse",
        f"the token record was written by a newer release of airflow-provider-tokenrefresh (record schema "
        f"{record.schema_version}, this one knows {RECORD_SCHEMA_VERSION}); this process never writes it. "
        "Upgrade this component",
        refuse="newer_schema",
        read_only=True,
    )
