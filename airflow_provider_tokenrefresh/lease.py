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

from airflow_provider_tokenrefresh.tokens import (
    RECORD_SCHEMA_VERSION,
    RefreshExpiryBasis,
    TokenRecord,
    deadline_message,
    human_duration,
)

if TYPE_CHECKING:
    from datetime import datetime

Action = Literal["use", "refresh", "replay", "wait", "refuse"]
RefuseKind = Literal["reauth_required", "newer_schema", "lock_mismatch", "stale_seed", "foreign_record"]

#: How many superseded seed fingerprints a record remembers.
MAX_SUPERSEDED_SEEDS = 64
#: The vendor round trip assumed before one was measured, and the least one assumed (seconds).
DEFAULT_ROUND_TRIP = 1.0
MIN_ROUND_TRIP = 0.25


def grace_retry_allowed(elapsed: float, round_trip: float, window: float) -> bool:
    """Whether a refresh token whose answer was lost may be sent again (extra ``reuse_grace``).

    Only while the time since the first send plus one round trip (at least
    :data:`MIN_ROUND_TRIP`) stays below the vendor's reuse window: the vendor started that window
    when it rotated the token, which was after the first send, so the retry lands inside it. A
    window of 0 (strict reuse detection, the default) never allows it.
    """
    return window > 0 and elapsed >= 0 and elapsed + max(round_trip, MIN_ROUND_TRIP) < window


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
    :param conn_id: the connection this process keeps (``None`` outside Airflow: not checked).
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
    conn_id: str | None = None


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
    (both margins capped at half the token's lifetime: :func:`effective_margin`).

    The refresh-token part is :func:`refresh_token_due`: it keeps an idle connection's refresh
    token alive (iSales: one hour) even when nobody uses the access token.
    """
    if record.access_ttl(view.now) < effective_margin(view.min_ttl, record.access_lifetime()):
        return True
    return refresh_token_due(record, view.now, view.refresh_margin)


def refresh_token_due(record: TokenRecord, now: datetime, margin: float) -> bool:
    """Whether the refresh token must be renewed now: its remaining life is below
    ``effective_margin(margin, its lifetime)`` = ``min(margin, lifetime / 2)``.

    Never for a record with a :attr:`~TokenRecord.reauth_deadline`: refreshing did not extend that
    chain (a fixed maximum lifetime), so refreshing again only costs a vendor call per use in its
    final minutes; the deadline is reported instead (:func:`lapse_warning`).
    """
    if record.reauth_deadline is not None:
        return False
    return record.refresh_ttl(now) < effective_margin(margin, record.refresh_lifetime())


def keeper_refresh_margin(refresh_margin: float, min_ttl: float) -> float:
    """The refresh-token margin of a keeper run (``refresh_all``): the connection's
    ``refresh_margin`` or the run's ``min_ttl``, whichever is longer.

    A keeper run asks for tokens that last ``min_ttl`` seconds (the schedule helper makes that
    twice the keeper's interval: :func:`airflow_provider_tokenrefresh.schedule.keeper_min_ttl`), so
    a refresh token that would lapse before the run after next is renewed now. Capped at half the
    token's lifetime by :func:`refresh_token_due`.
    """
    return max(refresh_margin, min_ttl)


#: Dialects whose vendor document gives the refresh token a *maximum* lifetime counted from the
#: authorization, which refreshing does not extend. oauth2-client-secret-basic.txt: "The refresh
#: token has a maximum validity of 30 days".
FIXED_MAXIMUM_DIALECTS = frozenset({"oauth2_basic"})


def expiry_basis_for(dialect: str, *, states_refresh_expiry: bool) -> RefreshExpiryBasis:
    """How a dialect's refresh-token expiry is known (see :data:`RefreshExpiryBasis`).

    ``stated`` when the dialect reads the expiry from the answer; ``fixed_maximum`` for the
    dialects of :data:`FIXED_MAXIMUM_DIALECTS`; otherwise ``per_token`` (a documented lifetime
    such as babelbird's "valid for 30 days" or the IoT platform's "one month", or the
    connection's ``refresh_lifetime``, counted from each new refresh token).
    """
    if states_refresh_expiry:
        return "stated"
    if dialect in FIXED_MAXIMUM_DIALECTS:
        return "fixed_maximum"
    return "per_token"


def effective_horizon(horizon: float, lifetime: float | None) -> float:
    """The warning horizon for one refresh token: ``min(horizon, lifetime / 4)``.

    A one-hour refresh token always lapses "within 7 days"; it is worth a warning only once less
    than a quarter of its life is left. A keeper run every ``lifetime / 4`` with a refresh-token
    margin of ``lifetime / 2`` (:mod:`airflow_provider_tokenrefresh.schedule`) never lets it get
    there, so the warning means a keeper run was missed or did not renew the token.
    """
    if lifetime is None or lifetime <= 0:
        return horizon
    return min(horizon, lifetime / 4)


def lapse_warning(record: TokenRecord, now: datetime, horizon: float, name: str) -> str | None:
    """The WARNING to log about ``name``'s refresh token, or ``None`` (pure).

    * a :attr:`~TokenRecord.reauth_deadline` within ``horizon``: re-authorize by then;
    * else a refresh token with less than :func:`effective_horizon` left: when it lapses, and
      what to do;
    * nothing for a record already marked ``reauth_required`` (that error is raised instead), a
      refresh token without a known expiry, or one with more time left.
    """
    if record.state == "reauth_required" or record.refresh_token is None:
        return None
    if record.reauth_deadline is not None:
        left = (record.reauth_deadline - now).total_seconds()
        return (
            f"connection {name}: {deadline_message(record.reauth_deadline, left)}" if left < horizon else None
        )
    if record.refresh_expires_at is None:
        return None
    left = record.refresh_ttl(now)
    when = record.refresh_expires_at.isoformat(timespec="seconds")
    if left <= 0:
        return (
            f"connection {name}: the refresh token lapsed {human_duration(left)} ago ({when}); re-authorize at "
            "the vendor and save the new refresh token in the connection's extra 'refresh_token'"
        )
    if left >= effective_horizon(horizon, record.refresh_lifetime()):
        return None
    return (
        f"connection {name}: the refresh token lapses in {human_duration(left)} (at {when}); refresh it before "
        f"then (the keeper DAG, or `airflow-tokenrefresh refresh {name} --force`), or re-authorize at the "
        "vendor if refreshing does not renew it"
    )


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

    if record.conn_id and view.conn_id and record.conn_id != view.conn_id:
        return Decision(
            "refuse",
            f"the store key holds the token record of connection {record.conn_id!r}: two connections "
            "must not share one record (each would re-seed over the other and lose its chain). Set "
            "extra 'store_path' of this connection to a key of its own",
            refuse="foreign_record",
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
