"""The Airflow-facing subcommands of ``airflow-tokenrefresh``: ``status`` and ``refresh``.

They run outside any task, like Airflow's own CLI: connections and Variables are read from (and
written to) the metadata database, through the same store and lock that tasks use.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse


def _server_context() -> None:
    # Airflow's own CLI sets this so SDK reads reach the metastore, not only env connections.
    os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")


def _quiet_stdout() -> contextlib.AbstractContextManager[object]:
    """Airflow logs to stdout; keep stdout for our output (JSON must stay parseable)."""
    return contextlib.redirect_stdout(sys.stderr)


def _tokenrefresh_conn_ids() -> list[str]:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(Connection.conn_id)
            .where(Connection.conn_type.like("tokenrefresh_%"))
            .order_by(Connection.conn_id)
        )
        return list(rows)


_COLUMNS = [
    "conn_id",
    "dialect",
    "state",
    "generation",
    "expires_in",
    "expires_at",
    "refresh_expires_at",
    "last_refresh_at",
    "last_error",
    "lock_in_use",
]


def cmd_status(args: argparse.Namespace) -> int:
    """Print the non-secret token status of connections."""
    _server_context()
    from airflow_provider_tokenrefresh.console import print_table

    with _quiet_stdout():
        from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

    rows: list[dict[str, Any]] = []
    failures = 0
    with _quiet_stdout():
        for conn_id in args.conn_id or _tokenrefresh_conn_ids():
            try:
                with TokenRefreshHook(conn_id) as hook:
                    rows.append(hook.token_status())
            except Exception as exc:  # noqa: BLE001 - one bad connection must not hide the others
                failures += 1
                rows.append({"conn_id": conn_id, "state": "error", "last_error": str(exc)})
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print_table(rows, _COLUMNS)
        for row in rows:
            for warning in row.get("warnings") or ():
                print(f"WARNING {row['conn_id']}: {warning}")
    return 1 if failures else 0


def cmd_refresh(args: argparse.Namespace) -> int:
    """Refresh one connection through the shared lock and store."""
    _server_context()
    with _quiet_stdout():
        from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

        with TokenRefreshHook(args.conn_id) as hook:
            result = hook.refresh(force=args.force, min_ttl=args.min_ttl, retry_rejected=args.force)
    print(json.dumps(result, indent=2, default=str))
    return 0


def add_commands(sub: Any) -> None:
    """Register ``status`` and ``refresh`` on the main parser."""
    p = sub.add_parser("status", help="token status of connections (never a secret)")
    p.add_argument("conn_id", nargs="*", help="connection ids (default: every tokenrefresh_* connection)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("refresh", help="refresh a connection's token through the shared lock and store")
    p.add_argument("conn_id")
    p.add_argument(
        "--force",
        action="store_true",
        help="refresh even if valid; also retry a refresh token marked as needing re-authorization",
    )
    p.add_argument(
        "--min-ttl", type=float, default=None, help="refresh if less than this many seconds are left"
    )
    p.set_defaults(func=cmd_refresh)
