"""Notifications with Airflow's notifiers: once per state change across the whole deployment.

The decision is pure (:func:`notices`, :func:`due`, :func:`claimed`, :func:`finished`): given a
token record, the notification *marker* of its connection and the time, what should be sent. The
I/O around it (:func:`dispatch`) keeps the marker in the connection's own store under its own key
(``<store key>__notified``) and claims with the store's compare-and-set, under the connection's
lock; a store without compare-and-set (Airflow Variables) also settles and reads back, as the
keeper's refresh claim does. Exactly one process claims "notified for this state change", so one
mail goes out when 8 tasks see the change at once. docs/notifications.md states the guarantee.

A notification carries no secret: the connection id, the event, the state, the (already
redacted) reason and expiry times. A notifier that fails is logged with the connection named; it
never fails the task nor stops other notifications, and its claim is released so the next check
retries it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_provider_tokenrefresh.stores import TokenStore, Version
    from airflow_provider_tokenrefresh.tokens import TokenRecord

log = logging.getLogger(__name__)

Event = Literal["reauth_required", "refresh_token_expiring"]
EVENTS: tuple[Event, ...] = ("reauth_required", "refresh_token_expiring")

#: A claim still "sending" after this long belongs to a process that died mid-send: retried.
SENDING_STALE_AFTER = 600.0
#: Claims are taken under the connection's lock, on this key suffix (never the refresh's key).
MARKER_SUFFIX = "__notified"


@dataclass(frozen=True)
class Notice:
    """One state change worth telling a person about. Never holds a secret.

    :param key: identifies the state change itself (not the check that saw it): the same key on
        every later check means "already told".
    """

    conn_id: str
    event: Event
    key: str
    state: str
    reason: str | None
    generation: int
    expires_at: str | None
    refresh_expires_at: str | None
    refresh_expires_in: float | None

    def fields(self) -> dict[str, Any]:
        """The notice as template context (``{{ tokenrefresh.conn_id }}`` and so on)."""
        return {
            "conn_id": self.conn_id,
            "event": self.event,
            "state": self.state,
            "reason": self.reason,
            "generation": self.generation,
            "expires_at": self.expires_at,
            "refresh_expires_at": self.refresh_expires_at,
            "refresh_expires_in": self.refresh_expires_in,
            "summary": summary(self),
        }


def summary(notice: Notice) -> str:
    """One line naming the connection, the event and the state."""
    if notice.event == "reauth_required":
        return (
            f"Token connection {notice.conn_id} is {notice.state}: re-authorize it and put the new "
            f"refresh token on the connection ({notice.reason or 'no reason recorded'})"
        )
    return (
        f"Token connection {notice.conn_id} ({notice.state}): its refresh token expires at "
        f"{notice.refresh_expires_at} (in {notice.refresh_expires_in:.0f} s); re-authorize before then "
        "unless a refresh renews it"
    )


class MarkerEntry(BaseModel):
    """What was done about one (event, notifier) slot of a connection."""

    model_config = ConfigDict(frozen=True)

    key: str
    status: Literal["sending", "sent", "failed"]
    claim_id: str
    at: datetime
    attempts: int = 1
    last_error: str | None = None


class Marker(BaseModel):
    """The notification marker of one connection: slot (``event:notifier id``) -> entry."""

    model_config = ConfigDict(frozen=True)

    entries: dict[str, MarkerEntry] = {}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def notices(
    record: TokenRecord | None,
    conn_id: str,
    *,
    now: datetime,
    reauth: bool = True,
    expiring_within: float | None = None,
) -> list[Notice]:
    """The state changes ``record`` shows now (pure).

    * ``reauth_required``: the record's state is ``reauth_required``; the change is identified by
      the generation and seed at which it happened (a recovery needs a refresh, which moves the
      generation; a re-seed moves the seed), so it is told once until then.
    * ``refresh_token_expiring``: the refresh token has a known expiry less than
      ``expiring_within`` seconds away (and the record is not already ``reauth_required``, which
      is told instead); identified by that expiry, so a renewed refresh token is a new change.
    """
    if record is None:
        return []
    found: list[Notice] = []
    base = {
        "conn_id": conn_id,
        "state": record.state,
        "reason": record.reason,
        "generation": record.generation,
        "expires_at": _iso(record.expires_at),
        "refresh_expires_at": _iso(record.refresh_expires_at),
    }
    refresh_in = record.refresh_ttl(now)
    finite = refresh_in not in (float("inf"), float("-inf"))
    if reauth and record.state == "reauth_required":
        found.append(
            Notice(
                event="reauth_required",
                key=f"reauth:{record.generation}:{record.seed_fingerprint or '-'}",
                refresh_expires_in=round(refresh_in, 1) if finite else None,
                **base,  # type: ignore[arg-type]
            )
        )
    elif (
        expiring_within is not None
        and record.state != "reauth_required"
        and record.refresh_expires_at is not None
        and finite
        and refresh_in <= expiring_within
    ):
        found.append(
            Notice(
                event="refresh_token_expiring",
                key=f"expiring:{record.refresh_expires_at.isoformat()}",
                refresh_expires_in=round(refresh_in, 1),
                **base,  # type: ignore[arg-type]
            )
        )
    return found


def slot(event: str, notifier_id: str) -> str:
    """The marker slot of one notifier for one event."""
    return f"{event}:{notifier_id}"


def due(
    found: Sequence[Notice],
    marker: Marker,
    notifier_ids: Mapping[str, Sequence[str]],
    *,
    now: datetime,
    stale_after: float = SENDING_STALE_AFTER,
) -> list[tuple[str, Notice]]:
    """The (slot, notice) pairs still to send (pure).

    A slot is due when its entry is about another state change (or missing), when its last send
    failed (retried), or when a claim has been "sending" for longer than ``stale_after`` (its
    process died mid-send). "sent" or a young "sending" claim of the same change: nothing to do.
    """
    return [
        (slot(notice.event, nid), notice)
        for notice in found
        for nid in notifier_ids.get(notice.event, ())
        if slot_due(marker.entries.get(slot(notice.event, nid)), notice, now=now, stale_after=stale_after)
    ]


def slot_due(
    entry: MarkerEntry | None, notice: Notice, *, now: datetime, stale_after: float = SENDING_STALE_AFTER
) -> bool:
    """Whether one slot whose marker entry is ``entry`` still has to send ``notice`` (pure)."""
    if entry is None or entry.key != notice.key or entry.status == "failed":
        return True
    return entry.status == "sending" and (now - entry.at).total_seconds() > stale_after


def claimed(marker: Marker, todo: Sequence[tuple[str, Notice]], claim_id: str, *, now: datetime) -> Marker:
    """``marker`` with every slot of ``todo`` claimed by ``claim_id`` ("sending") (pure)."""
    entries = dict(marker.entries)
    for name, notice in todo:
        previous = entries.get(name)
        attempts = previous.attempts + 1 if previous is not None and previous.key == notice.key else 1
        entries[name] = MarkerEntry(
            key=notice.key, status="sending", claim_id=claim_id, at=now, attempts=attempts
        )
    return Marker(entries=entries)


def owned(marker: Marker, todo: Sequence[tuple[str, Notice]], claim_id: str) -> list[tuple[str, Notice]]:
    """The pairs of ``todo`` whose slot ``marker`` (as read back) shows claimed by ``claim_id`` (pure)."""
    return [
        (name, notice)
        for name, notice in todo
        if (entry := marker.entries.get(name)) is not None
        and entry.claim_id == claim_id
        and entry.key == notice.key
        and entry.status == "sending"
    ]


def finished(marker: Marker, results: Mapping[str, str | None], claim_id: str, *, now: datetime) -> Marker:
    """``marker`` with this claim's slots marked "sent" (result ``None``) or "failed" (the error) (pure).

    A slot that another claim has taken meanwhile is left alone.
    """
    entries = dict(marker.entries)
    for name, error in results.items():
        entry = entries.get(name)
        if entry is None or entry.claim_id != claim_id:
            continue
        entries[name] = entry.model_copy(
            update={"status": "sent" if error is None else "failed", "at": now, "last_error": error}
        )
    return Marker(entries=entries)


def notifier_id(notifier: Any) -> str:
    """A stable id of a notifier: its class and its template fields before rendering (no secrets
    are expected there; only a hash is stored)."""
    cls = type(notifier)
    parts = [f"{cls.__module__}.{cls.__qualname__}"]
    for name in sorted(getattr(notifier, "template_fields", ()) or ()):
        parts.append(f"{name}={getattr(notifier, name, None)!r}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def as_list(notifiers: Any) -> list[Any]:
    """``None``, one notifier or a list of them, as a list."""
    if notifiers is None:
        return []
    if isinstance(notifiers, list | tuple):
        return list(notifiers)
    return [notifiers]


# -- I/O -------------------------------------------------------------------------------------------------


def _envelope(marker: Marker) -> TokenRecord:
    """The marker as a store record (no tokens; the marker JSON in ``reason``)."""
    from airflow_provider_tokenrefresh.tokens import TokenRecord

    return TokenRecord(reason=marker.model_dump_json())


def _unwrap(record: TokenRecord | None) -> Marker:
    if record is None or not record.reason:
        return Marker()
    try:
        return Marker.model_validate_json(record.reason)
    except ValueError:
        return Marker()  # unreadable: treated as "nothing sent" (at worst one more mail)


def _read(store: TokenStore, key: str) -> tuple[Marker, Version]:
    record, version = store.read(key)
    return _unwrap(record), version


@dataclass
class MarkerStore:
    """The marker of one connection, in the connection's store, claimed under its lock.

    :param settle: seconds to wait before reading a claim back in a store without compare-and-set.
    """

    store: TokenStore
    lock: Any
    key: str
    settle: float = 6.0
    lock_timeout: float = 60.0

    def claim(
        self, todo: Sequence[tuple[str, Notice]], *, now: datetime
    ) -> tuple[str, list[tuple[str, Notice]]]:
        """Claim what is still due of ``todo``; return the claim id and the pairs this process owns."""
        import time

        from airflow_provider_tokenrefresh.errors import StoreConflict

        claim_id = secrets.token_hex(8)
        with self.lock.hold(self.key, self.lock_timeout):
            marker, version = _read(self.store, self.key)
            # Decide again under the lock: another task may have claimed since the first look.
            still = [(n, x) for n, x in todo if slot_due(marker.entries.get(n), x, now=now)]
            if not still:
                return claim_id, []
            try:
                self.store.write(self.key, _envelope(claimed(marker, still, claim_id, now=now)), version)
            except StoreConflict:
                return claim_id, []  # another claim landed first: theirs to send
        if getattr(self.store, "atomic", False):
            return claim_id, still
        # No compare-and-set: a claimer under another lock domain may have written meanwhile.
        time.sleep(self.settle)
        marker, _ = _read(self.store, self.key)
        return claim_id, owned(marker, still, claim_id)

    def finish(self, results: Mapping[str, str | None], claim_id: str, *, now: datetime) -> None:
        """Record what was sent and what failed (a failed slot is retried by the next check)."""
        from airflow_provider_tokenrefresh.errors import StoreConflict

        for _ in range(5):
            with self.lock.hold(self.key, self.lock_timeout):
                marker, version = _read(self.store, self.key)
                try:
                    self.store.write(
                        self.key, _envelope(finished(marker, results, claim_id, now=now)), version
                    )
                    return
                except StoreConflict:
                    continue
        log.warning("Could not record the notification results of %s; a later check may resend", self.key)


def dispatch(
    *,
    conn_id: str,
    record: TokenRecord | None,
    marker_store: MarkerStore,
    notifiers: Mapping[str, Sequence[Any]],
    expiring_within: float | None,
    context: Mapping[str, Any] | None,
    now: datetime | None = None,
) -> dict[str, int]:
    """Send what is due for ``conn_id``; never raises. Returns ``{"sent": n, "failed": n}``."""
    from airflow_provider_tokenrefresh.tokens import utcnow

    counts = {"sent": 0, "failed": 0}
    try:
        now = now or utcnow()
        found = notices(
            record,
            conn_id,
            now=now,
            reauth=bool(notifiers.get("reauth_required")),
            expiring_within=expiring_within if notifiers.get("refresh_token_expiring") else None,
        )
        by_id = {event: {notifier_id(n): n for n in notifiers.get(event, ())} for event in EVENTS}
        ids: dict[str, list[str]] = {event: list(by_id[event]) for event in EVENTS}
        with_marker, _ = _read(marker_store.store, marker_store.key) if found else (Marker(), None)
        todo = due(found, with_marker, ids, now=now)
        if not todo:
            return counts
        claim_id, mine = marker_store.claim(todo, now=now)
    except Exception as exc:  # noqa: BLE001 - notifications never fail the task
        log.error("Notifications of connection %s: could not be checked or claimed: %s", conn_id, _safe(exc))
        return counts
    results: dict[str, str | None] = {}
    for name, notice in mine:
        notifier = by_id[notice.event][name.split(":", 1)[1]]
        try:
            _send(notifier, notice, context)
            results[name] = None
            counts["sent"] += 1
            log.info("Notified %s for connection %s (%s)", type(notifier).__name__, conn_id, notice.event)
        except Exception as exc:  # noqa: BLE001 - one failing notifier never stops the others
            results[name] = _safe(exc)
            counts["failed"] += 1
            log.error(
                "Notifier %s failed for connection %s (%s); it is retried on the next check: %s",
                type(notifier).__name__,
                conn_id,
                notice.event,
                _safe(exc),
            )
    if mine:
        try:
            marker_store.finish(results, claim_id, now=utcnow())
        except Exception as exc:  # noqa: BLE001
            log.error("Notifications of connection %s: results not recorded: %s", conn_id, _safe(exc))
    return counts


def _safe(exc: BaseException) -> str:
    from airflow_provider_tokenrefresh.redaction import redact

    return redact(f"{type(exc).__name__}: {exc}")


def _send(notifier: Any, notice: Notice, context: Mapping[str, Any] | None) -> None:
    """Call a copy of ``notifier`` (rendering is in place and irreversible) with the notice in context."""
    import copy

    fresh = copy.deepcopy(notifier)
    merged: dict[str, Any] = dict(context or {})
    merged["tokenrefresh"] = notice.fields()
    fresh(merged)


def marker_store_for(hook: Any) -> MarkerStore:
    """The marker store of a :class:`~airflow_provider_tokenrefresh.hooks.tokenrefresh.TokenRefreshHook`."""
    keeper = hook.keeper
    return MarkerStore(
        store=keeper.store,
        lock=keeper.lock,
        key=keeper.key + MARKER_SUFFIX,
        settle=float(getattr(keeper, "settle", 6.0)),
        lock_timeout=float(hook.settings.extra.lock_timeout or 60.0),
    )


def expiring_horizon(expiring_within: float | timedelta | None) -> float | None:
    """Seconds from a number or a ``timedelta``."""
    if isinstance(expiring_within, timedelta):
        return expiring_within.total_seconds()
    return None if expiring_within is None else float(expiring_within)


def notify_connection(
    hook: Any,
    context: Mapping[str, Any] | None,
    *,
    on_reauth_required: Any = None,
    on_refresh_token_expiring: Any = None,
    expiring_within: float | timedelta | None = None,
) -> dict[str, int]:
    """Read the connection's record and :func:`dispatch` what is due; never raises.

    ``hook`` is a :class:`~airflow_provider_tokenrefresh.hooks.tokenrefresh.TokenRefreshHook`;
    nothing is read when no notifier is configured.
    """
    notifiers = {
        "reauth_required": as_list(on_reauth_required),
        "refresh_token_expiring": as_list(on_refresh_token_expiring),
    }
    if not any(notifiers.values()):
        return {"sent": 0, "failed": 0}
    conn_id = str(getattr(hook, "tokenrefresh_conn_id", "?"))
    try:
        settings = hook.settings
        conn_id = settings.conn_id
        marker_store = marker_store_for(hook)
        record, _ = marker_store.store.read(hook.keeper.key)
    except Exception as exc:  # noqa: BLE001 - notifications never fail the task
        log.error("Notifications of connection %s: its record could not be read: %s", conn_id, _safe(exc))
        return {"sent": 0, "failed": 0}
    return dispatch(
        conn_id=conn_id,
        record=record,
        marker_store=marker_store,
        notifiers=notifiers,
        expiring_within=expiring_horizon(expiring_within),
        context=context,
    )
