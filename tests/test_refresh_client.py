"""The refresh client against real emulated vendors: success, rotation, retries only where safe."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
from airflow_provider_tokenrefresh.dialects import PRESETS
from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
from airflow_provider_tokenrefresh.errors import (
    AmbiguousRejection,
    ConfigurationError,
    MalformedResponseError,
    RefreshOutcomeUnknown,
    RefreshTokenRejected,
    TransientRefreshError,
)

from .conftest import DIALECTS, EmulatorFactory, client_for, closed_after_test

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.testing import VendorEmulator


@pytest.mark.parametrize("name", DIALECTS)
def test_refresh_rotates_and_the_old_token_dies(name: str, emulator_factory: EmulatorFactory) -> None:
    emu = emulator_factory(name)
    seed = emu.issue_tokens()
    tokens = client_for(emu).refresh(seed.refresh_token, seed.access_token)
    assert tokens.refresh_token is not None
    new_refresh = tokens.refresh_token.get_secret_value()
    assert new_refresh != seed.refresh_token
    assert emu.is_refresh_token_valid(new_refresh)
    assert not emu.is_refresh_token_valid(seed.refresh_token)
    assert emu.is_access_token_valid(tokens.access_token.get_secret_value())
    assert emu.refresh_requests == 1
    assert emu.requests[0].path == PRESETS[name].request.path
    assert emu.requests[0].method == "POST"


@pytest.mark.parametrize("name", DIALECTS)
def test_reused_refresh_token_is_rejected_and_the_family_revoked(
    name: str, emulator_factory: EmulatorFactory
) -> None:
    emu = emulator_factory(name)
    seed = emu.issue_tokens()
    client = client_for(emu)
    first = client.refresh(seed.refresh_token, seed.access_token)
    # The IoT document's 50400 may also mean a malformed request: the client says so; the keeper
    # asks again before it believes it (tests/test_keeper.py).
    expected = AmbiguousRejection if name == "appid_json" else RefreshTokenRejected
    with pytest.raises(expected) as info:
        client.refresh(seed.refresh_token, first.access_token.get_secret_value())
    assert seed.refresh_token not in str(info.value)
    assert first.refresh_token is not None
    assert not emu.is_refresh_token_valid(first.refresh_token.get_secret_value())
    assert emu.families_revoked == 1


@pytest.mark.parametrize("name", ["oauth2_basic", "oauth2_post", "query_basic"])
def test_answer_without_refresh_token_keeps_none(name: str, emulator_factory: EmulatorFactory) -> None:
    emu = emulator_factory(name, rotation=False, omit_refresh_token=True)
    seed = emu.issue_tokens()
    tokens = client_for(emu).refresh(seed.refresh_token)
    assert tokens.refresh_token is None
    assert emu.is_refresh_token_valid(seed.refresh_token)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retried_with_backoff_then_transient() -> None:
    sleeps: list[float] = []
    client = closed_after_test(
        RefreshClient(
            PRESETS["oauth2_basic"],
            ClientSettings(
                base_url=f"http://127.0.0.1:{_closed_port()}",
                credentials=ClientCredentials("id", "secret-value"),
                allow_insecure_http=True,
                max_attempts=3,
                backoff_base=0.01,
            ),
            sleep=sleeps.append,
        )
    )
    with pytest.raises(TransientRefreshError, match="not sent"):
        client.refresh("refresh-value-1")
    assert len(sleeps) == 2
    assert all(0 < s <= 0.02 for s in sleeps)


def _recording_client(emu: VendorEmulator, **settings: Any) -> tuple[RefreshClient, list[float]]:
    """A client for ``emu`` whose sync driver records each requested sleep instead of sleeping."""
    sleeps: list[float] = []
    settings.setdefault("allow_insecure_http", True)
    settings.setdefault("backoff_base", 0.01)  # Retry-After jitter: at most min(1, backoff_base)
    client = RefreshClient(
        PRESETS[emu.name],
        ClientSettings(
            base_url=emu.base_url,
            credentials=ClientCredentials(emu.client_id, emu.client_secret),
            **settings,
        ),
        sleep=sleeps.append,
    )
    return closed_after_test(client), sleeps


@pytest.mark.parametrize("fault", ["http_503", "http_429"])
@pytest.mark.parametrize("retry_after", [0, 7, 30])
def test_retry_after_is_waited_for_its_value_then_retried_once(
    fault: str, retry_after: int, emulator_factory: EmulatorFactory
) -> None:
    emu = emulator_factory("oauth2_basic")
    seed = emu.issue_tokens()
    emu.inject(fault, retry_after=retry_after)
    client, sleeps = _recording_client(emu, max_retry_after=30)
    with client:
        tokens = client.refresh(seed.refresh_token)
    assert emu.is_access_token_valid(tokens.access_token.get_secret_value())
    assert emu.refresh_requests == 2
    # Exactly the vendor's delay (30 is the cap itself: still honoured), plus at most the jitter.
    assert len(sleeps) == 1, sleeps
    assert retry_after <= sleeps[0] <= retry_after + 0.01, sleeps


def test_retry_after_as_an_http_date_is_waited_until_that_time(emulator_factory: EmulatorFactory) -> None:
    from email.utils import format_datetime

    emu = emulator_factory("oauth2_post")
    seed = emu.issue_tokens()
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    emu.inject("http_503", retry_after=format_datetime(when, usegmt=True))
    client, sleeps = _recording_client(emu, max_retry_after=30)
    with client:
        client.refresh(seed.refresh_token)
    assert emu.refresh_requests == 2
    assert len(sleeps) == 1
    assert 20 - 5 <= sleeps[0] <= 20 + 0.01, sleeps  # seconds until that time (slack: a slow machine)


@pytest.mark.parametrize("fault", ["http_503", "http_429"])
@pytest.mark.parametrize(("retry_after", "cap"), [(31, 30), (6, 5), (3600, 30)])
def test_retry_after_beyond_the_cap_is_not_waited_and_not_retried(
    fault: str, retry_after: int, cap: float, emulator_factory: EmulatorFactory
) -> None:
    emu = emulator_factory("query_basic")
    seed = emu.issue_tokens()
    emu.inject(fault, retry_after=retry_after)
    client, sleeps = _recording_client(emu, max_retry_after=cap)
    with client, pytest.raises(TransientRefreshError) as info:
        client.refresh(seed.refresh_token)
    assert sleeps == []  # never a wait longer than max_retry_after
    assert emu.refresh_requests == 1
    assert f"HTTP {fault.removeprefix('http_')}" in str(info.value)
    assert emu.is_refresh_token_valid(seed.refresh_token)  # not processed: the token is still good


def test_each_retry_after_is_waited_and_retries_stop_at_max_attempts(
    emulator_factory: EmulatorFactory,
) -> None:
    emu = emulator_factory("appid_json")
    seed = emu.issue_tokens()
    emu.inject("http_503", retry_after=2)
    emu.inject("http_429", retry_after=5)
    emu.inject("http_503", retry_after=1)
    client, sleeps = _recording_client(emu, max_attempts=3)
    with client, pytest.raises(TransientRefreshError, match="HTTP 503"):
        client.refresh(seed.refresh_token)
    assert emu.refresh_requests == 3
    assert len(sleeps) == 2, sleeps  # the third answer is the last attempt: no wait after it
    assert 2 <= sleeps[0] <= 2.01 and 5 <= sleeps[1] <= 5.01, sleeps
    assert emu.is_refresh_token_valid(seed.refresh_token)


def test_the_async_driver_waits_the_same_retry_after(emulator_factory: EmulatorFactory) -> None:
    emu = emulator_factory("bearer_json")
    seed = emu.issue_tokens()
    emu.inject("http_429", retry_after=4)
    client, sync_sleeps = _recording_client(emu)
    waits: list[float] = []

    async def asleep(seconds: float) -> None:
        waits.append(seconds)

    tokens = asyncio.run(client.arefresh(seed.refresh_token, seed.access_token, asleep=asleep))
    assert emu.is_access_token_valid(tokens.access_token.get_secret_value())
    assert emu.refresh_requests == 2
    assert sync_sleeps == []
    assert len(waits) == 1 and 4 <= waits[0] <= 4.01, waits


@pytest.mark.parametrize("fault", ["http_500", "http_503"])
def test_5xx_without_retry_after_is_not_retried(fault: str, emulator_factory: EmulatorFactory) -> None:
    emu = emulator_factory("appid_json")
    seed = emu.issue_tokens()
    emu.inject(fault)
    with pytest.raises(TransientRefreshError):
        client_for(emu).refresh(seed.refresh_token)
    assert emu.refresh_requests == 1
    assert emu.is_refresh_token_valid(seed.refresh_token)


def test_read_timeout_after_sending_is_outcome_unknown_and_not_retried(
    emulator_factory: EmulatorFactory,
) -> None:
    emu = emulator_factory("oauth2_post")
    seed = emu.issue_tokens()
    emu.inject("slow", delay=2.0)
    with pytest.raises(RefreshOutcomeUnknown, match="not retried blindly"):
        client_for(emu, timeout=0.5).refresh(seed.refresh_token)
    assert emu.refresh_requests == 1


def test_dropped_answer_after_rotation_is_outcome_unknown(emulator_factory: EmulatorFactory) -> None:
    emu = emulator_factory("query_basic")
    seed = emu.issue_tokens()
    emu.inject("drop_after")
    with pytest.raises(RefreshOutcomeUnknown):
        client_for(emu).refresh(seed.refresh_token)
    assert emu.refresh_requests == 1
    # The vendor did rotate: this is exactly why the client must not retry with the old token.
    assert not emu.is_refresh_token_valid(seed.refresh_token)


@pytest.mark.parametrize("fault", ["malformed_json", "huge_body"])
def test_unreadable_success_answer_is_malformed(fault: str, emulator_factory: EmulatorFactory) -> None:
    emu = emulator_factory("bearer_json")
    seed = emu.issue_tokens()
    emu.inject(fault)
    with pytest.raises(MalformedResponseError, match="may have rotated"):
        client_for(emu, max_response_bytes=64 * 1024).refresh(seed.refresh_token, seed.access_token)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("oauth2_basic", TransientRefreshError),
        ("appid_json", TransientRefreshError),
        ("bearer_json", TransientRefreshError),
    ],
)
def test_http_200_with_an_error_body_is_a_failure(
    name: str, error: type[Exception], emulator_factory: EmulatorFactory
) -> None:
    emu = emulator_factory(name)
    seed = emu.issue_tokens()
    emu.inject("ok_with_error_body")
    with pytest.raises(error):
        client_for(emu).refresh(seed.refresh_token, seed.access_token)


@pytest.mark.parametrize("name", ["oauth2_basic", "oauth2_post", "query_basic", "appid_json"])
def test_wrong_client_secret_is_a_configuration_error(name: str, emulator_factory: EmulatorFactory) -> None:
    emu = emulator_factory(name)
    seed = emu.issue_tokens()
    client = closed_after_test(
        RefreshClient(
            PRESETS[name],
            ClientSettings(
                base_url=emu.base_url,
                credentials=ClientCredentials(emu.client_id, "wrong-secret-xyz"),
                allow_insecure_http=True,
            ),
        )
    )
    with pytest.raises(ConfigurationError):
        client.refresh(seed.refresh_token)
    assert emu.is_refresh_token_valid(seed.refresh_token)


def test_plain_http_is_refused_unless_allowed() -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_http"):
        RefreshClient(PRESETS["oauth2_basic"], ClientSettings(base_url="http://127.0.0.1:9"))


def test_async_refresh_uses_the_same_policy(emulator_factory: EmulatorFactory) -> None:
    emu = emulator_factory("bearer_json")
    seed = emu.issue_tokens()
    tokens = asyncio.run(client_for(emu).arefresh(seed.refresh_token, seed.access_token))
    assert emu.is_access_token_valid(tokens.access_token.get_secret_value())
    assert emu.requests[0].header("Authentication") == f"Bearer {seed.access_token}"
