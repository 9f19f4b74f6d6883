"""Two "containers" of one deployment: two AIRFLOW_HOMEs sharing one PostgreSQL metadata database.

Host A and host B each have their own ``AIRFLOW_HOME`` (so their default file locks under
``$AIRFLOW_HOME/tokenrefresh-locks`` are NOT shared, exactly as in production), their own
``AIRFLOW_CONN_*`` environment variables (each host can see a different connection), and the same
``sql_alchemy_conn`` and Fernet key. No Airflow server runs: the product's CLI (``refresh``,
``status``) works in server context and reaches the metadata database directly.

Every process started here is stopped by its PID (its own process group). When ``PYTHONPATH`` is
set it is passed to every child, so ``PYTHONPATH=/some/checkout`` runs the CLI of that checkout
(children run with their home as working directory, so ``python -m`` cannot pick this checkout).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokenrefresh.testing.connections import emulator_connection

PACKAGE = "airflow_provider_tokenrefresh"
CLI_TIMEOUT = 90.0
_READER_PREFIX = "@@tokenrefresh-reader@@"


def _die_with_parent() -> None:
    """In the child: SIGTERM it if the test process dies (no orphans when a run is killed)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Stop one process we started, by its PID (its own process group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):  # a run never finished leaves them open
        if pipe is not None:
            pipe.close()


@dataclass
class CliRun:
    """One finished ``airflow-tokenrefresh`` invocation on one host."""

    host: str
    args: tuple[str, ...]
    returncode: int
    stdout: str = field(repr=False)  # may hold a leaked secret: never in a repr
    stderr: str = field(repr=False)
    started: float
    ended: float

    @property
    def report(self) -> dict[str, Any] | None:
        """The JSON ``refresh`` printed on stdout (a dict), if any."""
        try:
            value = json.loads(self.stdout)
        except ValueError:
            return None
        if isinstance(value, list) and value:
            value = value[0]
        return value if isinstance(value, dict) else None

    @property
    def error(self) -> str:
        """The CLI's own error line(s) (``error: ...`` on stderr), else the end of stderr."""
        lines = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        return "\n".join(lines) if lines else self.stderr[-1500:]

    def describe(self, scrub: Callable[[str], str]) -> str:
        """One line for assertion messages (secrets scrubbed)."""
        what = "ok" if self.returncode == 0 else scrub(self.error.strip())[-600:]
        return f"host {self.host} `{' '.join(self.args)}` exit {self.returncode} ({self.ended - self.started:.1f}s): {what}"


@dataclass
class Host:
    """One container: its own AIRFLOW_HOME and its own view of the connections."""

    name: str
    home: Path
    cluster: Cluster = field(repr=False)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # seeds inside
    package_file: str = ""
    #: This host's code (another release's checkout) instead of the test run's ``PYTHONPATH``.
    pythonpath: str | None = None
    #: Settings of this host only, over the shared ones (e.g. another ``AIRFLOW__CORE__FERNET_KEY``).
    overrides: dict[str, str] = field(default_factory=dict, repr=False)

    def env(self) -> dict[str, str]:
        """Environment of every process of this host."""
        drop = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "_AIRFLOW")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update(self.cluster.shared_env)
        env.update(self.overrides)
        env["AIRFLOW_HOME"] = str(self.home)
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(self.home / "dags")
        for conn_id, fields in self.connections.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(fields)
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        elif os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start a child of this host (own process group, dies with us, cwd = the home)."""
        proc: subprocess.Popen[str] = subprocess.Popen(
            argv,
            env=self.env(),
            cwd=self.home,
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets a kernel flag
            **kwargs,
        )
        self.cluster.processes.append(proc)
        return proc

    def start(self, *args: str) -> Running:
        """Start ``airflow-tokenrefresh ARGS`` on this host; :meth:`Running.finish` collects it."""
        started = time.monotonic()
        proc = self.popen(
            [sys.executable, "-m", PACKAGE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        return Running(self, tuple(args), proc, started)

    def run(self, *args: str) -> CliRun:
        """Run ``airflow-tokenrefresh ARGS`` on this host to completion."""
        return self.start(*args).finish()


@dataclass
class Running:
    """A CLI process still running on a host."""

    host: Host
    args: tuple[str, ...]
    proc: subprocess.Popen[str]
    started: float

    def poll(self) -> int | None:
        return self.proc.poll()

    def finish(self, timeout: float = CLI_TIMEOUT) -> CliRun:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(self.proc)
            out, err = self.proc.communicate()
            err += f"\n[harness] killed after {timeout:.0f}s"
        run = CliRun(
            self.host.name, self.args, self.proc.returncode, out, err, self.started, time.monotonic()
        )
        self.host.cluster.runs.append(run)
        return run


_READER_CODE = f"""
import json, os, sys
out = os.fdopen(os.dup(1), "w", buffering=1)
sys.stdout = sys.stderr  # Airflow may log to stdout: keep the pipe for answers
os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")
import {PACKAGE} as pkg
import airflow.models.variable  # pay Airflow's start-up once, here
from {PACKAGE}.stores.variable import VariableTokenStore
from {PACKAGE}.stores.sealed_variable import SealedVariableTokenStore
out.write({_READER_PREFIX!r} + json.dumps({{"ready": True, "package": pkg.__file__}}) + "\\n")
for line in sys.stdin:
    request = json.loads(line)
    key, sealed = request["key"], request.get("sealed")
    if request.get("raw"):
        from airflow.models.variable import Variable
        try:
            payload = {{"raw": Variable.get(key, default_var=None)}}
        except Exception as exc:
            payload = {{"error": type(exc).__name__}}
        out.write({_READER_PREFIX!r} + json.dumps(payload) + "\\n")
        continue
    try:
        store = SealedVariableTokenStore(sealed_keys={{key: sealed}}) if sealed else VariableTokenStore()
        result = store.read(key)
        r = result[0] if isinstance(result, tuple) else result
        rt = getattr(r, "refresh_token", None)
        payload = {{
            "found": r is not None,
            "rt": rt.get_secret_value() if rt is not None else None,
            "generation": getattr(r, "generation", None),
            "state": getattr(r, "state", None),
        }}
    except Exception as exc:
        payload = {{"error": type(exc).__name__}}
    out.write({_READER_PREFIX!r} + json.dumps(payload) + "\\n")
