"""A per-connection file lock (``fcntl.flock``): one machine, any number of processes.

The embedded default: right for LocalExecutor deployments and the CLI on the same host. It does
not coordinate workers on different machines; configure ``redis`` or ``postgres`` for that.
The kernel drops a ``flock`` when its holder dies, so a killed process never leaves it stuck.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from typing import TYPE_CHECKING

from airflow_provider_tokenrefresh.errors import LockTimeout
from airflow_provider_tokenrefresh.locks import Lease

if TYPE_CHECKING:
    from collections.abc import Iterator


def default_lock_dir() -> str:
    """``$AIRFLOW_HOME/tokenrefresh-locks`` when AIRFLOW_HOME is set, else a per-user temp dir."""
    home = os.environ.get("AIRFLOW_HOME")
    if home:
        return os.path.join(home, "tokenrefresh-locks")
    return os.path.join(tempfile.gettempdir(), f"tokenrefresh-locks-{os.getuid()}")


class FileRefreshLock:
    """``flock`` on ``<directory>/<hash of key>.lock``.

    :param directory: where lock files live; must be shared by every process that refreshes.
    :param poll_interval: how often a waiter retries the non-blocking ``flock``.
    """

    name = "file"
    lease_ttl = 0.0

    def __init__(self, directory: str | None = None, *, poll_interval: float = 0.01) -> None:
        import socket

        self.directory = directory or default_lock_dir()
        self.poll_interval = poll_interval
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        # Two containers have two disks: the host name and the directory tell their locks apart.
        self.identity = f"file:{socket.gethostname()}:{os.path.realpath(self.directory)}"

    def path_for(self, key: str) -> str:
        """The lock file of ``key``."""
        return os.path.join(self.directory, hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[Lease]:
        """Take the lock within ``timeout`` seconds or raise :class:`LockTimeout`."""
        fd = os.open(self.path_for(key), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"could not take the file refresh lock for {key!r} within {timeout:.0f}s; "
                            "another process is refreshing. No refresh was attempted."
                        ) from None
                    time.sleep(self.poll_interval)
            try:
                yield Lease(key)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
