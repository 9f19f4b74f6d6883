"""The real servers of a chaos run, and what the runner does to them mid-round.

OpenBao (KV v2), moto (AWS Secrets Manager), Redis and PostgreSQL, each on 127.0.0.1, started
through the suite's fixtures' helpers (they raise with the server's output when a server cannot
start) and stopped by PID. Mid-round actions: a Redis lease made to run out (``PEXPIRE``), a
PostgreSQL lock session terminated (``pg_terminate_backend``), either server restarted on its port.

The Airflow Variable store gets a throwaway Airflow metadata database on that PostgreSQL (database
``airflow_chaos``, ``airflow db migrate``d, its own ``AIRFLOW_HOME`` and Fernet key): the children
use the core ``airflow.models.Variable`` on it, as the CLI and the api-server do, and the runner
reads it through a child of its own (:class:`ChaosVariableServer`), since Airflow reads its
configuration once per process.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers_locks import (
    PG_BIN,
    REDIS_SERVER,
    PostgresServer,
    RedisServer,
    ServerStartError,
    _as_postgres,
    _run,
)
from tests.servers_stores import bao_dev_server, moto_secretsmanager_server
from tests.stores.variable_server import VariableStoreServer

#: The metadata database of the Variable store's rounds, on the run's PostgreSQL.
AIRFLOW_DB = "airflow_chaos"


def wait_for(predicate: Any, what: str, timeout: float = 20.0) -> None:
    """Poll an observable condition (bounded); raise naming it when it never holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"never happened within {timeout:g}s: {what}")
        time.sleep(0.002)


@dataclass
class Servers:
    vault_url: str
    vault_token: str
    aws_endpoint: str
    redis: RedisServer
    postgres: PostgresServer
    restarts: int = 0
    #: The Variable store's metadata database (``None``: no Variable-store rounds in this run).
    variable: ChaosVariableServer | None = None

    def backend(self, store: str, lock: str, workdir: str) -> dict[str, Any]:
        """The plain-data spec ``testing.backends`` builds a store and lock from."""
        return {
            "store": store,
            "lock": lock,
            "store_dir": f"{workdir}/store",
            "lock_dir": f"{workdir}/locks",
            "vault_url": self.vault_url,
            "vault_token": self.vault_token,
            "aws_endpoint": self.aws_endpoint,
            "redis_url": self.redis.url,
            "lock_ttl": 30,
            "postgres_dsn": self.postgres.conninfo,
            "airflow_env": self.variable.child_env() if self.variable is not None else {},
        }

    # -- lease loss ------------------------------------------------------------------------------

    def expire_redis_lease(self, key: str) -> None:
        """Let the lock's key run out now (``PEXPIRE 1``), as a lease that was not renewed in time."""
        import redis

        from airflow_provider_tokenrefresh.locks.redis import RedisRefreshLock

        client = redis.Redis.from_url(self.redis.url)
        try:
            lock_key = RedisRefreshLock(client).lock_key(key)
            wait_for(
                lambda: client.pexpire(lock_key, 1) is not None and not client.exists(lock_key),
                "the redis lease ran out",
            )
        finally:
            client.close()

    def terminate_postgres_session(self, key: str, must_exist: bool = True) -> None:
        """``pg_terminate_backend`` on the session holding ``key``'s advisory lock."""
        import psycopg

        from airflow_provider_tokenrefresh.locks.postgres import PostgresRefreshLock

        lock_id = PostgresRefreshLock(self.postgres.conninfo).lock_id(key)
        where = ((lock_id >> 32) & 0xFFFFFFFF, lock_id & 0xFFFFFFFF)
        query = (
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objid = %s AND objsubid = 1"
        )
        with psycopg.connect(self.postgres.conninfo, autocommit=True) as conn:
            pids = [row[0] for row in conn.execute(query, where).fetchall()]
            if must_exist and not pids:
                raise AssertionError("no session holds the advisory lock")
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_for(lambda: not conn.execute(query, where).fetchall(), "the lock session ended")

    def lose_lease(self, lock: str, key: str) -> None:
        if lock == "redis":
            self.expire_redis_lease(key)
        elif lock == "postgres":
            self.terminate_postgres_session(key)
        else:
            raise ValueError(lock)

    # -- restarts --------------------------------------------------------------------------------

    def restart(self, lock: str) -> None:
        """Restart the lock server on its port (Redis keeps nothing: no persistence)."""
        self.restarts += 1
        if lock == "redis":
            server = self.redis
            server._terminate()
            log_path = server.workdir / f"redis-{server.port}.log"
            with open(log_path, "ab") as log:
                server.process = subprocess.Popen(
                    [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(server.port), "--save", "",
                     "--appendonly", "no", "--daemonize", "no", "--dir", str(server.workdir)],
                    stdout=log, stderr=subprocess.STDOUT, cwd=server.workdir,
                )  # fmt: skip
            try:
                wait_for(server._pong, "redis-server answered PING after its restart")
            except TimeoutError as exc:
                raise ServerStartError(f"{exc}\n{log_path.read_text(errors='replace')[-2000:]}") from None
        elif lock == "postgres":
            pg = self.postgres
            _run(
                _as_postgres(
                    [
                        str(PG_BIN / "pg_ctl"),
                        "-D",
                        str(pg.data),
                        "-l",
                        str(pg.base / "log"),
                        "-m",
                        "fast",
                        "-w",
                        "-t",
                        "60",
                        "restart",
                    ]
                ),
                "pg_ctl restart",
            )
        else:
            raise ValueError(lock)


