"""Server-rendered HTML of the token health page (no JavaScript), free of Airflow.

Every value is HTML-escaped; the rows carry no secret to begin with
(:mod:`airflow_provider_tokenrefresh.plugins.health_rows`).
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from airflow_provider_tokenrefresh.plugins.health_rows import human_seconds, summary

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_provider_tokenrefresh.plugins.health_rows import HealthRow

_COLOURS = {
    "ok": "#1f7a3a",
    "refreshing": "#2563eb",
    "degraded": "#b45309",
    "warning": "#b45309",
    "expiring": "#b45309",
    "stalled": "#c2410c",
    "suspect": "#c2410c",
    "reauth_required": "#b91c1c",
    "expired": "#b91c1c",
    "store_error": "#7f1d1d",
    "misconfigured": "#7f1d1d",
    "error": "#7f1d1d",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#111;background:#fff;font-size:13px}
h1{font-size:18px;margin:0 0 4px}
p.meta{color:#555;margin:0 0 10px}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f3f4f6;font-weight:600;white-space:nowrap}
td.id{font-family:ui-monospace,Menlo,monospace;white-space:nowrap}
span.badge{display:inline-block;padding:1px 7px;border-radius:9px;color:#fff;font-weight:600;white-space:nowrap}
small{color:#555}
ul{margin:0;padding-left:16px}
li.fix{margin-bottom:2px}
tr.bad td{background:#fff7f7}
td.err{min-width:240px}
td.fix{min-width:300px}
.counts span.badge{margin-right:6px}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _badge(health: str) -> str:
    colour = _COLOURS.get(health, "#374151")
    return f'<span class="badge" style="background:{colour}">{_e(health)}</span>'


def _short(at: str) -> str:
    """``2026-12-01T19:03:13+00:00`` as ``2026-12-01 19:03:13Z`` (the JSON keeps ISO 8601)."""
    return at.replace("T", " ").replace("+00:00", "Z")


def _when(at: str | None, seconds: float | None, *, left: str = "left") -> str:
    if at is None:
        return "<small>unknown</small>"
    rel = human_seconds(seconds)
    rel = rel if rel.endswith("ago") else f"{rel} {left}"
    return f"{_e(_short(at))}<br><small>{_e(rel)}</small>"


def _cells(row: HealthRow) -> list[str]:
    error = ""
    if row.last_error:
        error = _e(row.last_error)
        if row.last_error_at:
            error += f"<br><small>at {_e(row.last_error_at)}</small>"
    if row.reason and row.reason != row.last_error:
        error += f"<br><small>reason: {_e(row.reason)}</small>"
    if row.error_field:
        error += f"<br><small>field: {_e(row.error_field)}</small>"
    in_flight = "<small>none</small>"
    if row.in_flight_since:
        in_flight = (
            f"on {_e(row.in_flight_by)}<br><small>since {_e(row.in_flight_since)} "
            f"({_e(human_seconds(row.in_flight_for))})</small>"
        )
    store_lock = f"{_e(row.store or '?')} / {_e(row.lock or '?')}"
    if row.lock_in_use and row.lock_in_use != row.lock:
        store_lock += f"<br><small>record: {_e(row.lock_in_use)}</small>"
    warnings = "".join(f"<li>{_e(w)}</li>" for w in row.warnings)
    fixes = "".join(f'<li class="fix"><b>{_e(p.kind)}</b>: {_e(p.fix)}</li>' for p in row.problems)
    state = _e(row.state or "")
    if row.generation is not None:
        state += f"<br><small>generation {_e(row.generation)}</small>"
    return [
        f'<td class="id">{_e(row.conn_id)}<br><small>{_e(row.conn_type)}</small></td>',
        f"<td>{_e(row.dialect or '?')}</td>",
        f"<td>{_badge(row.health)}</td>",
        f"<td>{state}</td>",
        f"<td>{_when(row.access_expires_at, row.access_expires_in)}</td>",
        f"<td>{_when(row.refresh_expires_at, row.refresh_expires_in) if row.refresh_expires_at else '<small>not stated</small>'}</td>",
        f"<td>{_e(_short(row.last_refresh_at)) if row.last_refresh_at else '<small>never</small>'}</td>",
        f'<td class="err">{error or "<small>none</small>"}</td>',
        f"<td>{in_flight}</td>",
        f"<td>{store_lock}</td>",
        f"<td>{f'<ul>{warnings}</ul>' if warnings else '<small>none</small>'}</td>",
        f'<td class="fix">{f"<ul>{fixes}</ul>" if fixes else "<small>nothing to do</small>"}</td>',
    ]


HEADERS = [
    "Connection",
    "Dialect",
    "Health",
    "State",
    "Access token expires",
    "Refresh token expires",
    "Last refresh",
    "Last error / reason",
    "Refresh in flight",
    "Store / lock",
    "Warnings",
    "Fix",
]


def render_page(
    rows: Sequence[HealthRow],
    *,
    generated_at: str,
    user: str,
    json_href: str,
    refresh_token_horizon: float,
) -> str:
    """The whole HTML document for ``rows``."""
    counts = " ".join(f"{_badge(h)}{n}" for h, n in summary(rows).items())
    head = "".join(f"<th>{_e(h)}</th>" for h in HEADERS)
    body = []
    for row in rows:
        bad = ' class="bad"' if row.problems else ""
        body.append(
            f'<tr{bad} data-conn-id="{_e(row.conn_id)}" data-health="{_e(row.health)}">{"".join(_cells(row))}</tr>'
        )
    if not body:
        body.append(f'<tr><td colspan="{len(HEADERS)}">No tokenrefresh_* connection you may read.</td></tr>')
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>Token health</title><style>{_CSS}</style></head><body>"
        "<h1>Token health</h1>"
        f'<p class="meta">{len(rows)} connection(s) you may read, as of {_e(generated_at)} (signed in as '
        f"{_e(user)}). Refresh tokens lapsing within {_e(human_seconds(refresh_token_horizon))} (or a quarter of "
        "their lifetime, when shorter) are flagged. "
        f'<a href="{_e(json_href)}">JSON</a></p>'
        f'<p class="counts">{counts}</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        "</body></html>"
    )


def render_refusal(status: int, message: str, login_href: str | None = None) -> str:
    """A small HTML page for a refused request (403, or 401 without a login page)."""
    link = f' <a href="{_e(login_href)}">Sign in</a>' if login_href else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Token health</title>'
        f"<style>{_CSS}</style></head><body><h1>Token health</h1>"
        f"<p>{_e(status)}: {_e(message)}{link}</p></body></html>"
    )
