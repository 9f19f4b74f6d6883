"""FileTokenStore.watch: herd waiters learn of a new record without the lock and without parsing
(inotify on Linux, a stat poll elsewhere); both paths are exercised."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from airflow_provider_tokenrefresh.stores import FileTokenStore
from airflow_provider_tokenrefresh.tokens import TokenRecord


def _record(generation: int) -> TokenRecord:
    return TokenRecord(refresh_token=SecretStr("r" * 24), generation=generation, seed_fingerprint="fp")


@pytest.fixture(params=["inotify", "poll"])
def watcher(request: pytest.FixtureRequest, tmp_path: Path) -> FileTokenStore:
    store = FileTokenStore(str(tmp_path / "store"))
    if request.param == "poll":
        store.__dict__["_events"] = None  # as where inotify is not available
    else:
        assert store._notifier() is not None, "inotify should be available on Linux"
    request.addfinalizer(store.close)
    return store


def test_a_write_by_another_process_wakes_the_watcher(watcher: FileTokenStore, tmp_path: Path) -> None:
    writer = FileTokenStore(str(tmp_path / "store"))
    _, version = writer.read("k")
    version = writer.write("k", _record(1), version)
    record, _ = watcher.read("k")
    assert record is not None and record.generation == 1
    changed: list[bool] = []
    thread = threading.Thread(target=lambda: changed.append(watcher.watch("k", 30)))
    thread.start()
    writer.write("k", _record(2), version)
    thread.join(timeout=30)
    assert changed == [True]
    record, _ = watcher.read("k")
    assert record is not None and record.generation == 2


def test_no_change_means_a_timeout(watcher: FileTokenStore, tmp_path: Path) -> None:
    _, version = watcher.read("k")
    watcher.write("k", _record(1), version)
    watcher.read("k")
    other = FileTokenStore(str(tmp_path / "store"))
    _, other_version = other.read("other-key")
    done = threading.Event()

    def elsewhere() -> None:  # activity in the directory that is not this record
        other.write("other-key", _record(5), other_version)
        done.set()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    assert watcher.watch("k", 0.3) is False
    thread.join(timeout=30)
    assert done.is_set()


def test_a_change_before_the_watch_began_is_seen_at_once(watcher: FileTokenStore, tmp_path: Path) -> None:
    _, version = watcher.read("k")
    version = watcher.write("k", _record(1), version)
    watcher.read("k")
    FileTokenStore(str(tmp_path / "store")).write("k", _record(2), version)  # between read and watch
    assert watcher.watch("k", 30) is True


def test_of_a_write_only_the_rename_reaches_the_watchers(tmp_path: Path) -> None:
    """A write opens and closes its CAS guard, creates and closes its temporary file, then renames
    it over the record: only the rename may wake a herd's watchers (each wake-up of 63 waiting
    processes costs CPU the refreshing one needs), so only the rename is an event."""
    import os
    import struct

    store = FileTokenStore(str(tmp_path / "store"))
    events = store._notifier()
    assert events is not None, "inotify should be available on Linux"
    try:
        _, version = store.read("k")
        store.write("k", _record(1), version)
        raw = os.read(events.fd, 65536)  # the kernel queued every event before write() returned
        seen = []
        while raw:
            _wd, mask, _cookie, length = struct.unpack_from("iIII", raw)
            name = raw[16 : 16 + length].rstrip(b"\0").decode()
            seen.append((mask, name))
            raw = raw[16 + length :]
        assert [name for _, name in seen] == [os.path.basename(store._path("k"))], seen
        assert all(mask & 0x80 for mask, _ in seen), seen  # IN_MOVED_TO
    finally:
        store.close()


def test_the_watch_opens_without_running_ldconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ctypes.util.find_library`` runs ``ldconfig`` in a subprocess (3 ms): a herd of 64 fresh
    processes did that at once on their first watch, and it was most of the first round's tail
    (p99 256 -> 105 ms at N=64 without it). glibc's own name is tried first."""
    import ctypes.util

    def no_subprocess(name: str) -> str:
        raise AssertionError(f"find_library({name!r}) was called")

    monkeypatch.setattr(ctypes.util, "find_library", no_subprocess)
    store = FileTokenStore(str(tmp_path / "store"))
    try:
        assert store._notifier() is not None
    finally:
        store.close()


WATCH_IN_A_FRESH_PROCESS = """
import sys
from airflow_provider_tokenrefresh.stores import FileTokenStore
store = FileTokenStore(sys.argv[1])
before = set(sys.modules)
assert store._notifier() is not None, "inotify should be available on Linux"
store.close()
print(" ".join(sorted(set(sys.modules) - before)))
"""


def test_the_first_watch_of_a_fresh_process_imports_neither_ctypes_util_nor_subprocess(
    tmp_path: Path,
) -> None:
    """A herd waiter's first watch is on the clock, in every fresh process of the herd at once:
    ``import ctypes.util`` (only the fallback needs it) imported ``subprocess`` too, about 2 ms of
    a waiter's 4 ms of CPU in its first round."""
    import subprocess
    import sys

    imported = subprocess.run(
        [sys.executable, "-c", WATCH_IN_A_FRESH_PROCESS, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert "ctypes.util" not in imported and "subprocess" not in imported, imported
