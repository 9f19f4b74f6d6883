"""Building real keepers for tests: emulator + file store + file lock, all on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper
from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
from airflow_provider_tokenrefresh.stores import FileTokenStore, Version
from airflow_provider_tokenrefresh.testing import VendorEmulator
from airflow_provider_tokenrefresh.tokens import TokenRecord

from .conftest import client_for


class FlakyStore(FileTokenStore):
    """A real file store whose next ``fail_writes`` writes raise (a store outage, injected)."""

    def __init__(self, directory: str, fail_writes: int = 0, *, succeed_first: int = 0) -> None:
        super().__init__(directory)
        self.fail_writes = fail_writes
        self.succeed_first = succeed_first
        self.write_attempts = 0

    def write(self, key: str, record: TokenRecord, expected_version: Version) -> Version:
        self.write_attempts += 1
        if self.write_attempts > self.succeed_first and self.fail_writes > 0:
            self.fail_writes -= 1
            raise OSError("injected store outage")
        return super().write(key, record, expected_version)


def make_keeper(
    emu: VendorEmulator,
    tmp: Path,
    seed_refresh: str,
    seed_access: str | None = None,
    *,
    store: FileTokenStore | None = None,
    key: str = "conn",
    lock_dir: str = "locks",
    **kwargs: Any,
) -> TokenKeeper:
    """A keeper for ``emu`` with a file store and file lock under ``tmp``."""
    TokenKeeper.clear_cache()
    # clear_cache() forgets cached records only: rotated records an earlier test could not store
    # (class-level, keyed by store key) would otherwise be flushed into this test's store.
    with TokenKeeper._guard:
        TokenKeeper._unsaved.clear()
    kwargs.setdefault("write_backoff", 0.001)
    return TokenKeeper(
        key,
        client_for(emu),
        store or FileTokenStore(str(tmp / "store")),
        FileRefreshLock(str(tmp / lock_dir)),
        Seed(seed_refresh, seed_access),
        conn_id=f"test_{emu.name}",
        **kwargs,
    )
