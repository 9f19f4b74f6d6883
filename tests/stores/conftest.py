"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def variable_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A migrated SQLite metadata database and the child process serving Variable stores on it."""
    from .variable_server import VariableStoreServer

    server = VariableStoreServer(tmp_path_factory.mktemp("variable_store_home"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
