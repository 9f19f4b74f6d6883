"""oauth2-client-secret-basic.txt: RFC 6749 section 6 refresh with client_secret_basic."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from airflow_provider_tokenrefresh.dialects.presets import OAUTH2_BASIC as SPEC
from airflow_provider_tokenrefresh.errors import (
    ConfigurationError,
    MalformedResponseError,
    RefreshTokenRejected,
    TransientRefreshError,
)

from .wirehelp import CLIENT_ID, CLIENT_SECRET, NOW, REFRESH, build, form_of, parse, query_of


def test_request_is_form_post_with_basic_credentials() -> None:
    req = build(SPEC)
    assert req.method == "POST"
    assert req.url == "https://vendor.example:8443/api/v1/oauth2/token"
    assert (
        req.headers["Authorization"]
        == "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    )
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form_of(req) == {"grant_type": ["refresh_token"], "refresh_token": [REFRESH]}
    assert query_of(req) == {}


def test_documented_success_answer_parses() -> None:
    tokens = parse(
        SPEC,
        200,
        {
            "access_token": "Z43T3KWH9lecmy3H1IaCI",
            "token_type": "Bearer",
            "refresh_token": "WEAFOmOJ-A4LOhF_I39DvJuqxP0",
            "expires_in": 7199,
            "scope": "get_user_info",
        },
    )
    assert tokens.access_token.get_secret_value() == "Z43T3KWH9lecmy3H1IaCI"
    assert tokens.refresh_token is not None
    assert tokens.refresh_token.get_secret_value() == "WEAFOmOJ-A4LOhF_I39DvJuqxP0"
    assert tokens.expires_at == NOW + timedelta(seconds=7199)
    assert tokens.scope == "get_user_info"
    # "The refresh token has a maximum validity of 30 days".
    assert tokens.refresh_expires_at == NOW + timedelta(days=30)


def test_answer_without_refresh_token_keeps_none_so_the_old_one_is_kept() -> None:
    tokens = parse(SPEC, 200, {"access_token": "abcdefgh", "token_type": "Bearer", "expires_in": 60})
    assert tokens.refresh_token is None


def test_missing_expiry_falls_back_to_documented_two_hours() -> None:
    tokens = parse(SPEC, 200, {"access_token": "abcdefgh", "refresh_token": "zyxwvuts"})
    assert tokens.expires_at == NOW + timedelta(seconds=7200)


def test_missing_expiry_uses_configured_default_first() -> None:
    tokens = parse(SPEC, 200, {"access_token": "abcdefgh"}, default_expires_in=900)
    assert tokens.expires_at == NOW + timedelta(seconds=900)


def test_invalid_grant_echoing_the_refresh_token_is_rejected_and_redacted() -> None:
    with pytest.raises(RefreshTokenRejected) as info:
        parse(
            SPEC,
            400,
            {"error": "invalid_grant", "error_description": f"Invalid refresh token: {REFRESH}"},
        )
    text = str(info.value)
    assert REFRESH not in text
    assert "Invalid refresh token: ***" in text
    assert info.value.vendor_code == "invalid_grant"
    assert "re-authorize" in text


def test_unsupported_grant_type_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unsupported_grant_type"):
        parse(SPEC, 400, {"error": "unsupported_grant_type", "error_description": "Unsupported grant type"})


def test_invalid_client_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="login and password"):
        parse(SPEC, 401, {"error": "invalid_client"})


def test_server_errors_are_transient() -> None:
    with pytest.raises(TransientRefreshError):
        parse(SPEC, 503, b"<html>down</html>")
    with pytest.raises(TransientRefreshError, match="server_error"):
        parse(SPEC, 200, {"error": "server_error"})


def test_success_status_with_non_json_body_is_malformed() -> None:
    with pytest.raises(MalformedResponseError, match="may have rotated"):
        parse(SPEC, 200, b"{not json")


def test_missing_client_secret_is_a_configuration_error() -> None:
    from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials

    with pytest.raises(ConfigurationError, match="client secret"):
        build(SPEC, credentials=ClientCredentials(CLIENT_ID, None))
