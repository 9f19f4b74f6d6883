"""babelbird-query-basic.txt: the refresh token travels in the query string."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from airflow_provider_tokenrefresh.dialects.presets import QUERY_BASIC as SPEC
from airflow_provider_tokenrefresh.errors import RefreshTokenRejected

from .wirehelp import CLIENT_ID, CLIENT_SECRET, NOW, REFRESH, build, parse, query_of


def test_request_puts_grant_type_and_refresh_token_in_the_query() -> None:
    req = build(SPEC)
    assert req.method == "POST"
    assert req.url.startswith("https://vendor.example:8443/api/refreshToken.do?")
    assert query_of(req) == {"grant_type": ["refresh_token"], "refresh_token": [REFRESH]}
    assert (
        req.headers["Authorization"]
        == "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    )
    assert req.content is None
    assert "Content-Type" not in req.headers


def test_the_safe_url_and_repr_hide_the_refresh_token() -> None:
    req = build(SPEC)
    assert REFRESH in req.url
    assert REFRESH not in req.safe_url
    assert "refresh_token=***" in req.safe_url
    assert "grant_type=refresh_token" in req.safe_url
    assert REFRESH not in repr(req)


def test_documented_answer_parses_with_30_day_refresh_token() -> None:
    tokens = parse(SPEC, 200, {"access_token": "abcdefgh", "refresh_token": "ijklmnop", "expires_in": 3600})
    assert tokens.expires_at == NOW + timedelta(seconds=3600)
    assert tokens.refresh_expires_at == NOW + timedelta(days=30)


def test_invalid_grant_is_rejection() -> None:
    with pytest.raises(RefreshTokenRejected):
        parse(SPEC, 400, {"error": "invalid_grant", "error_description": "Invalid refresh token"})
