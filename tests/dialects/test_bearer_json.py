"""isales-bearer-json.txt: Authentication header, result/resultData, HTTP 200 failures."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_tokenrefresh.dialects.presets import BEARER_JSON as SPEC
from airflow_provider_tokenrefresh.errors import (
    ConfigurationError,
    RefreshTokenRejected,
    TransientRefreshError,
)

from .wirehelp import ACCESS, NOW, REFRESH, build, json_of, parse


def test_request_sends_the_access_token_in_a_header_named_authentication() -> None:
    req = build(SPEC)
    assert req.method == "POST"
    assert req.url.endswith("/rest/isales/v1/openapi/obs/auth/refresh")
    assert req.headers["Authentication"] == f"Bearer {ACCESS}"
    assert "Authorization" not in req.headers
    assert req.headers["Content-Type"] == "application/json"
    assert json_of(req) == {"refreshToken": REFRESH}


def test_a_missing_access_token_is_a_configuration_error_naming_the_extra() -> None:
    with pytest.raises(ConfigurationError, match="access_token"):
        build(SPEC, access_token=None)


@pytest.mark.parametrize("result", [0, "0"])
@pytest.mark.parametrize(("access_ttl", "refresh_ttl"), [(300, 3600), ("300", "3600")])
def test_success_answer_in_both_documented_forms(
    result: object, access_ttl: object, refresh_ttl: object
) -> None:
    tokens = parse(
        SPEC,
        200,
        {
            "result": result,
            "resultData": {
                "token": "fajiofjqwioeha",
                "tokenExpirationTime": access_ttl,
                "refreshToken": "fajiofjqwioehb",
                "refreshExpirationTime": refresh_ttl,
            },
        },
    )
    assert tokens.access_token.get_secret_value() == "fajiofjqwioeha"
    assert tokens.expires_at == NOW + timedelta(seconds=300)
    # The refresh token lives only an hour: its expiry is kept.
    assert tokens.refresh_expires_at == NOW + timedelta(seconds=3600)


@pytest.mark.parametrize(("result", "code"), [("1", "1"), (1, "1"), ("500", "500")])
def test_http_200_with_any_other_result_is_a_failure_carrying_the_code(result: object, code: str) -> None:
    body = {"result": result, "resultData": {"token": "should-not-be-used"}}
    with pytest.raises(TransientRefreshError) as info:
        parse(SPEC, 200, body)
    message = str(info.value)
    assert f"HTTP 200 result={code}:" in message
    assert info.value.vendor_code == code
    assert info.value.status_code == 200
    assert "should-not-be-used" not in message


def test_http_200_without_a_result_is_a_failure_that_invents_no_code() -> None:
    body = {"result": None, "resultData": {"token": "should-not-be-used"}}
    with pytest.raises(TransientRefreshError) as info:
        parse(SPEC, 200, body)
    message = str(info.value)
    assert "HTTP 200:" in message
    assert "result=" not in message  # no code to quote: none is made up ("result=None", "result=")
    assert info.value.vendor_code is None
    assert info.value.status_code == 200
    assert "should-not-be-used" not in message


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ConfigurationError),
        (401, ConfigurationError),
        (403, RefreshTokenRejected),
        (404, ConfigurationError),
        (500, TransientRefreshError),
    ],
)
def test_documented_status_codes_map_to_their_meaning(status: int, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        parse(SPEC, status, {"result": str(status), "resultDesc": "text"})
    assert f"HTTP {status}" in str(info.value)
