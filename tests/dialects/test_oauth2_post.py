"""oauth2-client-secret-post.txt: client credentials in the form body."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_tokenrefresh.dialects.presets import OAUTH2_POST as SPEC
from airflow_provider_tokenrefresh.errors import ConfigurationError, RefreshTokenRejected

from .wirehelp import CLIENT_ID, CLIENT_SECRET, NOW, REFRESH, build, form_of, parse


def test_request_carries_all_four_fields_in_the_form_body() -> None:
    req = build(SPEC)
    assert req.method == "POST"
    assert req.url.endswith("/api/v1/oauth2/token")
    assert "Authorization" not in req.headers
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form_of(req) == {
        "client_id": [CLIENT_ID],
        "client_secret": [CLIENT_SECRET],
        "refresh_token": [REFRESH],
        "grant_type": ["refresh_token"],
    }


def test_documented_success_answer_parses() -> None:
    tokens = parse(
        SPEC,
        200,
        {
            "access_token": "9b0******df2",
            "token_type": "Bearer",
            "expires_in": 7200,
            "scope": "get_user_info",
            "refresh_token": "dec******7f1",
        },
    )
    assert tokens.access_token.get_secret_value() == "9b0******df2"
    assert tokens.expires_at == NOW + timedelta(seconds=7200)
    assert tokens.token_type == "Bearer"
    # The document states no refresh-token lifetime; none is invented.
    assert tokens.refresh_expires_at is None


def test_documented_invalid_grant_is_rejection() -> None:
    with pytest.raises(RefreshTokenRejected, match="Invalid refresh token"):
        parse(SPEC, 400, {"error": "invalid_grant", "error_description": "Invalid refresh token"})


def test_unknown_400_error_is_configuration_not_reauth() -> None:
    with pytest.raises(ConfigurationError, match="weird_error"):
        parse(SPEC, 400, {"error": "weird_error"})
