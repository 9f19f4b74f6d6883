"""Property-based: whatever a vendor sends, only the project's own error types come out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_tokenrefresh.dialects import PRESETS
from airflow_provider_tokenrefresh.dialects.wire import ResponseContext, parse_response
from airflow_provider_tokenrefresh.errors import TokenRefreshError
from airflow_provider_tokenrefresh.tokens import TokenSet

CANARY = "refresh-CANARY-hypo-77f1"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)

# Bodies shaped like each vendor's answer, with arbitrary values in the known places.
FIELDS = [
    "access_token",
    "refresh_token",
    "expires_in",
    "token_type",
    "scope",
    "error",
    "error_description",
    "accessToken",
    "refreshToken",
    "expiresIn",
    "tokenType",
    "error_code",
    "error_desc",
    "result",
    "resultDesc",
    "resultData",
]
shaped = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
nested = st.fixed_dictionaries(
    {
        "result": json_values,
        "resultData": st.dictionaries(
            st.sampled_from(["token", "tokenExpirationTime", "refreshToken", "refreshExpirationTime"]),
            json_values,
        ),
    }
)
bodies = st.one_of(
    st.binary(max_size=200),
    shaped.map(lambda d: json.dumps(d).encode()),
    nested.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
)
statuses = st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 408, 429, 500, 502, 503]) | st.integers(
    100, 599
)


@pytest.mark.parametrize("name", sorted(PRESETS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=statuses, body=bodies)
def test_parser_raises_only_project_errors(name: str, status: int, body: bytes) -> None:
    spec = PRESETS[name]
    context = ResponseContext(endpoint="https://vendor.example/x", secrets=(CANARY,))
    try:
        result: Any = parse_response(spec, status, body.replace(b"CANARY", CANARY.encode()), context)
    except TokenRefreshError as exc:
        assert CANARY not in str(exc)
        return
    assert isinstance(result, TokenSet)
    assert 200 <= status < 300
    assert result.access_token.get_secret_value()


@pytest.mark.parametrize("name", sorted(PRESETS))
@settings(max_examples=100, deadline=None)
@given(
    echo=st.sampled_from([CANARY, f"token {CANARY} invalid", f"x={CANARY}"]),
    status=st.sampled_from([200, 400, 401, 403, 500]),
)
def test_echoed_refresh_token_never_reaches_the_message(name: str, echo: str, status: int) -> None:
    body = {
        "error": echo,
        "error_description": echo,
        "error_code": echo,
        "error_desc": echo,
        "result": echo,
        "resultDesc": echo,
    }
    context = ResponseContext(endpoint="https://vendor.example/x", secrets=(CANARY,))
    with pytest.raises(TokenRefreshError) as info:
        parse_response(PRESETS[name], status, json.dumps(body).encode(), context)
    assert CANARY not in str(info.value)
