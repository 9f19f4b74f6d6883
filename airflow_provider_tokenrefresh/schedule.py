"""The keeper DAG's schedule, from the connections' token lifetimes — with no I/O at DAG-parse time.

The rule (docs/lifetimes.md):

* every token with a known lifetime ``L`` (access and refresh) asks for a keeper run at least every
  ``L / 4``; the keeper run's ``min_ttl`` is twice its interval (:func:`keeper_min_ttl`), which
  the keeper applies to refresh tokens too (capped at ``L / 2``:
  :func:`airflow_provider_tokenrefresh.lease.keeper_refresh_margin`). A refresh token is then
  renewed at the first run after half its life, and between runs it never has less than ``L / 4``
  left: the warning horizon of :func:`airflow_provider_tokenrefresh.lease.effective_horizon`;
* access tokens are bounded below by ``floor`` (default 15 minutes): a keeper every 75 s for
  iSales' 5-minute access tokens buys nothing (tasks refresh those on use);
* refresh tokens are *not* bounded by ``floor`` (a refresh token must never lapse for it), only by
  ``minimum`` (60 s); everything by ``ceiling`` (1 day).

Lifetimes come from what the connection *states*: the dialect preset's documented lifetimes, the
lifetimes the vendor documents only by example (:data:`DOCUMENTED_LIFETIMES`), and the connection's
extras ``default_expires_in`` / ``refresh_lifetime``. Never from the token store and never from the
vendor: the example DAG passes each connection's type (no lookup at all); :func:`keeper_interval`
otherwise reads ``AIRFLOW_CONN_<ID>`` environment variables only. A connection whose lifetimes
cannot be told contributes nothing (logged); with none known the interval is ``ceiling``.

This module imports nothing from Airflow at import time.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)

#: Lower bound of the interval set by access tokens.
DEFAULT_FLOOR = timedelta(minutes=15)
#: Upper bound of the interval.
DEFAULT_CEILING = timedelta(days=1)
#: The interval is never below this, whatever the tokens (the scheduler's practical resolution).
MINIMUM_INTERVAL = timedelta(seconds=60)
#: A token's lifetime is divided by this to get its keeper interval.
RUNS_PER_LIFETIME = 4

#: (access, refresh) lifetimes in seconds that a vendor states only in its answers, as its document
#: shows them by example. isales-bearer-json.txt: ``"tokenExpirationTime":300`` and
#: ``"refreshExpirationTime":3600``. oauth2-client-secret-post.txt: ``"expires_in" : 7200``.
DOCUMENTED_LIFETIMES: dict[str, tuple[float | None, float | None]] = {
    "bearer_json": (300.0, 3600.0),
    "oauth2_post": (7200.0, None),
}


@dataclass(frozen=True)
class TokenLifetimes:
    """The lifetimes one connection states (seconds; ``None``: not stated)."""

    conn_id: str
    access: float | None
    refresh: float | None


def stated_lifetimes(conn_id: str, conn_type: str, extra: Mapping[str, Any] | None = None) -> TokenLifetimes:
    """The lifetimes a connection states (pure): its extras, else its dialect's documented ones.

    :param conn_type: ``tokenrefresh_<dialect>`` or just ``<dialect>``; a custom dialect's spec is
        read from ``extra['dialect']`` (``response.default_expires_in`` /
        ``response.refresh_token_lifetime``).
    :raises KeyError: for an unknown dialect.
    """
    from airflow_provider_tokenrefresh.dialects import PRESETS

    extra = dict(extra or {})
    name = conn_type.removeprefix("tokenrefresh_")
    access: float | None
    refresh: float | None
    if name == "custom":
        spec = extra.get("dialect") or {}
        if isinstance(spec, str):
            spec = json.loads(spec)
        response = spec.get("response", {}) if isinstance(spec, dict) else {}
        access, refresh = (
            _seconds(response.get("default_expires_in")),
            _seconds(response.get("refresh_token_lifetime")),
        )
    else:
        preset = PRESETS[name].response
        doc_access, doc_refresh = DOCUMENTED_LIFETIMES.get(name, (None, None))
        access = preset.default_expires_in or doc_access
        refresh = preset.refresh_token_lifetime or doc_refresh
    access = _seconds(extra.get("default_expires_in")) or access
    refresh = _seconds(extra.get("refresh_lifetime", extra.get("refresh_token_ttl"))) or refresh
    return TokenLifetimes(conn_id, access, refresh)


def _seconds(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def keeper_interval_for(
    lifetimes: Iterable[TokenLifetimes],
    *,
    floor: timedelta = DEFAULT_FLOOR,
    ceiling: timedelta = DEFAULT_CEILING,
) -> timedelta:
    """The keeper DAG's interval from stated lifetimes (pure; the rule of the module docstring)."""
    access_bounds: list[float] = []
    refresh_bounds: list[float] = []
    for item in lifetimes:
        if item.access:
            access_bounds.append(item.access / RUNS_PER_LIFETIME)
        if item.refresh:
            refresh_bounds.append(item.refresh / RUNS_PER_LIFETIME)
    interval = ceiling.total_seconds()
    if access_bounds:
        interval = min(interval, max(floor.total_seconds(), min(access_bounds)))
    if refresh_bounds:
        shortest = min(refresh_bounds)
        if shortest < MINIMUM_INTERVAL.total_seconds():
            log.warning(
                "a refresh token lives %.0fs: a keeper run every %.0fs cannot keep it alive on its own "
                "(tasks using the connection must)",
                shortest * RUNS_PER_LIFETIME,
                MINIMUM_INTERVAL.total_seconds(),
            )
        interval = min(interval, shortest)
    return timedelta(seconds=max(MINIMUM_INTERVAL.total_seconds(), interval))


