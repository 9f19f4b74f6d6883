"""Real Redis and PostgreSQL servers for the lock tests, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers_locks import PostgresServer, RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a throwaway ``redis-server`` on 127.0.0.1."""
    server = RedisServer()
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """libpq conninfo of a throwaway PostgreSQL 15 cluster on 127.0.0.1."""
    server = PostgresServer()
    try:
        server.start()
        yield server.conninfo
    finally:
        server.stop()
