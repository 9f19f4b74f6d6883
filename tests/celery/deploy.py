"""Start the whole CeleryExecutor deployment for the tests and ``make cluster-demo``.

PostgreSQL 15 and Redis come from :mod:`tests.servers_locks` (throwaway servers on free ports on
127.0.0.1, stopped by PID); the Airflow components from
:class:`airflow_provider_tokenrefresh.testing.celery_stack.CeleryStack`. Everything is stopped
by :func:`deployment`'s exit, even when starting failed half-way.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_tokenrefresh.testing import OAuth2BasicEmulator
from airflow_provider_tokenrefresh.testing.celery_stack import CeleryStack, create_database
from tests.servers_locks import PostgresServer, RedisServer

DAGS = Path(__file__).parent / "dags"

#: The four lock settings; ``redis``/``postgres`` name lock connections :func:`deployment` creates.
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "redis": {"lock": "redis", "lock_conn_id": "tokenrefresh_lock_redis"},
    "postgres": {"lock": "postgres", "lock_conn_id": "tokenrefresh_lock_postgres"},
    "file": {"lock": "file"},
}


@dataclass
class Deployment:
    stack: CeleryStack
    emulator: OAuth2BasicEmulator
    postgres: PostgresServer
    redis: RedisServer
    started_in: float


@contextlib.contextmanager
def deployment(
    *, access_ttl: float, workers: int = 2, concurrency: int = 8, root: Path | None = None
) -> Iterator[Deployment]:
    """PostgreSQL, Redis, the emulated vendor and the Airflow components, all on 127.0.0.1."""
    t0 = time.monotonic()
    own_root = root is None
    root = root or Path(tempfile.mkdtemp(prefix="tokenrefresh-celery-"))
    postgres, redis = PostgresServer(), RedisServer()
    emulator = OAuth2BasicEmulator(rotation=True, reuse_detection=True, access_ttl=access_ttl)
    stack: CeleryStack | None = None
    try:
        postgres.start()
        redis.start()
        emulator.start()
        db_url = create_database(postgres.conninfo, "airflow")
        (root / "dags").mkdir(parents=True, exist_ok=True)
        for source in DAGS.glob("*.py"):
            shutil.copy(source, root / "dags" / source.name)
        stack = CeleryStack(
            home=root / "homes",
            dags_folder=root / "dags",
            db_url=db_url,
            broker_url=redis.url,
            workers=workers,
            concurrency=concurrency,
        )
        stack.migrate()
        stack.start()
        stack.put_connection("tokenrefresh_lock_redis", "redis", host="127.0.0.1", port=redis.port)
        stack.put_connection(
            "tokenrefresh_lock_postgres", "postgres", host="127.0.0.1", port=postgres.port,
            login="postgres", schema="airflow",
        )  # fmt: skip
        for dag_id in ("celery_token_herd", "celery_token_herd_small", "celery_token_herd_peer"):
            stack.wait_for_dag(dag_id, timeout=180)
        yield Deployment(stack, emulator, postgres, redis, time.monotonic() - t0)
    finally:
        if stack is not None:
            stack.stop()
        emulator.stop()
        redis.stop()
        postgres.stop()
        if own_root:
            shutil.rmtree(root, ignore_errors=True)
