"""Real Airflow components on 127.0.0.1 for tests and the demo: api-server, scheduler,
dag-processor, triggerer (LocalExecutor, SQLite), each a process stopped by its PID.

Never ``airflow standalone``: its log servers bind every interface. Here the scheduler and the
triggerer run with ``--skip-serve-logs`` and task logs are read from ``$AIRFLOW_HOME/logs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import httpx

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it if the process that started it dies (no orphans even
    when a test run is killed before its teardown)."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the normal stop() still applies
        pass


def stop_process_groups(
    processes: Iterable[subprocess.Popen[bytes]], *, grace: float, sweep: bool = False
) -> None:
    """SIGTERM each process's group, wait up to ``grace`` seconds in all, then SIGKILL the rest.

    :param sweep: also SIGKILL each group afterwards (children a component forked live in it).
    """
    procs = list(processes)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if sweep:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


WARM_BUDGET = 300.0
"""Seconds the execution API's first answer may take. It does not share the health wait's deadline:
a CI run whose health page took most of that deadline left the warm-up 10 s, and it timed out."""


def warm_execution_api(
    base_url: str,
    output: Callable[[], str] = lambda: "",
    check_alive: Callable[[], None] = lambda: None,
    budget: float = WARM_BUDGET,
    attempt_timeout: float = 60.0,
) -> float:
    """Send the execution API its first request now, before any task does; return the seconds it took.

    Cadwyn builds the execution API's versioned routers on the first request it sees, on the
    api-server's event loop: about 4 s of CPU on a quiet machine, and a CI run on 2 cores once saw
    it take 52 s. Every request waits meanwhile, and a task whose ``PATCH .../run`` times out 5
    times is killed (the custom-dialect tests failed so). One ``GET /execution/health`` pays that
    cost while nothing else waits on it. A request that times out is sent again (the build goes on
    in the server) until ``budget`` seconds have passed; then this fails loudly.

    :param output: what the api-server printed so far, for the error.
    :param check_alive: raises if a component has exited (checked between attempts).
    :param attempt_timeout: the read timeout of one attempt.
    """
    import httpx

    started = time.monotonic()
    deadline = started + budget
    last: str = "no attempt"
    while (left := deadline - time.monotonic()) > 0:
        check_alive()
        try:
            response = httpx.get(f"{base_url}/execution/health", timeout=min(attempt_timeout, max(left, 0.1)))
        except httpx.TimeoutException as exc:
            last = f"timed out ({type(exc).__name__})"
            continue
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
            continue
        if response.status_code == 200:
            return time.monotonic() - started
        last = f"answered {response.status_code}"
        time.sleep(0.5)
    raise RuntimeError(
        f"execution API /execution/health not answered 200 within {budget:.0f}s (last: {last}):\n"
        f"{output()[-3000:]}"
    )


@dataclass
class AirflowStack:
    """A throwaway Airflow deployment in ``home`` serving ``dags_folder``.

    :param home: ``AIRFLOW_HOME``; SQLite database, logs and config live here.
    :param dags_folder: the DAG files to serve.
    :param extra_env: more environment for every component (and tasks they run).
    """

    home: Path
    dags_folder: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _token: str | None = None
    warm_seconds: float = 0.0
    """How long the execution API's first answer took (set by :meth:`wait_ready`)."""

    @property
    def base_url(self) -> str:
        """The api-server's URL."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment every component and CLI call runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt"),
                "AIRFLOW__CORE__FERNET_KEY": self._fernet(),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                # New files are found within 5 s; a file already parsed is parsed again only after
                # 5 min (the test DAGs do not change, and re-parsing every 5 s cost CPU on 2 cores).
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
                "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
                "AIRFLOW__TRIGGERER__CAPACITY": "100",
                # A task's supervisor notices the task process has exited at its next wake-up when
                # the sockets' EOF came first (about half the tasks here): 5 s by default. That lag
                # also delays the executor's report of a deferral past the trigger's event, and the
                # scheduler then fails the resumed task (apache/airflow#66374 family; seen in CI).
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            }
        )
        env.update(self.extra_env)
        return env

    def _secret(self, name: str) -> str:
        path = self.home / f".{name}"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
        return path.read_text()

    def _fernet(self) -> str:
        path = self.home / ".fernet"
        if not path.exists():
            from cryptography.fernet import Fernet

            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(Fernet.generate_key().decode())
        return path.read_text()

    def _airflow_bin(self) -> str:
        return str(Path(sys.executable).with_name("airflow"))

    def airflow(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command in this deployment."""
        result = subprocess.run(
            [self._airflow_bin(), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
            )
        return result

    def migrate(self) -> None:
        """Create the metadata database."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self.airflow("db", "migrate")

    def start(self, components: tuple[str, ...] = COMPONENTS, ready_timeout: float = 300) -> None:
        """Start the components (each in its own process group) and wait for the api-server.

        :param ready_timeout: seconds the health page may take. A component that exits fails the
            wait at once; 120 s was not enough for a CI run booting three deployments on 2 cores.
        """
        for name in components:
            args = [self._airflow_bin(), name]
            if name == "api-server":
                args += ["--port", str(self.port), "--host", "127.0.0.1"]
            if name in ("scheduler", "triggerer"):
                args.append("--skip-serve-logs")
            with open(self.home / f"{name}.out", "wb") as log:  # the child keeps its own descriptor
                self.processes[name] = subprocess.Popen(
                    args,
                    env=self.env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets a kernel flag
                )
        if "api-server" in components:
            self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float) -> None:
        """Block until ``/api/v2/monitor/health`` answers, or fail loudly with the component's output."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"api-server not ready after {timeout}s:\n{self.output('api-server')[-3000:]}")
        self.warm_seconds = warm_execution_api(
            self.base_url, lambda: self.output("api-server"), self._check_alive
        )

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited with {proc.returncode}:\n{self.output(name)[-3000:]}"
                )

    def output(self, name: str) -> str:
        """What a component printed so far."""
        path = self.home / f"{name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop every component by PID (SIGTERM to its process group, then SIGKILL)."""
        stop_process_groups(self.processes.values(), grace=20)
        self.processes.clear()

    # -- REST API -------------------------------------------------------------------------------------

    def _passwords_file(self) -> Path:
        """Where the api-server's SimpleAuthManager wrote the generated passwords."""
        return self.home / "simple_auth_manager_passwords.json.generated"

    def token(self) -> str:
        """A bearer token for the api-server (SimpleAuthManager user ``admin``)."""
        if self._token is None:
            import httpx

            passwords = json.loads(self._passwords_file().read_text())
            response = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": "admin", "password": passwords["admin"]},
                timeout=10,
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self) -> httpx.Client:
        """An authenticated client for the api-server."""
        import httpx

        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token()}"}, timeout=30
        )

    def put_connection(self, conn_id: str, conn_type: str, **fields: Any) -> None:
        """Create or replace a connection through the REST API."""
        body = {"connection_id": conn_id, "conn_type": conn_type, **fields}
        if isinstance(body.get("extra"), dict):
            body["extra"] = json.dumps(body["extra"])
        with self.api() as api:
            for attempt in range(3):  # SQLite answers 500 ("database is locked") under write load
                api.delete(f"/api/v2/connections/{conn_id}")
                response = api.post("/api/v2/connections", json=body)
                if response.status_code < 500:
                    break
                time.sleep(0.5 * (attempt + 1))
            if response.status_code >= 300:
                raise RuntimeError(f"creating connection {conn_id} failed: HTTP {response.status_code}")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Block until the dag-processor has serialized ``dag_id``."""
        deadline = time.monotonic() + timeout
        with self.api() as api:
            while time.monotonic() < deadline:
                self._check_alive()
                if api.get(f"/api/v2/dags/{dag_id}").status_code == 200:
                    return
                time.sleep(0.5)
        raise RuntimeError(
            f"DAG {dag_id} not parsed within {timeout}s:\n{self.output('dag-processor')[-3000:]}"
        )

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Unpause and trigger ``dag_id``; return the run id."""
        with self.api() as api:
            api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
            response = api.post(
                f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
            )
            response.raise_for_status()
            run_id: str = response.json()["dag_run_id"]
            return run_id

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Block until the run finishes; return its state.

        One poll that the api-server does not answer within the client's 30 s (SQLite locked by a
        crowd of tasks on 2 cores: seen once in CI) is asked again while the deadline allows.
        """
        import httpx

        deadline = time.monotonic() + timeout
        slow_polls = 0
        with self.api() as api:
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    answer = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
                except httpx.TimeoutException:
                    slow_polls += 1
                    continue
                state: str = answer.json()["state"]
                if state in ("success", "failed"):
                    return state
                time.sleep(1)
        raise RuntimeError(
            f"run {dag_id}/{run_id} not finished within {timeout}s ({slow_polls} poll(s) unanswered in 30 s)"
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """A task's ``return_value`` XCom, deserialized, from the REST API."""
        with self.api() as api:
            response = api.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                params={"deserialize": True},
            )
        response.raise_for_status()
        return response.json()["value"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Task instances of a run (REST API)."""
        with self.api() as api:
            response = api.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}
            )
            response.raise_for_status()
            items: list[dict[str, Any]] = response.json()["task_instances"]
            return items

    def explain(self, dag_id: str, run_id: str, tail: int = 4000) -> str:
        """Task states of a run and the end of each failed task's log (for assertion messages)."""
        lines = []
        for ti in self.task_instances(dag_id, run_id):
            lines.append(f"{ti['task_id']}: {ti['state']}")
            if ti["state"] not in ("success", "skipped"):
                root = (
                    self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
                )
                text = "\n".join(
                    p.read_text(errors="replace") for p in sorted(root.rglob("*")) if p.is_file()
                )
                lines.append(text[-tail:])
        return "\n".join(lines)

    def run_logs(self, dag_id: str, run_id: str) -> str:
        """Every task log file of a run, concatenated (read from ``$AIRFLOW_HOME/logs``)."""
        root = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        return "\n".join(p.read_text(errors="replace") for p in sorted(root.rglob("*")) if p.is_file())

    def all_logs(self) -> str:
        """Every log file of the deployment plus the components' own output."""
        parts = [
            p.read_text(errors="replace") for p in sorted((self.home / "logs").rglob("*")) if p.is_file()
        ]
        parts += [self.output(name) for name in self.processes or COMPONENTS]
        return "\n".join(parts)
