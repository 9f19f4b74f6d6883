"""The Airflow-facing subcommands of ``airflow-tokenrefresh``: ``status`` and ``refresh``.

Outside any task they work like Airflow's own CLI: connections and Variables are read from (and
written to) the metadata database, through the same store and lock that tasks use. Inside a task
process (Airflow 3 blanks the database URL there) named connections are read through the hook, that
is the execution API; listing every ``tokenrefresh_*`` connection needs the database.

``status`` exits with a code a monitoring check can trust (docs/status.md)::

    0  every connection is valid
    1  some refresh token expires within --horizon seconds, or a record is suspect
    2  usage error (argparse's code; also: no connections named where they cannot be listed)
    3  could not tell: a store or a connection could not be read (the other rows are still shown)
    4  some connection needs re-authorization or is misconfigured

With several at once the highest wins (4 over 3 over 1).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from datetime import datetime

EXIT_OK = 0
EXIT_EXPIRING = 1
EXIT_USAGE = 2
EXIT_UNKNOWN = 3
EXIT_BROKEN = 4

#: Default ``--horizon``: a refresh token with less than a day left is reported (exit 1).
DEFAULT_HORIZON = 86400.0

#: What each row's ``check`` means for the exit code.
CHECK_EXIT = {
    "ok": EXIT_OK,
    "expiring": EXIT_EXPIRING,
    "suspect": EXIT_EXPIRING,
    "unknown": EXIT_UNKNOWN,
    "reauth_required": EXIT_BROKEN,
    "misconfigured": EXIT_BROKEN,
}


def _in_task_process() -> bool:
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return runner is not None and getattr(runner, "SUPERVISOR_COMMS", None) is not None


def metastore_reachable() -> bool:
    """Whether this process may talk to the metadata database: not in a task process (reads go
    through the execution API there) nor where the URL does not parse (Airflow 3 sets
    ``airflow-db-not-allowed:///`` for tasks and the processes they start)."""
    if _in_task_process():
        return False
    url = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if url is None:
        from airflow.configuration import conf

        url = conf.get("database", "sql_alchemy_conn", fallback="") or ""
    from sqlalchemy.engine import make_url

    try:
        make_url(url)
    except Exception:  # noqa: BLE001 - ArgumentError and friends: not a database URL
        return False
    return True


def _importable_without_metastore() -> None:
    """Let Airflow be imported in a process whose database URL Airflow 3 blanked (a process a task
    started: ``airflow-db-not-allowed:///``, on which ``import airflow`` itself fails with
    ``ArgumentError``). This process only, and only for the import: nothing here reads the
    database; connections then come from the environment and the configured secrets backends."""
    for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__SQL_ALCHEMY_CONN"):
        if os.environ.get(name, "").startswith("airflow-db-not-allowed:"):
            os.environ[name] = "sqlite://"


def _server_context() -> None:
    # Airflow's own CLI sets this so SDK reads reach the metastore, not only env connections.
    os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")


def row_horizon(row: dict[str, Any], horizon: float | None) -> float:
    """The horizon a row is judged by: ``--horizon`` when given; by default a day, or a quarter of
    the refresh token's lifetime when that is shorter (a one-hour refresh token, kept alive by the
    keeper, is not "expiring" all the time), and the whole day for a re-authorization deadline."""
    if horizon is not None:
        return horizon
    if row.get("reauth_deadline"):
        return DEFAULT_HORIZON
    from airflow_provider_tokenrefresh.lease import effective_horizon

    lifetime = row.get("refresh_lifetime")
    return effective_horizon(DEFAULT_HORIZON, float(lifetime) if lifetime else None)


def classify(row: dict[str, Any], *, horizon: float | None, now: datetime | None = None) -> str:
    """The ``check`` of one status row: ``ok``, ``expiring``, ``suspect``, ``reauth_required``,
    ``misconfigured`` or ``unknown`` (see :data:`CHECK_EXIT`).

    Rows that could not be read carry their check already. A refresh token that has expired needs
    re-authorization; one expiring within ``horizon`` seconds is ``expiring``; a record whose last
    refresh failed on the configuration (bad client credentials, URL) is ``misconfigured``.
    """
    from datetime import UTC, datetime

    if row.get("check") in CHECK_EXIT:
        return str(row["check"])
    state = row.get("state")
    if state == "reauth_required":
        return "reauth_required"
    now = now or datetime.now(UTC)
    left: float | None = None
    if row.get("refresh_expires_at") and row.get("has_refresh_token", True):
        left = (datetime.fromisoformat(str(row["refresh_expires_at"])) - now).total_seconds()
        if left <= 0:
            return "reauth_required"
    if str(row.get("last_error") or "").startswith("configuration:"):
        return "misconfigured"
    if state == "suspect":
        return "suspect"
    if state != "valid":
        return "unknown"
    if left is not None and left < row_horizon(row, horizon):
        return "expiring"
    return "ok"


def exit_code(checks: list[str]) -> int:
    """The status command's exit code for these row checks (the highest wins; 0 when there are none)."""
    return max((CHECK_EXIT.get(check, EXIT_UNKNOWN) for check in checks), default=EXIT_OK)


def _error_row(conn_id: str, exc: BaseException, *, reachable: bool) -> dict[str, Any]:
    """The row of a connection that could not be read; one bad connection never hides the others."""
    from airflow_provider_tokenrefresh.errors import ConfigurationError, TokenRefreshError
    from airflow_provider_tokenrefresh.redaction import redact

    message = str(exc) if isinstance(exc, TokenRefreshError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ConfigurationError):
        check = "misconfigured"
    else:
        check = "unknown"
        if not reachable:
            message += (
                " (the metadata database is not reachable from this process and the execution API only "
                "from a task's own process: call airflow_provider_tokenrefresh.cli.main(['status', ...]) in "
                "the task, or give this process the database URL)"
            )
    return {"conn_id": conn_id, "state": "error", "last_error": redact(message), "check": check}


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Airflow logs to stdout; keep stdout for our output (JSON must stay parseable).

    Swapping ``sys.stdout`` is not enough: Airflow's structlog logger holds the stream object it
    was configured with (a secrets-masker warning went to stdout and broke ``status --json``). So
    file descriptor 1 itself points at stderr meanwhile, and every stream is flushed either side.
    """
    streams = [s for s in {id(x): x for x in (sys.stdout, sys.__stdout__)}.values() if s is not None]
    for stream in streams:
        stream.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (a closed stdout): nothing to protect
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved, 1)
        os.close(saved)


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
    "check",
]


def cmd_status(args: argparse.Namespace) -> int:
    """Print the non-secret token status of connections; the exit code sums them up."""
    reachable = metastore_reachable()
    if reachable:
        _server_context()
    elif not _in_task_process():
        _importable_without_metastore()
    from airflow_provider_tokenrefresh.discovery import configured_setting, extra_conn_ids, merge_conn_ids

    beyond_metastore = extra_conn_ids(os.environ, configured_setting())
    if not reachable and not args.conn_id and not beyond_metastore:
        print(
            "error: the Airflow metadata database is not reachable from this process (inside an Airflow "
            "task it is blocked), so the tokenrefresh_* connections cannot be listed: name them, e.g. "
            "'airflow-tokenrefresh status CONN_ID [CONN_ID ...]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from airflow_provider_tokenrefresh.console import print_table

    with _quiet_stdout():
        from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

    rows: list[dict[str, Any]] = []
    conn_ids: list[str] = list(args.conn_id or ())
    if not conn_ids and not reachable:
        conn_ids = beyond_metastore
        print(
            "note: the metadata database is not reachable from this process, so only the connections "
            "in AIRFLOW_CONN_* variables and [tokenrefresh] connections are listed",
            file=sys.stderr,
        )
    elif not conn_ids:
        try:
            with _quiet_stdout():
                conn_ids = merge_conn_ids(_tokenrefresh_conn_ids(), beyond_metastore)
        except Exception as exc:  # noqa: BLE001 - could not tell: the database did not answer
            from airflow_provider_tokenrefresh.redaction import redact

            print(
                f"error: could not list the tokenrefresh_* connections from the metadata database "
                f"({type(exc).__name__}: {redact(str(exc))[:300]}); name them to read them one by one",
                file=sys.stderr,
            )
            return EXIT_UNKNOWN
    with _quiet_stdout():
        for conn_id in conn_ids:
            try:
                with TokenRefreshHook(conn_id) as hook:
                    row = hook.token_status()
                row["check"] = classify(row, horizon=args.horizon)
            except Exception as exc:  # noqa: BLE001 - one bad connection must not hide the others
                row = _error_row(conn_id, exc, reachable=reachable)
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print_table(rows, _COLUMNS)
        for row in rows:
            for warning in row.get("warnings") or ():
                print(f"WARNING {row['conn_id']}: {warning}")
    code = exit_code([row["check"] for row in rows])
    print(_summary(rows, code, args.horizon), file=sys.stderr)
    return code


def _summary(rows: list[dict[str, Any]], code: int, horizon: float | None) -> str:
    """One line for a check's log: the exit code and which connections made it."""
    words = {0: "OK", 1: "WARNING", 3: "UNKNOWN", 4: "CRITICAL"}
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(row["check"], []).append(str(row["conn_id"]))
    detail = "; ".join(
        f"{check}{f' (within {horizon:g}s)' if check == 'expiring' and horizon is not None else ''}: "
        f"{', '.join(ids)}"
        for check, ids in sorted(groups.items(), key=lambda item: -CHECK_EXIT.get(item[0], EXIT_UNKNOWN))
    )
    return f"tokenrefresh status {words.get(code, code)} (exit {code}): {len(rows)} connection(s); {detail or 'none'}"


def cmd_refresh(args: argparse.Namespace) -> int:
    """Refresh one connection through the shared lock and store."""
    if metastore_reachable():
        _server_context()
    elif not _in_task_process():
        _importable_without_metastore()
    with _quiet_stdout():
        from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook

        with TokenRefreshHook(args.conn_id) as hook:
            result = hook.refresh(force=args.force, min_ttl=args.min_ttl, retry_rejected=args.force)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _seconds(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"must be zero or more seconds: {text!r}")
    return value


def add_commands(sub: Any) -> None:
    """Register ``status`` and ``refresh`` on the main parser."""
    p = sub.add_parser("status", help="token status of connections (never a secret)")
    p.add_argument("conn_id", nargs="*", help="connection ids (default: every tokenrefresh_* connection)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--horizon",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help=(
            "report refresh tokens expiring within this many seconds (exit 1; default "
            f"{DEFAULT_HORIZON:g}, or a quarter of a shorter refresh-token lifetime)"
        ),
    )
    p.set_defaults(func=cmd_status, failure_exit=EXIT_UNKNOWN)

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