class ChaosVariableServer(VariableStoreServer):
    """The Variable store's metadata database on the run's PostgreSQL, and the runner's reader.

    ``start`` runs ``airflow db migrate`` in a fresh process with this environment, then starts the
    child serving the runner's own ``VariableTokenStore`` (what a fresh reader sees); the keepers
    are forked children that switch their Airflow configuration to :meth:`child_env`."""

    def __init__(self, home: Path, postgres: PostgresServer) -> None:
        super().__init__(home)
        self.postgres = postgres
        parts = dict(item.split("=", 1) for item in postgres.conninfo.split())
        self.url = f"postgresql+psycopg2://{parts['user']}@{parts['host']}:{parts['port']}/{AIRFLOW_DB}"

    def env(self) -> dict[str, str]:
        env = super().env()
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.url
        # Airflow derives an asyncpg URL from the sync one; psycopg 3 is async too, and is the
        # driver the suite's other PostgreSQL deployments use.
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = self.url.replace("+psycopg2", "+psycopg")
        env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
        return env

    def child_env(self) -> dict[str, str]:
        """What a keeper child sets before it reconfigures Airflow (``AIRFLOW*`` only)."""
        return {k: v for k, v in self.env().items() if k.startswith(("AIRFLOW", "_AIRFLOW"))}

    def start(self, timeout: float = 300) -> None:
        import psycopg

        with psycopg.connect(self.postgres.conninfo, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {AIRFLOW_DB}")
            conn.execute(f"CREATE DATABASE {AIRFLOW_DB}")
        super().start(timeout)


@contextlib.contextmanager
def chaos_servers(*, workdir: Path | None = None, variable: bool = False) -> Iterator[Servers]:
    """Start every server the run needs; stop each by PID at the end.

    :param variable: also migrate the Variable store's metadata database (in ``workdir``) and start
        the runner's reader of it.
    """
    redis_server = RedisServer()
    postgres = PostgresServer()
    with contextlib.ExitStack() as stack:
        vault_url, vault_token = stack.enter_context(bao_dev_server())
        aws_endpoint = stack.enter_context(moto_secretsmanager_server())
        stack.callback(redis_server.stop)
        redis_server.start()
        stack.callback(postgres.stop)
        postgres.start()
        servers = Servers(vault_url, vault_token, aws_endpoint, redis_server, postgres)
        if variable:
            if workdir is None:
                raise ValueError("the Variable store needs a workdir for its AIRFLOW_HOME")
            server = ChaosVariableServer(workdir / "airflow-home", postgres)
            stack.callback(server.stop)
            server.start()
            servers.variable = server
        yield servers
