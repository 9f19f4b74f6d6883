"""Tokens are used for their life, whatever the lifetime: the margin never exceeds half of it.

A manual clock drives both sides (the emulated vendor and the keepers), so a token's whole life
runs in milliseconds. Several "processes" (keepers with no shared in-process cache) ask for a token
every ``lifetime / 20`` seconds with the default ``min_ttl`` (300 s, longer than these tokens live).
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
from airflow_provider_tokenrefresh.dialects import PRESETS
from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
from airflow_provider_tokenrefresh.keeper import DEFAULT_MIN_TTL, Seed, TokenKeeper
from airflow_provider_tokenrefresh.lease import effective_margin
from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
from airflow_provider_tokenrefresh.stores import FileTokenStore
from airflow_provider_tokenrefresh.testing import ManualClock

from .conftest import EmulatorFactory, closed_after_test

PROCESSES = 3
STEPS_PER_LIFE = 20
LIVES = 10


@pytest.mark.parametrize("lifetime", [300.0, 120.0, 30.0])
def test_one_refresh_per_lifetime_minus_the_effective_margin(
    lifetime: float, emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    clock = ManualClock()
    emu = emulator_factory("bearer_json", access_ttl=lifetime, refresh_ttl=3600, clock=clock)
    seed = emu.issue_tokens()

    def now() -> datetime:
        return datetime.fromtimestamp(clock(), UTC)

    def keeper() -> TokenKeeper:
        client = closed_after_test(
            RefreshClient(
                PRESETS["bearer_json"],
                ClientSettings(
                    base_url=emu.base_url, credentials=ClientCredentials(None, None), allow_insecure_http=True
                ),
                clock=now,
            )
        )
        return TokenKeeper(
            "conn",
            client,
            FileTokenStore(str(tmp_path / "store")),
            FileRefreshLock(str(tmp_path / "locks")),
            Seed(seed.refresh_token, seed.access_token),
            conn_id="short_lived",
            clock=now,
        )

    keepers = [keeper() for _ in range(PROCESSES)]
    step = lifetime / STEPS_PER_LIFE
    margin = effective_margin(DEFAULT_MIN_TTL, lifetime)
    assert margin == lifetime / 2
    refreshed_at: list[float] = []
    last_generation = -1
    start = clock()
    for _ in range(LIVES * STEPS_PER_LIFE):
        for k in keepers:
            TokenKeeper.clear_cache()  # separate processes: only the store is shared
            record = k.get_valid_token()  # the default min_ttl (300 s)
            assert record.access_ttl(now()) >= margin  # never handed a token below the margin
            if record.generation != last_generation:
                refreshed_at.append(clock() - start)
                last_generation = record.generation
        clock.advance(step)
    # The vendor's count, not the keeper's: one refresh at the start, then one per period, where a
    # period is the first poll after half the lifetime has passed.
    period = (math.floor(margin / step + 1e-9) + 1) * step
    assert emu.refresh_requests == len(refreshed_at)
    assert [round(b - a, 6) for a, b in itertools.pairwise(refreshed_at)] == [round(period, 6)] * (
        len(refreshed_at) - 1
    )
    assert emu.refresh_requests == 1 + math.floor((LIVES * STEPS_PER_LIFE - 1) * step / period + 1e-9)
    assert emu.counters.get("invalid_grant", 0) == 0


def test_long_lived_tokens_keep_the_full_margin() -> None:
    assert effective_margin(300, 7200) == 300
    assert effective_margin(300, None) == 300  # lifetime unknown (a seed): the margin as configured
    assert effective_margin(300, 300) == 150
