"""A per-connection lock in PostgreSQL: session-level advisory locks, any number of machines.

Every :meth:`PostgresRefreshLock.hold` opens its own database connection and takes
``pg_advisory_lock(id)`` on it, where ``id`` is a stable 64-bit hash of the key. The lock belongs
to that session: when the holder releases it, closes the connection or dies, PostgreSQL frees it,
so a killed process never leaves it stuck (a holder cut off by the network keeps it until the
server notices the dead connection, see the server's ``tcp_keepalives_*`` settings).

Session-level advisory locks need a real session: point the lock at PostgreSQL itself or at a
pooler in session mode, never at PgBouncer in transaction mode. No fencing number is supplied.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_tokenrefresh.errors import LockTimeout
from airflow_provider_tokenrefresh.locks import Lease

if TYPE_CHECKING:
    from collections.abc import Iterator

    from psycopg import Connection

log = logging.getLogger(__name__)

#: Extra fields of an Airflow connection passed on to libpq as connection parameters.
CONNECTION_EXTRAS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "connect_timeout",
    "application_name",
    "options",
    "target_session_attrs",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
)

# libpq treats a connect_timeout of 1 as 2 and rounds to whole seconds.
_MIN_CONNECT_TIMEOUT = 2


class PostgresRefreshLock:
    """``pg_advisory_lock`` on a dedicated connection per hold.

    :param conninfo: a libpq connection string or ``postgresql://`` URL (may be empty when the
        parameters come as keywords or from ``PG*`` environment variables).
    :param namespace: mixed into the hash of every key, so other users of advisory locks on the
        same database cannot collide with these by accident.
    :param connect_timeout: the longest one connection attempt may take, in seconds.
    :param connect_kwargs: further libpq parameters (``host``, ``user``, ``sslmode``...).
    """

    name = "postgres"
    lease_ttl = 0.0

    def __init__(
        self,
        conninfo: str = "",
        *,
        namespace: str = "tokenrefresh",
        connect_timeout: float = 10.0,
        poll_interval: float = 0.5,
        **connect_kwargs: Any,
    ) -> None:
        self.conninfo = conninfo
        self.namespace = namespace
        self.connect_timeout = connect_timeout
        self.poll_interval = poll_interval
        # Shown in pg_stat_activity, so an operator can tell which sessions hold refresh locks.
        connect_kwargs.setdefault("application_name", "airflow-tokenrefresh-lock")
        self.connect_kwargs = connect_kwargs
        where = {"host": "", "port": "5432", "dbname": ""}
        try:
            from psycopg.conninfo import conninfo_to_dict

            where.update({k: str(v) for k, v in conninfo_to_dict(conninfo).items() if k in where})
        except (ImportError, ValueError):
            pass
        where.update({k: str(v) for k, v in connect_kwargs.items() if k in where})
        self.identity = f"postgres://{where['host']}:{where['port']}/{where['dbname']}"

    @classmethod
    def from_connection(cls, conn: Any, *, namespace: str = "tokenrefresh") -> PostgresRefreshLock:
        """Build the lock from an Airflow Connection (or anything with the same attributes).

        Uses ``host``, ``port`` (default 5432), ``login``, ``password`` and ``schema`` (the
        database), and the libpq parameters named in :data:`CONNECTION_EXTRAS` from the extra
        (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, ``connect_timeout``...).
        """
        extra: dict[str, Any] = dict(getattr(conn, "extra_dejson", None) or {})
        kwargs: dict[str, Any] = {}
        if conn.host:
            kwargs["host"] = conn.host
        if conn.port:
            kwargs["port"] = int(conn.port)
        if getattr(conn, "login", None):
            kwargs["user"] = conn.login
        if conn.password:
            kwargs["password"] = conn.password
        if getattr(conn, "schema", None):
            kwargs["dbname"] = conn.schema
        for name in CONNECTION_EXTRAS:
            if extra.get(name) is not None:
                kwargs[name] = extra[name]
        connect_timeout = float(kwargs.pop("connect_timeout", 10.0))
        return cls("", namespace=namespace, connect_timeout=connect_timeout, **kwargs)

    def lock_id(self, key: str) -> int:
        """The signed 64-bit advisory lock id of ``key``: the first 8 bytes of a SHA-256."""
        digest = hashlib.sha256(f"{self.namespace}\0{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[Lease]:
        """Take the lock within ``timeout`` seconds or raise :class:`LockTimeout`."""
        import psycopg

        lock_id = self.lock_id(key)
        deadline = time.monotonic() + timeout
        conn = self._connect(key, timeout, deadline)
        try:
            self._take(conn, key, lock_id, timeout, deadline)

            def check() -> bool:
                # Asked on the holding session itself: a terminated or dropped session fails here.
                try:
                    row = conn.execute(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND pid = pg_backend_pid() AND classid = %s AND objid = %s AND objsubid = 1)",
                        ((lock_id >> 32) & 0xFFFFFFFF, lock_id & 0xFFFFFFFF),
                    ).fetchone()
                except psycopg.Error:
                    return False
                return bool(row and row[0])

            try:
                yield Lease(key, None, check)
            finally:
                try:
                    cur = conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
                    row = cur.fetchone()
                    if not (row and row[0]):
                        log.warning(
                            "The postgres refresh lock for %r was no longer held when released "
                            "(its session was lost)",
                            key,
                        )
                except psycopg.Error as exc:
                    # Closing the session below frees the lock anyway.
                    log.warning(
                        "Could not release the postgres refresh lock for %r (%s); closing its session",
                        key,
                        type(exc).__name__,
                    )
        finally:
            conn.close()

    def _connect(self, key: str, timeout: float, deadline: float) -> Connection[Any]:
        import psycopg

        while True:
            remaining = deadline - time.monotonic()
            attempt_timeout = max(_MIN_CONNECT_TIMEOUT, min(self.connect_timeout, math.ceil(remaining)))
            try:
                # autocommit: the session holds the lock, no transaction is left open meanwhile.
                return psycopg.connect(
                    self.conninfo,
                    autocommit=True,
                    connect_timeout=int(attempt_timeout),
                    **self.connect_kwargs,
                )
            except psycopg.OperationalError as exc:
                # An unreachable server is waited out like a busy lock: it may be restarting.
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockTimeout(
                        f"could not take the postgres refresh lock for {key!r} within {timeout:g}s: "
                        f"the lock server could not be reached ({type(exc).__name__}). "
                        "No refresh was attempted."
                    ) from exc
                time.sleep(min(self.poll_interval, remaining))

    def _take(self, conn: Connection[Any], key: str, lock_id: int, timeout: float, deadline: float) -> None:
        import psycopg

        busy = LockTimeout(
            f"could not take the postgres refresh lock for {key!r} within {timeout:g}s; "
            "another process is refreshing. No refresh was attempted."
        )
        remaining_ms = math.floor((deadline - time.monotonic()) * 1000)
        try:
            if remaining_ms < 1:
                # lock_timeout = 0 would mean "wait forever": with no time left, only try once.
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_id,)).fetchone()
                if not (row and row[0]):
                    raise busy
                return
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{remaining_ms}ms",))
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
        except psycopg.errors.LockNotAvailable:
            raise busy from None
        except psycopg.OperationalError as exc:
            raise LockTimeout(
                f"could not take the postgres refresh lock for {key!r}: the connection to the lock "
                f"server failed ({type(exc).__name__}). No refresh was attempted."
            ) from exc
