"""iot-appid-secret-json.txt: camelCase JSON both ways, documented error codes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_tokenrefresh.dialects.presets import APPID_JSON as SPEC
from airflow_provider_tokenrefresh.errors import (
    AmbiguousRejection,
    ConfigurationError,
    TransientRefreshError,
)

from .wirehelp import CLIENT_ID, CLIENT_SECRET, NOW, REFRESH, build, json_of, parse


def test_request_is_camel_case_json_on_a_custom_port() -> None:
    req = build(SPEC, base="https://iot.example:8743")
    assert req.method == "POST"
    assert req.url == "https://iot.example:8743/iocm/app/sec/v1.1.0/refreshToken"
    assert req.headers["Content-Type"] == "application/json"
    assert "Authorization" not in req.headers
    assert json_of(req) == {"appId": CLIENT_ID, "secret": CLIENT_SECRET, "refreshToken": REFRESH}


@pytest.mark.parametrize("expires_in", [3600, "3600", " 3600 ", 3600.0])
def test_expires_in_may_be_a_number_or_a_numeric_string(expires_in: object) -> None:
    tokens = parse(
        SPEC,
        200,
        {
            "accessToken": "abcdefgh",
            "tokenType": "Bearer",
            "expiresIn": expires_in,
            "refreshToken": "ijklmnop",
            "scope": "default",
        },
    )
    assert tokens.expires_at == NOW + timedelta(seconds=3600)
    assert tokens.scope == "default"
    assert tokens.refresh_token is not None
    assert tokens.refresh_token.get_secret_value() == "ijklmnop"
    # "A refreshToken is valid for one month."
    assert tokens.refresh_expires_at == NOW + timedelta(days=30)


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "100449", ConfigurationError),
        (400, "102202", ConfigurationError),
        # "input invalid" also covers a malformed request: asked again before it is believed.
        (400, "50400", AmbiguousRejection),
        (401, "100208", ConfigurationError),
        (500, "50252", TransientRefreshError),
    ],
)
def test_documented_error_codes_map_to_their_meaning(status: int, code: str, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        parse(SPEC, status, {"error_code": code, "error_desc": "text"})
    assert code in str(info.value)


def test_non_numeric_expiry_is_malformed_not_a_crash() -> None:
    from airflow_provider_tokenrefresh.errors import MalformedResponseError

    with pytest.raises(MalformedResponseError, match="expiresIn"):
        parse(SPEC, 200, {"accessToken": "abcdefgh", "expiresIn": "soon"})