"""


@dataclass(frozen=True)
class StoredRecord:
    """What the Variable store holds for a connection; the refresh token is kept out of any repr."""

    found: bool
    generation: int | None
    state: str | None
    rt: str = field(repr=False)


class RecordReader:
    """A long-lived child with host A's environment that reads token records from the Variable
    store on request (Airflow's start-up is paid once). Tokens come back over a pipe, never printed."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.log = open(host.home / "reader.err", "w")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        self.proc = host.popen(
            [sys.executable, "-c", _READER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._pumping = threading.Thread(target=self._pump, daemon=True)
        self._pumping.start()
        ready = self._answer(timeout=90)
        self.startup_seconds = time.monotonic() - t0
        self.package_file: str = ready["package"]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(_READER_PREFIX):
                self.lines.put(line[len(_READER_PREFIX) :])
        self.lines.put(None)

    def _answer(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            self.log.flush()
            tail = (self.host.home / "reader.err").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"record reader gave no answer (exit {self.proc.poll()}):\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def read(self, key: str, *, sealed: str | None = None, raw: bool = False) -> dict[str, Any]:
        """The record under ``key`` (from Variable ``sealed`` first, if given), or with ``raw`` the
        Variable's value as Airflow returns it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"key": key, "sealed": sealed, "raw": raw}) + "\n")
        self.proc.stdin.flush()
        answer = self._answer(timeout=30)
        if "error" in answer:
            raise RuntimeError(f"reading Variable {key!r} failed: {answer['error']}")
        return answer

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._pumping.join(timeout=10)  # at EOF once the child is gone; then its pipe can be closed
        _stop(self.proc)
        self.log.close()


@dataclass
class Cluster:
    """Hosts A and B on one PostgreSQL metadata database with one Fernet key."""

    db_url: str
    db_conninfo: str
    shared_env: dict[str, str] = field(repr=False)  # the Fernet key
    root: Path
    processes: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)
    runs: list[CliRun] = field(default_factory=list, repr=False)
    hosts: dict[str, Host] = field(default_factory=dict)
    reader: RecordReader | None = field(default=None, repr=False)

    @property
    def a(self) -> Host:
        return self.hosts["A"]

    @property
    def b(self) -> Host:
        return self.hosts["B"]

    def add_host(self, name: str) -> Host:
        home = self.root / f"host_{name}"
        (home / "dags").mkdir(parents=True, exist_ok=True)
        (home / "logs").mkdir(exist_ok=True)
        host = Host(name, home, self)
        self.hosts[name] = host
        return host

    def stored(self, conn_id: str, *, sealed: bool = False) -> StoredRecord:
        """The connection's record in the Variable store (read by a child with host A's environment;
        ``sealed``: as ``store: sealed_variable`` reads it)."""
        assert self.reader is not None
        answer = self.reader.read(
            f"tokenrefresh_token__{conn_id}", sealed=f"trf_record__{conn_id}" if sealed else None
        )
        return StoredRecord(
            found=bool(answer["found"]),
            generation=answer["generation"],
            state=answer["state"],
            rt=answer["rt"] or "",
        )

    def forget_records(self) -> None:
        """Delete every Variable this provider wrote (each test starts from no record)."""
        import psycopg

        with psycopg.connect(self.db_conninfo, autocommit=True) as db:
            db.execute(
                "DELETE FROM variable WHERE key LIKE %s OR key LIKE %s", ("%tokenrefresh%", "trf_record__%")
            )

    def raw_variable(self, key: str) -> str | None:
        """A Variable's value as the UI and the API read it (Airflow's at-rest encryption removed)."""
        assert self.reader is not None
        value: str | None = self.reader.read(key, raw=True)["raw"]
        return value

    @property
    def in_flight_seconds(self) -> float:
        """How long the vendor holds an answer: long enough for a second CLI to start up meanwhile."""
        startup = self.reader.startup_seconds if self.reader else 5.0
        return min(15.0, max(3.0, 1.5 * startup + 2.0))

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.stop()
        for proc in self.processes:
            _stop(proc)


def _postgres_database(conninfo: str, name: str) -> str:
    """(Re)create database ``name``; return its libpq conninfo."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')
    return re.sub(r"dbname=\S+", f"dbname={name}", conninfo)


def _conninfo_url(conninfo: str) -> str:
    parts = dict(item.split("=", 1) for item in conninfo.split())
    return f"postgresql+psycopg://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"


@pytest.fixture(scope="module")
def cluster(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Hosts A and B (two AIRFLOW_HOMEs), one migrated PostgreSQL metadata DB, one Fernet key."""
    from cryptography.fernet import Fernet

    conninfo = _postgres_database(postgres_server, "airflow")
    url = _conninfo_url(conninfo)
    shared = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
        # Airflow derives an asyncpg URL from the sync one; asyncpg is not installed, psycopg 3 is async.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": url,
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    cluster = Cluster(url, conninfo, shared, tmp_path_factory.mktemp("cluster"))
    try:
        for name in ("A", "B"):
            cluster.add_host(name)
        migrate = cluster.a.popen(
            [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = migrate.communicate(timeout=180)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed ({migrate.returncode}):\n{out[-3000:]}")
        for host in cluster.hosts.values():
            probe = host.popen(
                [sys.executable, "-c", f"import {PACKAGE} as p; print(p.__file__)"],
                stdout=subprocess.PIPE,
            )
            host.package_file = probe.communicate(timeout=60)[0].strip()
        cluster.reader = RecordReader(cluster.a)
        first = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0]
        for host in cluster.hosts.values():
            print(f"\n[cluster] host {host.name}: CLI children import {PACKAGE} from {host.package_file}")
            if first:
                assert host.package_file.startswith(os.path.abspath(first)), (
                    f"PYTHONPATH={first} but host {host.name}'s children import {host.package_file}"
                )
        print(
            f"[cluster] shared DB {url}; reader start-up {cluster.reader.startup_seconds:.1f}s; "
            f"vendor holds answers {cluster.in_flight_seconds:.1f}s"
        )
        yield cluster
    finally:
        cluster.stop()


# -- helpers for the tests -----------------------------------------------------------------------------


def vendor_connection(emulator: Any, refresh_token: str, access_token: str | None = None) -> dict[str, Any]:
    """An ``AIRFLOW_CONN_*`` JSON body for the emulator (default store and lock: no extras)."""
    return {
        "conn_type": f"tokenrefresh_{emulator.name}",
        **emulator_connection(emulator, refresh_token, access_token),
    }


def emulator_secrets(emulator: Any, *extra: str) -> set[str]:
    """Every secret of the vendor: client secret (also as the Basic credential) and every token it
    ever issued (current or retired, access or refresh) or was sent."""
    values = {
        emulator.client_secret,
        base64.b64encode(f"{emulator.client_id}:{emulator.client_secret}".encode()).decode(),
        *extra,
    }
    with emulator._lock:
        values |= set(emulator._refresh_index) | set(emulator._access_index)
    for request in emulator.requests:
        with contextlib.suppress(UnicodeDecodeError):
            values |= set(request.form().get("refresh_token", []))
    return {v for v in values if v and len(v) >= 8}


def presented(emulator: Any, refresh_token: str, since: int = 0) -> int:
    """How many token-endpoint requests (from index ``since``) presented this refresh token."""
    return sum(
        1 for request in emulator.requests[since:] if refresh_token in request.form().get("refresh_token", [])
    )


def scrubber(secret_values: set[str]) -> Callable[[str], str]:
    """Replace every known secret in a text (for assertion messages)."""
    ordered = sorted(secret_values, key=len, reverse=True)

    def scrub(text: str) -> str:
        for value in ordered:
            text = text.replace(value, "<secret>")
        return text

    return scrub


def leaks(runs: list[CliRun], secret_values: set[str]) -> list[str]:
    """Where a secret appeared in a CLI's stdout or stderr (the secret itself is not named)."""
    found = []
    for run in runs:
        for stream in ("stdout", "stderr"):
            text = getattr(run, stream)
            hits = sum(1 for value in secret_values if value in text)
            if hits:
                found.append(f"host {run.host} `{' '.join(run.args)}` {stream}: {hits} secret(s)")
    return found


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
