"""Downstream auth: the bearer header on vendor API calls, one refresh and one retry on a 401."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import requests

from airflow_provider_tokenrefresh.auth import RequestsTokenAuth, TokenAuth
from airflow_provider_tokenrefresh.errors import TransientRefreshError
from airflow_provider_tokenrefresh.testing import ManualClock

from .conftest import EmulatorFactory
from .keeperhelp import make_keeper


def _expired_at_the_vendor(emulator_factory: EmulatorFactory, tmp_path: Path):  # type: ignore[no-untyped-def]
    clock = ManualClock(time.time())
    emu = emulator_factory("oauth2_basic", clock=clock)
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token)
    keeper.get_valid_token(min_ttl=60)
    # The vendor now considers the access token expired although our record says otherwise
    # (clock skew, early revocation): only a 401 can tell us.
    clock.advance(emu.access_ttl + 1)
    return emu, keeper


def test_httpx_auth_refreshes_once_on_401_and_retries(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu, keeper = _expired_at_the_vendor(emulator_factory, tmp_path)
    with httpx.Client(base_url=emu.base_url, auth=TokenAuth(keeper, min_ttl=60)) as client:
        response = client.get(emu.sample_path)
    assert response.status_code == 200
    assert emu.counters.get("sample:unauthorized") == 1
    assert emu.counters.get("sample:ok") == 1
    assert emu.refresh_requests == 2  # the initial refresh and the one after the 401


def test_many_401s_on_one_generation_cause_one_refresh(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu, keeper = _expired_at_the_vendor(emulator_factory, tmp_path)
    stale = keeper.get_valid_token(min_ttl=60)
    first = TokenAuth(keeper, min_ttl=60)
    second = TokenAuth(keeper, min_ttl=60)
    assert first._after_401(stale).generation == stale.generation + 1
    assert second._after_401(stale).generation == stale.generation + 1  # the newer one is used, not made
    assert emu.refresh_requests == 2


def test_async_httpx_auth(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emu, keeper = _expired_at_the_vendor(emulator_factory, tmp_path)

    async def call() -> int:
        async with httpx.AsyncClient(base_url=emu.base_url, auth=TokenAuth(keeper, min_ttl=60)) as client:
            return (await client.get(emu.sample_path)).status_code

    assert asyncio.run(call()) == 200
    assert emu.refresh_requests == 2


def test_requests_auth_refreshes_once_on_401_and_retries(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu, keeper = _expired_at_the_vendor(emulator_factory, tmp_path)
    response = requests.get(emu.sample_url, auth=RequestsTokenAuth(keeper, min_ttl=60), timeout=10)
    assert response.status_code == 200
    assert len(response.history) == 1 and response.history[0].status_code == 401
    assert emu.refresh_requests == 2


def test_a_second_401_is_returned_not_looped(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emu, keeper = _expired_at_the_vendor(emulator_factory, tmp_path)
    emu.inject("http_500")  # the refresh after the 401 fails ...
    with (
        httpx.Client(base_url=emu.base_url, auth=TokenAuth(keeper, min_ttl=60)) as client,
        pytest.raises(TransientRefreshError, match="test_oauth2_basic"),
    ):  # ... and that failure surfaces, named, without a retry loop
        client.get(emu.sample_path)
    assert emu.counters.get("sample:unauthorized") == 1
    assert emu.refresh_requests == 2
