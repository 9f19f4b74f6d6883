"""One real Airflow deployment per test session: api-server, scheduler, dag-processor, triggerer.

(A module may start its own with :func:`running_deployment`: ``test_triggerer_crowd.py`` does, so
that its triggerer's secrets masker does not start out holding every earlier test's values.)

SQLite and LocalExecutor, everything on 127.0.0.1, each component stopped by PID at the end. The
five emulated vendors run in the test process; workers reach them over loopback.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_tokenrefresh.testing import VendorEmulator, serve
from airflow_provider_tokenrefresh.testing.connections import emulator_connection
from airflow_provider_tokenrefresh.testing.stack import AirflowStack
from tests.statsd_receiver import StatsdReceiver

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
DIALECTS = ["oauth2_basic", "oauth2_post", "query_basic", "appid_json", "bearer_json"]


@dataclass
class Deployment:
    """The running stack, its emulators and the canary secrets seeded into connections."""

    stack: AirflowStack
    emulators: dict[str, VendorEmulator]
    seeds: dict[str, Any] = field(default_factory=dict)
    started_in: float = 0.0
    #: Every component (and task) sends Airflow's StatsD metrics here; only tokenrefresh.* is kept.
    statsd: StatsdReceiver | None = None

    def conn_id(self, dialect: str) -> str:
        return f"vendor_{dialect}"

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """A task's ``return_value`` XCom, deserialized, from the REST API."""
        return self.stack.xcom(dag_id, run_id, task_id)

    def seed_connection(self, dialect: str, **extra: Any) -> Any:
        emu = self.emulators[dialect]
        seed = emu.issue_tokens()
        self.seeds[dialect] = seed
        self.stack.put_connection(
            self.conn_id(dialect),
            f"tokenrefresh_{dialect}",
            **emulator_connection(emu, seed.refresh_token, seed.access_token, **extra),
        )
        return seed

    def canaries(self) -> set[str]:
        """Every secret the deployment ever saw: client secrets and all tokens ever issued or sent."""
        values: set[str] = set()
        for emu in self.emulators.values():
            values.add(emu.client_secret)
            for family in emu.families():
                snap = emu.current_tokens(family)
                values |= {snap.access_token, snap.refresh_token}
            for request in emu.requests:
                blob = (
                    request.body.decode(errors="replace") + request.query + " ".join(request.headers.values())
                )
                values |= {word for word in _words(blob) if word.startswith("emu-")}
        for seed in self.seeds.values():
            values |= {seed.access_token, seed.refresh_token}
        return {v for v in values if v and len(v) >= 8}

    def stored_refresh_token(self, dialect: str) -> str | None:
        """The refresh token in the connection's Variable record (read in a child process; never printed)."""
        return self.stored_refresh_token_of(self.conn_id(dialect))

    def stored_refresh_token_of(self, conn_id: str) -> str | None:
        """The refresh token in ``conn_id``'s Variable record (read in a child process; never printed)."""
        return self.stored_refresh_tokens_of([conn_id])[conn_id]

    def stored_refresh_tokens_of(self, conn_ids: list[str], *, sealed: bool = False) -> dict[str, str | None]:
        """Each connection's stored refresh token, read in one child process with the deployment's
        settings (never printed); ``sealed``: as ``store: sealed_variable`` keeps it."""
        import json
        import subprocess
        import sys

        code = (
            "import json,sys\n"
            "from airflow_provider_tokenrefresh.stores.sealed_variable import SealedVariableTokenStore\n"
            "from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore\n"
            "out={}\n"
            "for c in sys.argv[2:]:\n"
            "    k='tokenrefresh_token__'+c\n"
            "    s=SealedVariableTokenStore(sealed_keys={k: 'trf_record__'+c}) if sys.argv[1]=='sealed' else VariableTokenStore()\n"
            "    r,_=s.read(k)\n"
            "    out[c]=r.refresh_token.get_secret_value() if r and r.refresh_token else None\n"
            "print(json.dumps(out))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, "sealed" if sealed else "plain", *conn_ids],
            env=self.stack.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        values: dict[str, str | None] = json.loads(out.stdout.strip().splitlines()[-1])
        return values


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"emu[-+][A-Za-z0-9_/+=-]+", text)


@contextlib.contextmanager
def running_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A fresh deployment (its own home, metadata database and components), stopped on exit."""
    t0 = time.monotonic()
    home = tmp_path_factory.mktemp("airflow_home")
    dags = tmp_path_factory.mktemp("dags")
    for source in [*(ROOT / "dags").glob("*.py"), *(Path(__file__).parent / "dags").glob("*.py")]:
        shutil.copy(source, dags / source.name)
    emulators = dict(zip(DIALECTS, serve(DIALECTS, client_secret="CANARY-client-secret-af3d19"), strict=True))
    statsd = StatsdReceiver()  # a UDP socket on 127.0.0.1; an unread datagram costs nobody anything
    stack = AirflowStack(home=home, dags_folder=dags, extra_env=statsd.airflow_env())
    try:
        stack.migrate()
        stack.start()
        for dag_id in (
            "example_token_consumer",
            "example_token_keeper",
            "careless_consumer",
            "sensor_on_revoked_token",
        ):
            stack.wait_for_dag(dag_id)
        yield Deployment(stack=stack, emulators=emulators, started_in=time.monotonic() - t0, statsd=statsd)
    finally:
        stack.stop()
        for emu in emulators.values():
            emu.stop()
        statsd.close()


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The session's deployment, shared by the files of one xdist group (``tests/conftest.py``)."""
    with running_deployment(tmp_path_factory) as running:
        yield running
