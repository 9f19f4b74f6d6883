"""A real CeleryExecutor deployment on 127.0.0.1 for tests and ``make cluster-demo``.

api-server, scheduler, dag-processor, triggerer and ``workers`` ``airflow celery worker``s, each
component with its **own** ``AIRFLOW_HOME`` (as containers have: file locks under one home are
invisible to the others), all sharing one PostgreSQL metadata database, one Redis broker, one
Fernet key and one JWT secret. The caller brings PostgreSQL and Redis (any throwaway servers on
127.0.0.1) and gives their URLs; :func:`create_database` makes a fresh database.

Every component runs with ``--skip-serve-logs`` where it has the option (Airflow's log server
binds every interface and no setting changes that); task logs are read from each worker's
``$AIRFLOW_HOME/logs``. Every process is started in its own session (``setsid``) and stopped by
its process group in :meth:`CeleryStack.stop`, which the context manager calls even on failure.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_tokenrefresh.testing.stack import (
    AirflowStack,
    _die_with_parent,
    stop_process_groups,
    warm_execution_api,
)

SERVERS = ("api-server", "scheduler", "dag-processor", "triggerer")
HEALTH = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def create_database(conninfo: str, name: str) -> str:
    """(Re)create database ``name`` on the server of libpq ``conninfo``; return its psycopg2 URL."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')
    parts = dict(item.split("=", 1) for item in conninfo.split())
    user = parts.get("user", "postgres")
    return f"postgresql+psycopg2://{user}@{parts['host']}:{parts['port']}/{name}"


