"""Shared fixtures: emulated vendors on 127.0.0.1 (started and stopped per test), clients for them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
from airflow_provider_tokenrefresh.dialects import PRESETS
from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
from airflow_provider_tokenrefresh.testing import EMULATORS, VendorEmulator
from tests.servers_locks import PostgresServer, RedisServer
from tests.servers_stores import bao_dev_server, moto_secretsmanager_server

DIALECTS = sorted(PRESETS)

EmulatorFactory = Callable[..., VendorEmulator]


@pytest.fixture
def emulator_factory() -> Iterator[EmulatorFactory]:
    """Start emulators on demand; every one is stopped after the test."""
    started: list[VendorEmulator] = []

    def make(name: str, **kwargs: Any) -> VendorEmulator:
        emulator = EMULATORS[name](**kwargs)
        emulator.start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


_CLIENTS: list[RefreshClient] = []


def client_for(emulator: VendorEmulator, **settings: Any) -> RefreshClient:
    """A refresh client of the emulator's dialect, pointed at it (closed after the test)."""
    settings.setdefault("allow_insecure_http", emulator.base_url.startswith("http://"))
    settings.setdefault("backoff_base", 0.01)
    settings.setdefault("credentials", ClientCredentials(emulator.client_id, emulator.client_secret))
    return closed_after_test(
        RefreshClient(PRESETS[emulator.name], ClientSettings(base_url=emulator.base_url, **settings))
    )


def closed_after_test(client: RefreshClient) -> RefreshClient:
    """``client``, closed when the test ends (for clients a test builds itself)."""
    _CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every client a test made through :func:`client_for` is closed (no sockets left to the GC)."""
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a throwaway ``redis-server`` on 127.0.0.1 (stopped by PID at the end)."""
    server = RedisServer()
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """libpq conninfo of a throwaway PostgreSQL 15 cluster on 127.0.0.1 (stopped at the end)."""
    server = PostgresServer()
    try:
        server.start()
        yield server.conninfo
    finally:
        server.stop()


@pytest.fixture(scope="session")
def bao_server() -> Iterator[tuple[str, str]]:
    """``(url, root token)`` of a throwaway OpenBao dev server (KV v2 at ``secret/``)."""
    with bao_dev_server() as server:
        yield server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint URL of a throwaway moto server for AWS Secrets Manager."""
    with moto_secretsmanager_server() as url:
        yield url


#: Test files that share the session-wide Airflow deployment (tests/airflow/conftest.py), split in
#: two groups: under pytest-xdist each group runs on one worker, so at most two such deployments
#: start, each shared by its files. Every other file is its own group (module fixtures stay whole).
_AIRFLOW_GROUPS = {
    "test_real_airflow.py": "airflow-a",
    "test_failure_modes.py": "airflow-a",
    "test_connection_test_button.py": "airflow-a",
    "test_connection_form_browser.py": "airflow-a",
    "test_long_canaries_real.py": "airflow-b",
    "test_custom_dialect_real.py": "airflow-b",
    "test_metrics_statsd.py": "airflow-b",
    "test_status_exit_codes.py": "airflow-b",
    "test_notifications.py": "airflow-b",
    "test_http_provider_real.py": "airflow-b",
    "test_sealed_store_real.py": "airflow-b",
}


#: Rough seconds per scope in a loaded CI run (``--durations``), to start the longest first;
#: any other scope counts a second per test.
_SCOPE_COST = {
    "airflow-a": 1200,
    "tests/airflow/test_triggerer_crowd.py": 500,
    "airflow-b": 1000,
    "tests/concurrency/test_herd.py": 500,
    "tests/cluster/test_across_homes.py": 250,
    "tests/celery/test_celery_herd.py": 240,
    "tests/concurrency/test_herd_in_task.py": 160,
    "tests/concurrency/test_chaos.py": 140,
    "tests/concurrency/test_leases.py": 100,
    "tests/airflow/test_health_page.py": 95,
    "tests/test_release.py": 60,
    "tests/test_emulate_newcomer.py": 90,
}


def _scope_cost(scope: str, nodeids: Any) -> float:
    return _SCOPE_COST.get(scope, float(len(nodeids)))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist, schedule whole files (module fixtures stay whole), and the files sharing
    the Airflow deployment by their group. (pytest-xdist's own ``loadgroup`` marks do not take
    under pytest 9, whose node ids it can no longer suffix.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByFileAndDeployment(LoadScopeScheduling):  # type: ignore[misc]
        _ordered = False

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            name = path.rsplit("/", 1)[-1]
            if path.startswith("tests/airflow/") and name in _AIRFLOW_GROUPS:
                return _AIRFLOW_GROUPS[name]
            return path

        def _assign_work_unit(self, node: Any) -> None:
            # Longest first (xdist orders scopes by their number of tests, which put the 200-round
            # chaos test last, alone on one worker, while the others sat idle).
            if not self._ordered:
                ordered = sorted(self.workqueue.items(), key=lambda item: -_scope_cost(*item))
                self.workqueue.clear()
                self.workqueue.update(ordered)
                self._ordered = True
            super()._assign_work_unit(node)

    return ByFileAndDeployment(config, log)