def keeper_min_ttl(interval: timedelta) -> float:
    """The ``min_ttl`` a keeper run every ``interval`` asks for: two intervals (seconds), so a token
    that would not outlive the next run plus a late one is refreshed now."""
    return 2 * interval.total_seconds()


def env_connection(conn_id: str) -> tuple[str, dict[str, Any]] | None:
    """``(conn_type, extra)`` of an ``AIRFLOW_CONN_<CONN_ID>`` environment variable (JSON or URI
    form), or ``None`` when there is none. Reads the environment only."""
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if not raw:
        return None
    if raw.lstrip().startswith("{"):
        data = json.loads(raw)
        extra = data.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra) if extra.strip() else {}
        return str(data.get("conn_type", "")), dict(extra)
    parts = urlsplit(raw)
    query = dict(parse_qsl(parts.query))
    if "__extra__" in query:
        return parts.scheme.replace("-", "_"), dict(json.loads(query["__extra__"]))
    return parts.scheme.replace("-", "_"), dict(query)


def keeper_interval(
    conn_ids: Iterable[str],
    *,
    conn_types: Mapping[str, str] | None = None,
    floor: timedelta = DEFAULT_FLOOR,
    ceiling: timedelta = DEFAULT_CEILING,
) -> timedelta:
    """The keeper DAG's schedule for ``conn_ids`` (the thin reader over :func:`keeper_interval_for`).

    Each connection's lifetimes come from its ``AIRFLOW_CONN_<ID>`` environment variable when set
    (its type and extras), else from ``conn_types[conn_id]`` (its dialect's documented lifetimes).
    No metadata database, secrets backend, store or vendor is asked: safe at DAG-parse time. A
    connection found in neither is logged and left out.
    """
    found: list[TokenLifetimes] = []
    for conn_id in conn_ids:
        try:
            defined = env_connection(conn_id)
            if defined is not None:
                found.append(stated_lifetimes(conn_id, defined[0], defined[1]))
            elif conn_types and conn_id in conn_types:
                found.append(stated_lifetimes(conn_id, conn_types[conn_id]))
            else:
                log.warning("keeper schedule: connection %s: no conn type known; left out", conn_id)
        except (KeyError, ValueError, AttributeError) as exc:
            log.warning("keeper schedule: connection %s: lifetimes unreadable (%s); left out", conn_id, exc)
    return keeper_interval_for(found, floor=floor, ceiling=ceiling)
