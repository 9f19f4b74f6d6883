"""The refresh client against real emulated vendors: success, rotation, retries only where safe."""

from __future__ import annotations

import asyncio
import socket

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

from .conftest import DIALECTS, EmulatorFactory, client_for


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
    client = RefreshClient(
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
    with pytest.raises(TransientRefreshError, match="not sent"):
        client.refresh("refresh-value-1")
    assert len(sleeps) == 2
    assert all(0 < s <= 0.02 for s in sleeps)


def test_503_with_retry_after_is_retried_once(emulator_factory: EmulatorFactory) -> None:
    emu = emulator_factory("oauth2_basic")
    seed = emu.issue_tokens()
    emu.inject("http_503", retry_after=0)
    sleeps: list[float] = []
    client = client_for(emu)
    client._sleep = sleeps.append
    tokens = client.refresh(seed.refresh_token)
    assert tokens.access_token.get_secret_value()
    assert emu.refresh_requests == 2
    assert len(sleeps) == 1


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
    client = RefreshClient(
        PRESETS[name],
        ClientSettings(
            base_url=emu.base_url,
            credentials=ClientCredentials(emu.client_id, "wrong-secret-xyz"),
            allow_insecure_http=True,
        ),
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