@dataclass
class CeleryStack(AirflowStack):
    """The deployment rooted at ``home`` (each component gets ``home/<component>``).

    :param db_url: SQLAlchemy URL of the metadata DB, driver spelled (``postgresql+psycopg2://``).
    :param broker_url: the Celery broker, ``redis://127.0.0.1:PORT/0``.
    :param workers: how many ``airflow celery worker`` processes (``w1``, ``w2``...).
    :param concurrency: task slots per worker.
    """

    db_url: str = ""
    broker_url: str = ""
    workers: int = 2
    concurrency: int = 8
    _shared: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.db_url.startswith("postgresql+psycopg2://") or not self.broker_url.startswith("redis://"):
            raise ValueError("db_url must be postgresql+psycopg2://..., broker_url redis://...")
        if "0.0.0.0" in self.db_url + self.broker_url:  # noqa: S104 - refusing it
            raise ValueError("everything runs on 127.0.0.1")
        from cryptography.fernet import Fernet

        self._shared = {
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        }

    # -- layout ---------------------------------------------------------------------------------------

    @property
    def components(self) -> tuple[str, ...]:
        """Every component's name, servers first, then ``worker1``..."""
        return (*SERVERS, *(f"worker{n}" for n in range(1, self.workers + 1)))

    @property
    def worker_names(self) -> tuple[str, ...]:
        return tuple(c for c in self.components if c.startswith("worker"))

    def home_of(self, component: str) -> Path:
        """The component's own ``AIRFLOW_HOME``."""
        return self.home / component

    def env(self, component: str = "api-server") -> dict[str, str]:
        """The environment of one component (and of CLI calls made "on its host")."""
        env = super().env()
        home = self.home_of(component)
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(max(32, self.workers * self.concurrency)),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "128",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.db_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
                # Up to 2 x 8 running tasks heartbeat at this interval: 2 s, not the base's 1 s.
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
                **self._shared,
            }
        )
        # A SQLite URL from the base class must never leak in.
        env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC", None)
        return env

    def _secret(self, name: str) -> str:  # the base class's per-home secrets: shared ones instead
        return self._shared.get("AIRFLOW__API_AUTH__JWT_SECRET", "") if name == "jwt" else ""

    def _fernet(self) -> str:
        return self._shared["AIRFLOW__CORE__FERNET_KEY"]

    def output(self, name: str) -> str:
        """What a component printed so far."""
        path = self.home_of(name) / f"{name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- lifecycle ------------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create every home and the metadata database (``airflow db migrate`` from the api-server's)."""
        for component in self.components:
            (self.home_of(component) / "logs").mkdir(parents=True, exist_ok=True)
        self._run_in("api-server", "db", "migrate", timeout=600)

    def _run_in(self, component: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self._airflow_bin(), *args],
            env=self.env(component),
            cwd=self.home_of(component),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
            )
        return result

    def airflow(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command on the api-server's host."""
        if check:
            return self._run_in("api-server", *args, timeout=timeout)
        return subprocess.run(
            [self._airflow_bin(), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def argv(self, component: str) -> list[str]:
        """The command line of one component (never a log server: ``--skip-serve-logs``)."""
        if component == "api-server":
            return [
                self._airflow_bin(),
                "api-server",
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
                "--workers",
                "1",
            ]
        if component in ("scheduler", "triggerer"):
            return [self._airflow_bin(), component, "--skip-serve-logs"]
        if component == "dag-processor":
            return [self._airflow_bin(), "dag-processor"]
        number = component.removeprefix("worker")
        return [
            self._airflow_bin(), "celery", "worker", "--celery-hostname", f"w{number}@%h",
            "--concurrency", str(self.concurrency), "--without-mingle", "--without-gossip", "--skip-serve-logs",
        ]  # fmt: skip

    def start(self, components: tuple[str, ...] | None = None, ready_timeout: float = 240) -> None:
        """Start every component in its own session and wait until all are healthy."""
        for name in components or self.components:
            home = self.home_of(name)
            with open(home / f"{name}.out", "wb") as log:  # the child keeps its own descriptor
                self.processes[name] = subprocess.Popen(
                    self.argv(name),
                    env=self.env(name),
                    cwd=home,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # setsid: its process group is its own
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets a kernel flag
                )
        self.wait_healthy(ready_timeout)

    def wait_healthy(self, timeout: float) -> None:
        """Block until the health endpoint shows all four servers healthy and every worker said ``ready.``."""
        import httpx

        deadline = time.monotonic() + timeout
        missing: list[str] = list(self.components)
        while time.monotonic() < deadline:
            self._check_alive()
            missing = [
                w for w in self.worker_names if not re.search(rf"w{w[6:]}@\S+ ready\.", self.output(w))
            ]
            try:
                health = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=3).json()
                missing += [c for c in HEALTH if (health.get(c) or {}).get("status") != "healthy"]
            except (httpx.HTTPError, ValueError):
                missing.append("api-server")
            if not missing:
                self.warm_seconds = warm_execution_api(
                    self.base_url, lambda: self.output("api-server"), self._check_alive
                )
                return
            time.sleep(0.5)
        tails = "\n".join(f"--- {c}:\n{self.output(c)[-1500:]}" for c in self.components)
        raise RuntimeError(f"deployment not healthy after {timeout}s (waiting for {missing}):\n{tails}")

    def stop(self) -> None:
        """Stop every component by its process group: SIGTERM, then SIGKILL after 30 s."""
        # Task processes a worker forked live in the worker's group: the sweep leaves none behind.
        stop_process_groups(self.processes.values(), grace=30, sweep=True)
        self.processes.clear()

    def __enter__(self) -> CeleryStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading back ---------------------------------------------------------------------------------

    def _passwords_file(self) -> Path:
        """The api-server writes the generated passwords into its own home."""
        return self.home_of("api-server") / "simple_auth_manager_passwords.json.generated"

    def task_logs_by_worker(self, dag_id: str, run_id: str) -> dict[str, int]:
        """How many task-attempt log files of a run each worker's home holds (who ran what)."""
        counts: dict[str, int] = {}
        for worker in self.worker_names:
            root = self.home_of(worker) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
            counts[worker] = sum(1 for p in root.rglob("*.log") if p.is_file()) if root.exists() else 0
        return counts

    def lines_in_run_logs(self, dag_id: str, run_id: str, needle: str) -> dict[str, int]:
        """How many lines containing ``needle`` each component's home holds in the run's task logs
        (workers write task logs, the triggerer its triggers' logs, each into its own home)."""
        counts: dict[str, int] = {}
        for component in (*self.worker_names, "triggerer"):
            root = self.home_of(component) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
            files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
            counts[component] = sum(p.read_text(errors="replace").count(needle) for p in files)
        return counts

    def run_logs(self, dag_id: str, run_id: str) -> str:
        """Every task log of a run, from every worker's home."""
        parts = []
        for worker in self.worker_names:
            root = self.home_of(worker) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
            parts += [p.read_text(errors="replace") for p in sorted(root.rglob("*")) if p.is_file()]
        return "\n".join(parts)

    def cli(self, component: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``airflow-tokenrefresh ARGS`` on a component's host (its home and environment)."""
        exe = str(Path(self._airflow_bin()).with_name("airflow-tokenrefresh"))
        return subprocess.run(
            [exe, *args], env=self.env(component), cwd=self.home_of(component),
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def stored_record(self, conn_id: str, component: str = "api-server") -> dict[str, Any]:
        """``rt`` (the refresh token), ``state``, ``generation`` and ``lock_in_use`` of ``conn_id``'s
        Variable record, read in a child on a component's host (never printed)."""
        import json
        import sys

        code = (
            "import json,sys\n"
            "from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore\n"
            "r,_=VariableTokenStore().read(sys.argv[1])\n"
            "print(json.dumps({'rt': r.refresh_token.get_secret_value() if r and r.refresh_token else None,"
            " 'state': getattr(r, 'state', None), 'generation': getattr(r, 'generation', None),"
            " 'lock_in_use': getattr(r, 'lock_in_use', None)}, default=str))\n"
        )
        env = self.env(component) | {"_AIRFLOW_PROCESS_CONTEXT": "server"}
        out = subprocess.run(
            [sys.executable, "-c", code, f"tokenrefresh_token__{conn_id}"],
            env=env, cwd=self.home_of(component), capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        value: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return value
