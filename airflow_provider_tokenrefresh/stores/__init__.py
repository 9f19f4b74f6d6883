"""Where token records live: a small protocol and its implementations.

``read(key) -> (record | None, version)`` and ``write(key, record, expected_version) -> version``.
A write whose ``expected_version`` no longer matches raises
:class:`~airflow_provider_tokenrefresh.errors.StoreConflict` (compare-and-set where the backend
has it; a read-compare-write under the refresh lock where it does not).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Protocol, runtime_checkable

#: What an unreadable stored value's error advises (secrets stores): it may hold the only live
#: refresh token, so never "delete it".
KEEP = (
    "do not delete it while it may hold the only live refresh token: check which program wrote it, or set "
    "extra 'store_path' to another key and re-seed the connection"
)

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.tokens import TokenRecord

#: Opaque version of a stored record; ``None`` means "no record yet".
Version = str | int | None


@runtime_checkable
class TokenStore(Protocol):
    """Persistence for token records."""

    #: Short name used in messages and the ``store`` extra (``variable``, ``vault``, ``aws``).
    name: str
    #: Whether ``write`` is a real compare-and-set on the server (then the intent write itself is
    #: the mutual exclusion); ``False`` makes the keeper claim by write, settle, read back.
    atomic: bool

    def read(self, key: str) -> tuple[TokenRecord | None, Version]:
        """Return the record under ``key`` and its version, or ``(None, None)``."""
        ...

    def write(self, key: str, record: TokenRecord, expected_version: Version) -> Version:
        """Store ``record`` if the current version is still ``expected_version``; return the new version."""
        ...


class FileTokenStore:
    """Records as JSON files in a directory (one machine; for the CLI on a laptop and tests).

    Writes go to a temporary file that is renamed over the old one, so a crash never leaves a
    half-written record. The version is the SHA-256 of the file's content.
    """

    name = "file"
    atomic = True

    def __init__(self, directory: str) -> None:
        import os

        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        #: key -> (inode, mtime) of the file the last read of this instance saw (for watch()).
        self._seen: dict[str, tuple[int, int] | None] = {}
        #: key -> its file's path (a refresh asks for it four times; computing it hashes the key).
        self._paths: dict[str, str] = {}

    def _path(self, key: str) -> str:
        path = self._paths.get(key)
        if path is None:
            import hashlib
            import os

            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:80]
            digest = hashlib.sha256(key.encode()).hexdigest()[:8]
            path = self._paths[key] = os.path.join(self.directory, f"{safe}-{digest}.json")
        return path

    def _read_bytes(self, path: str) -> tuple[bytes, tuple[int, int]] | None:
        """The file's content and (inode, mtime) of the file it came from (writes rename), or
        ``None``. Plain ``os`` calls: no buffered file object (its ``isatty`` and ``lseek``), as
        every system call here is a GIL hand-over for a fan-out's threads."""
        import os

        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            data = os.read(fd, st.st_size + 1)
            if len(data) > st.st_size:  # grew after the fstat (writes replace files: not ours)
                chunks = [data]
                while chunk := os.read(fd, 65536):
                    chunks.append(chunk)
                data = b"".join(chunks)
        finally:
            os.close(fd)
        return data, (st.st_ino, st.st_mtime_ns)

    def read(self, key: str) -> tuple[TokenRecord | None, Version]:
        """Return the record under ``key`` and its content hash."""
        import hashlib

        from airflow_provider_tokenrefresh.tokens import TokenRecord

        found = self._read_bytes(self._path(key))
        if found is None:
            self._seen[key] = None
            return None, None
        payload, self._seen[key] = found
        try:
            record = TokenRecord.from_storage_json(payload)
        except ValueError:
            # pydantic's message would quote the file's start, secrets included.
            from airflow_provider_tokenrefresh.errors import ConfigurationError

            raise ConfigurationError(
                f"record {key!r} in the file store ({self._path(key)}) cannot be read as a token record "
                "(another program wrote it, or it was cut short); do not delete it while it may hold the only "
                "live refresh token: restore it, or set extra 'store_path' to another key and re-seed"
            ) from None
        return record, hashlib.sha256(payload).hexdigest()

    def _stat(self, key: str) -> tuple[int, int] | None:
        import os

        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def watch(self, key: str, timeout: float) -> bool:
        """Wait until the record under ``key`` is no longer the one this instance last read (a
        rename put another file there), at most ``timeout`` seconds; whether it changed.

        What waiters do instead of queueing on the lock. On Linux the kernel says when (inotify on
        the directory: no polling, woken within a millisecond of the rename); elsewhere a ``stat``
        every 2-10 ms. Either way nothing is parsed until the record changed.
        """
        import time

        before = self._seen.get(key)
        deadline = time.monotonic() + timeout
        notify = self._notifier()
        pause = 0.002
        while True:
            if notify is not None:
                notify.drain()
            if self._stat(key) != before:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if notify is not None:
                notify.wait(remaining)
            else:
                time.sleep(min(pause, remaining))
                pause = min(pause * 1.5, 0.01)

    def _notifier(self) -> _DirectoryEvents | None:
        if "_events" not in self.__dict__:
            self._events = _DirectoryEvents.open(self.directory)
        return self._events

    def close(self) -> None:
        """Release the directory watch, if one was opened (the store stays usable)."""
        events = self.__dict__.pop("_events", None)
        if events is not None:
            events.close()

    def write(self, key: str, record: TokenRecord, expected_version: Version) -> Version:
        """Replace the record atomically if its content hash is still ``expected_version``.

        The compare and the rename happen under an exclusive ``flock`` of a per-key lock file, so
        this is a real compare-and-set among processes of one machine.
        """
        import fcntl
        import hashlib
        import os

        from airflow_provider_tokenrefresh.errors import StoreConflict

        path = self._path(key)
        guard = os.open(path + ".cas", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            # The compare needs the hash, not the record: the content is not parsed again here.
            found = self._read_bytes(path)
            current = None if found is None else hashlib.sha256(found[0]).hexdigest()
            if current != expected_version:
                raise StoreConflict(f"record {key!r} changed since it was read (file store)")
            payload = record.to_storage_json().encode()
            # One temporary name per record is enough: every writer holds the guard's flock.
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                try:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return hashlib.sha256(payload).hexdigest()
        finally:
            os.close(guard)


class _DirectoryEvents:
    """Linux inotify on one directory (files renamed into it or deleted), via ctypes.

    A record changes only by a rename (:meth:`FileTokenStore.write`), so that is what wakes a
    watcher: not the writer's temporary file being created and closed, nor its CAS guard file
    being closed, which would wake every watcher of a herd three more times per write (each then
    finds its record unchanged by a ``stat``). A record edited in place by hand is seen when the
    watch slice ends. ``open`` returns ``None`` where inotify is not available; callers then poll.
    """

    _IN_MOVED_TO = 0x00000080
    _IN_DELETE = 0x00000200
    _IN_NONBLOCK = 0o4000
    _IN_CLOEXEC = 0o2000000

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, directory: str) -> _DirectoryEvents | None:
        import ctypes
        import os
        import sys

        if not sys.platform.startswith("linux"):
            return None
        try:
            try:  # glibc's name first: find_library runs ldconfig in a subprocess (3 ms, and in a
                # herd of 64 fresh processes on 2 cores, a burst of 64 subprocesses at once); even
                # importing ctypes.util costs 2 ms in a fresh process (it imports subprocess)
                libc = ctypes.CDLL("libc.so.6", use_errno=True)
            except OSError:
                import ctypes.util

                libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = libc.inotify_init1(cls._IN_NONBLOCK | cls._IN_CLOEXEC)
            if fd < 0:
                return None
            mask = cls._IN_MOVED_TO | cls._IN_DELETE
            if libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
                os.close(fd)
                return None
        except (OSError, AttributeError):
            return None
        return cls(fd)

    def drain(self) -> None:
        """Forget the events so far (the caller looks at the file itself next)."""
        import os

        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> None:
        """Until something happened in the directory, or ``timeout`` seconds."""
        import select

        select.select([self.fd], [], [], max(0.0, timeout))

    def close(self) -> None:
        """Stop watching."""
        import os

        os.close(self.fd)
