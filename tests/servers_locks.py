"""Real lock servers for tests: Redis and a throwaway PostgreSQL 15 cluster on 127.0.0.1.

Each server gets a free port, is stopped by PID, and raises with its own output when it cannot
start: a missing server must fail the suite, never skip it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REDIS_SERVER = os.environ.get("TOKENREFRESH_REDIS_SERVER", "/usr/bin/redis-server")
PG_BIN = Path(os.environ.get("TOKENREFRESH_PG_BIN", "/usr/lib/postgresql/15/bin"))

# A port picked by free_port can be taken by someone else before the server binds it.
_START_ATTEMPTS = 3


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries its output."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_process_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# -- Redis ------------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """``redis-server`` in the foreground as our child, without persistence."""

    port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tokenrefresh-redis-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """PID of the server process."""
        assert self.process is not None
        return self.process.pid

    def start(self, ready_timeout: float = 20.0) -> RedisServer:
        """Start on a free port and wait until it answers PING."""
        errors: list[str] = []
        for _ in range(_START_ATTEMPTS):
            self.port = free_port()
            log_path = self.workdir / f"redis-{self.port}.log"
            with open(log_path, "wb") as log:
                self.process = subprocess.Popen(
                    [
                        REDIS_SERVER,
                        "--bind", "127.0.0.1",
                        "--port", str(self.port),
                        "--save", "",
                        "--appendonly", "no",
                        "--daemonize", "no",
                        "--dir", str(self.workdir),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                )  # fmt: skip
            deadline = time.monotonic() + ready_timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._pong():
                    return self
                time.sleep(0.05)
            self._terminate()
            errors.append(
                f"port {self.port}: exit {self.process.returncode}\n{log_path.read_text(errors='replace')}"
            )
        raise ServerStartError("redis-server did not start:\n" + "\n".join(errors))

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _terminate(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """Stop the server by its PID and remove its directory."""
        self._terminate()
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- PostgreSQL -------------------------------------------------------------------------------------


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; run them as the postgres user then.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _run(argv: list[str], what: str, timeout: float = 120.0) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise ServerStartError(f"{what} failed (exit {result.returncode}):\n{output}")
    return output


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster (trust auth, fsync off) in a temp directory."""

    port: int = 0
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tokenrefresh-pg-", dir="/tmp")))
    started: bool = False

    @property
    def data(self) -> Path:
        """The cluster's data directory."""
        return self.base / "data"

    @property
    def conninfo(self) -> str:
        """libpq connection string of the server."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    @property
    def pid(self) -> int:
        """PID of the postmaster, from ``postmaster.pid``."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def start(self) -> PostgresServer:
        """initdb, then start on a free port and wait until it accepts connections."""
        if os.geteuid() == 0:
            # The postgres user must own the cluster directory (and traverse /tmp to reach it).
            shutil.chown(self.base, "postgres", "postgres")
        os.chmod(self.base, 0o755)
        _run(
            _as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                 "--auth=trust", "-E", "UTF8", "--no-locale"]
            ),
            "initdb",
        )  # fmt: skip
        errors: list[str] = []
        for _ in range(_START_ATTEMPTS):
            self.port = free_port()
            log_path = self.base / "log"
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off"
            try:
                _run(
                    _as_postgres(
                        [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(log_path),
                         "-w", "-t", "60", "-o", options, "start"]
                    ),
                    "pg_ctl start",
                )  # fmt: skip
            except ServerStartError as exc:
                log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
                errors.append(f"port {self.port}: {exc}\nserver log:\n{log_text}")
                self._kill_leftover()
                continue
            self.started = True
            return self
        raise ServerStartError("PostgreSQL did not start:\n" + "\n".join(errors))

    def _kill_leftover(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = self.pid
            os.kill(pid, signal.SIGKILL)
            _wait_process_gone(pid, 10)

    def stop(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL by PID if that fails); remove its files."""
        if self.started:
            pid = self.pid
            try:
                _run(
                    _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
                    "pg_ctl stop",
                )
            except (ServerStartError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _wait_process_gone(pid, 10)
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)
