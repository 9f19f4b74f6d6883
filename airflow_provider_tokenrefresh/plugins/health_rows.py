"""The token health page's decisions, free of Airflow: one connection's status becomes one row.

A row says how the connection is (``health``), lists every problem found with the fix in one line,
and carries only non-secret facts: its input is the non-secret status of
:meth:`TokenRecord.status() <airflow_provider_tokenrefresh.tokens.TokenRecord.status>` (plus the
dialect, store and lock), or the exception that stopped the status from being read. Every text
is passed through the redactor with the connection's own secrets before it reaches a row.

The plugin (:mod:`airflow_provider_tokenrefresh.plugins.health`) reads connections and stores;
this module decides; :mod:`airflow_provider_tokenrefresh.plugins.health_page` draws.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_tokenrefresh.lease import effective_horizon

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: How a connection is, worst last. ``ok``: nothing to do. ``refreshing``: a refresh is in flight.
Health = Literal[
    "ok",
    "refreshing",
    "degraded",
    "warning",
    "expiring",
    "stalled",
    "suspect",
    "reauth_required",
    "expired",
    "store_error",
    "misconfigured",
    "error",
]

SEVERITY: dict[str, int] = {
    "ok": 0,
    "refreshing": 1,
    "degraded": 2,
    "warning": 2,
    "expiring": 3,
    "stalled": 4,
    "suspect": 4,
    "reauth_required": 5,
    "expired": 5,
    "store_error": 6,
    "misconfigured": 6,
    "error": 6,
}

#: Default: warn when a refresh token lapses within 7 days.
DEFAULT_REFRESH_TOKEN_HORIZON = 7 * 86400.0
#: Default: a refresh in flight for longer than this is reported as stalled.
DEFAULT_STALLED_AFTER = 900.0

_FIELD = re.compile(r"\b(extra field|field) '([^']+)'|\bextra\.([A-Za-z_][A-Za-z0-9_]*)|\b(conn_type) '")


@dataclass(frozen=True)
class Problem:
    """One bad state of a connection and what fixes it.

    :param kind: a :data:`Health` value other than ``ok``/``refreshing``.
    :param summary: what is wrong, in a few words.
    :param fix: what the person on call does about it, in one line.
    """

    kind: str
    summary: str
    fix: str


@dataclass(frozen=True)
class HealthRow:
    """One ``tokenrefresh_*`` connection on the health page (never a secret).

    Times are ISO 8601 strings in UTC; ``*_in`` and ``*_for`` are seconds (negative when past).
    ``error_field`` names the connection field an error row is about, when the error says.
    """

    conn_id: str
    conn_type: str
    health: str
    dialect: str | None = None
    state: str | None = None
    generation: int | None = None
    access_expires_at: str | None = None
    access_expires_in: float | None = None
    refresh_expires_at: str | None = None
    refresh_expires_in: float | None = None
    last_refresh_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    reason: str | None = None
    in_flight_by: str | None = None
    in_flight_since: str | None = None
    in_flight_for: float | None = None
    store: str | None = None
    lock: str | None = None
    lock_in_use: str | None = None
    warnings: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    error_field: str | None = None

    @property
    def fix(self) -> str | None:
        """The fix of the worst problem (``None`` when there is nothing to do)."""
        return self.problems[0].fix if self.problems else None

    def to_json(self) -> dict[str, Any]:
        """The row as JSON-ready data (with ``fix``, the worst problem's fix)."""
        data = asdict(self)
        data["fix"] = self.fix
        return data


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_seconds(seconds: float | None) -> str:
    """``"2d 3h"``, ``"45m"``, ``"12s"``; ``"5m ago"`` when negative; ``"unknown"`` for ``None``."""
    if seconds is None:
        return "unknown"
    if seconds in (float("inf"), float("-inf")):
        return "never" if seconds > 0 else "unknown"
    past = seconds < 0
    left = int(abs(seconds))
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d {hours}h" if hours else f"{days}d"
    elif hours:
        text = f"{hours}h {minutes}m" if minutes else f"{hours}h"
    elif minutes:
        text = f"{minutes}m"
    else:
        text = f"{secs}s"
    return f"{text} ago" if past else text


def _scrubber(secrets: Iterable[str | None]) -> Any:
    from airflow_provider_tokenrefresh.redaction import Redactor, redact

    redactor = Redactor(s for s in secrets if s)

    def scrub(text: object) -> str | None:
        if text is None:
            return None
        return redactor.redact(redact(str(text)))

    return scrub


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def row_from_status(
    status: Mapping[str, Any],
    *,
    conn_type: str,
    now: datetime,
    secrets: Iterable[str | None] = (),
    refresh_token_horizon: float = DEFAULT_REFRESH_TOKEN_HORIZON,
    stalled_after: float = DEFAULT_STALLED_AFTER,
) -> HealthRow:
    """A row from a connection's non-secret status (``TokenRefreshHook.token_status()`` shape).

    :param secrets: the connection's secrets (client secret, tokens); any text holding one is redacted.
    :param refresh_token_horizon: a refresh token lapsing within this many seconds is ``expiring``.
    :param stalled_after: a refresh in flight for longer than this many seconds is ``stalled``.
    """
    scrub = _scrubber(secrets)
    conn_id = str(status["conn_id"])
    expires_at = _parse_time(status.get("expires_at"))
    refresh_expires_at = _parse_time(status.get("refresh_expires_at"))
    since = _parse_time(status.get("refresh_in_flight_since"))
    last_refresh = _parse_time(status.get("last_refresh_at"))
    last_error_at = _parse_time(status.get("last_error_at"))
    state = str(status.get("state") or "valid")
    access_in = (expires_at - now).total_seconds() if expires_at else None
    refresh_in = (refresh_expires_at - now).total_seconds() if refresh_expires_at else None
    in_flight_for = (now - since).total_seconds() if since else None
    by = scrub(status.get("refresh_in_flight_by")) or "an unknown host"
    warnings = [w for w in (scrub(w) for w in status.get("warnings") or ()) if w]
    reason = scrub(status.get("reason"))
    last_error = scrub(status.get("last_error"))

    problems: list[Problem] = []
    if state == "reauth_required":
        problems.append(
            Problem(
                "reauth_required",
                "the vendor rejected the refresh token" + (f": {reason}" if reason else ""),
                f"Re-authorize {conn_id} at the vendor and save the new refresh token in the connection's "
                "extra 'refresh_token' (the next use starts from it).",
            )
        )
    elif state == "suspect":
        problems.append(
            Problem(
                "suspect",
                "the vendor may have revoked the current token" + (f": {reason}" if reason else ""),
                f"Run `airflow-tokenrefresh refresh {conn_id}`: one more refresh shows which token the vendor "
                "still honours; if it is rejected, re-authorize.",
            )
        )
    if state != "reauth_required" and refresh_in is not None and status.get("has_refresh_token", True):
        lapse = refresh_expires_at.isoformat(timespec="seconds") if refresh_expires_at else "?"
        if refresh_in <= 0:
            problems.append(
                Problem(
                    "expired",
                    f"the refresh token lapsed {human_seconds(refresh_in)}",
                    f"Re-authorize {conn_id} at the vendor and save the new refresh token in extra 'refresh_token'.",
                )
            )
        elif refresh_in < refresh_token_horizon and status.get("reauth_deadline"):
            # The vendor caps the chain's life: refreshing does not move this date.
            problems.append(
                Problem(
                    "expiring",
                    f"re-authorization due in {human_seconds(refresh_in)} ({lapse}): the vendor caps the "
                    "refresh token's lifetime, and refreshes do not extend it",
                    f"Re-authorize {conn_id} at the vendor before {lapse} and save the new refresh token in "
                    "extra 'refresh_token'; refreshing does not help.",
                )
            )
        elif refresh_in < effective_horizon(refresh_token_horizon, _float(status.get("refresh_lifetime"))):
            # Judged as the keeper's warning is: a one-hour refresh token, kept alive by the keeper,
            # is flagged only once less than a quarter of its life is left.
            problems.append(
                Problem(
                    "expiring",
                    f"the refresh token lapses in {human_seconds(refresh_in)} ({lapse})",
                    f"Refresh before {lapse} (`airflow-tokenrefresh refresh {conn_id} --force` or the keeper DAG); "
                    "if the vendor caps its lifetime, re-authorize before then.",
                )
            )
    if in_flight_for is not None and in_flight_for > stalled_after:
        problems.append(
            Problem(
                "stalled",
                f"a refresh started on {by} {human_seconds(-in_flight_for)} has not finished",
                f"Check the process on {by}; once the intent is older than the stale bound the next refresh of "
                f"{conn_id} takes over (`airflow-tokenrefresh refresh {conn_id}`).",
            )
        )
    for warning in warnings:
        problems.append(Problem("warning", "configuration warning", warning))
    if (
        state == "valid"
        and last_error
        and last_error_at is not None
        and (last_refresh is None or last_error_at > last_refresh)
    ):
        problems.append(
            Problem(
                "degraded",
                "the last refresh attempt failed",
                f"Tasks retry on next use; if `airflow-tokenrefresh refresh {conn_id}` fails the same way, "
                "check the vendor's status and the connection's host, endpoint and TLS settings.",
            )
        )
    problems.sort(key=lambda p: -SEVERITY.get(p.kind, 0))
    if problems:
        health = problems[0].kind
    elif since is not None:
        health = "refreshing"
    else:
        health = "ok"
    generation = status.get("generation")
    return HealthRow(
        conn_id=conn_id,
        conn_type=conn_type,
        health=health,
        dialect=scrub(status.get("dialect")),
        state=state,
        generation=int(generation) if isinstance(generation, int) else None,
        access_expires_at=expires_at.isoformat(timespec="seconds") if expires_at else None,
        access_expires_in=None if access_in is None else round(access_in, 1),
        refresh_expires_at=refresh_expires_at.isoformat(timespec="seconds") if refresh_expires_at else None,
        refresh_expires_in=None if refresh_in is None else round(refresh_in, 1),
        last_refresh_at=last_refresh.isoformat(timespec="seconds") if last_refresh else None,
        last_error=last_error,
        last_error_at=last_error_at.isoformat(timespec="seconds") if last_error_at else None,
        reason=reason,
        in_flight_by=by if since else None,
        in_flight_since=since.isoformat(timespec="seconds") if since else None,
        in_flight_for=None if in_flight_for is None else round(in_flight_for, 1),
        store=scrub(status.get("store")),
        lock=scrub(status.get("lock")),
        lock_in_use=scrub(status.get("lock_in_use")),
        warnings=warnings,
        problems=problems,
    )


def error_field(message: str) -> str | None:
    """The connection field an error message names (``"extra 'refresh_token'"``, ``"host"``)."""
    match = _FIELD.search(message)
    if match is None:
        return None
    if match.group(1):
        kind, name = match.group(1), match.group(2)
        return f"extra '{name}'" if kind == "extra field" else name
    if match.group(3):
        return f"extra '{match.group(3)}'"
    return "conn_type"


def row_from_error(
    conn_id: str,
    exc: BaseException,
    *,
    conn_type: str,
    secrets: Iterable[str | None] = (),
    field_name: str | None = None,
    dialect: str | None = None,
    store: str | None = None,
    lock: str | None = None,
) -> HealthRow:
    """An error row: the status of ``conn_id`` could not be read because of ``exc``.

    :param field_name: the field being read when it failed (e.g. ``"password"`` when it could not
        be decrypted); otherwise taken from the message.
    """
    from airflow_provider_tokenrefresh.errors import ConfigurationError, StoreError, TokenRefreshError

    scrub = _scrubber(secrets)
    text = exc.message if isinstance(exc, TokenRefreshError) else f"{type(exc).__name__}: {exc}"
    message = scrub(text) or type(exc).__name__
    unreadable_record = any(
        phrase in message
        for phrase in (
            "cannot be read as a token record",
            "[core] fernet_key cannot decrypt it",  # Airflow's own encryption, another key
            "that this component's [core] fernet_key cannot open",  # sealed_variable's seal
        )
    )
    moved = "is a tombstone: this connection's token record moved" in message
    where = field_name or error_field(message)
    if field_name is not None:
        kind = "misconfigured"
        fix = (
            f"The api-server cannot read field '{field_name}' of {conn_id}: every component must share one "
            "[core] fernet_key; then save the connection again."
        )
    elif moved:
        kind, where = "store_error", where or "extra 'store'"
        fix = (
            f"Set extra 'store' of {conn_id} back to 'sealed_variable' (its record moved there) and run this "
            "release on every component; delete neither Variable."
        )
    elif unreadable_record:
        kind, where = "store_error", where or "token record"
        fix = (
            f"Make every component share one [core] fernet_key (or point extra 'store_path' of {conn_id} at "
            "another key and re-seed it); do not delete the record: it may hold the only live refresh token."
        )
    elif isinstance(exc, StoreError):
        kind, where = "store_error", where or "extra 'store'"
        fix = (
            f"Make the {store or 'token'} store reachable from the api-server and check extra 'store', "
            f"'store_conn_id' and 'store_path' of {conn_id}; tasks fail the same way until then."
        )
    elif isinstance(exc, ConfigurationError):
        kind = "misconfigured"
        fix = f"Edit connection {conn_id} in Admin > Connections and correct {where or 'its settings'} (see the error)."
    else:
        kind = "error"
        fix = (
            f"Run `airflow-tokenrefresh status {conn_id}` for details; the other connections are unaffected."
        )
    return HealthRow(
        conn_id=conn_id,
        conn_type=conn_type,
        health=kind,
        dialect=dialect
        or (conn_type.removeprefix("tokenrefresh_") if conn_type.startswith("tokenrefresh_") else None),
        state="error",
        last_error=message,
        store=store,
        lock=lock,
        problems=[Problem(kind, f"status unreadable ({where or 'connection'})", fix)],
        error_field=where,
    )


def summary(rows: Iterable[HealthRow]) -> dict[str, int]:
    """How many rows are in each health, worst first."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.health] = counts.get(row.health, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-SEVERITY.get(kv[0], 0), kv[0])))
