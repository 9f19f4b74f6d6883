"""The dialect spec: presets validate, custom specs load, bad specs name the field."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from airflow_provider_tokenrefresh.dialects import PRESETS, get_dialect, load_dialect_spec
from airflow_provider_tokenrefresh.errors import (
    ConfigurationError,
    RefreshTokenRejected,
    TransientRefreshError,
)

from .dialects.wirehelp import CLIENT_ID, CLIENT_SECRET, NOW, REFRESH, build, parse, query_of


def test_there_are_exactly_the_five_documented_presets() -> None:
    assert sorted(PRESETS) == ["appid_json", "bearer_json", "oauth2_basic", "oauth2_post", "query_basic"]


# A preset's own answer, one per dialect, as its vendor document shows it (values are canaries).
_SAMPLE_ANSWERS: dict[str, dict[str, object]] = {
    "oauth2_basic": {"access_token": "at-new-1", "refresh_token": "rt-new-1", "expires_in": 300},
    "oauth2_post": {"access_token": "at-new-1", "refresh_token": "rt-new-1", "expires_in": 300},
    "query_basic": {"access_token": "at-new-1", "refresh_token": "rt-new-1", "expires_in": 300},
    "appid_json": {"accessToken": "at-new-1", "refreshToken": "rt-new-1", "expiresIn": 300},
    "bearer_json": {
        "result": "0",
        "resultData": {
            "token": "at-new-1",
            "tokenExpirationTime": 300,
            "refreshToken": "rt-new-1",
            "refreshExpirationTime": 3600,
        },
    },
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_loaded_back_from_json_behaves_like_the_preset(name: str) -> None:
    spec = PRESETS[name]
    again = load_dialect_spec(spec.model_dump_json())
    # The same bytes on the wire ...
    sent, resent = build(spec), build(again)
    assert (resent.method, resent.url, resent.headers, resent.content) == (
        sent.method,
        sent.url,
        sent.headers,
        sent.content,
    )
    assert REFRESH in resent.url + (resent.content or b"").decode()  # the refresh token really is sent
    # ... and the same reading of the vendor's answer.
    tokens = parse(again, 200, _SAMPLE_ANSWERS[name])
    assert tokens == parse(spec, 200, _SAMPLE_ANSWERS[name])
    assert tokens.access_token.get_secret_value() == "at-new-1"
    assert tokens.refresh_token is not None and tokens.refresh_token.get_secret_value() == "rt-new-1"
    assert tokens.expires_at == NOW + timedelta(seconds=300)


def test_unknown_dialect_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="oauth2_basic"):
        get_dialect("nope")


ACME = {
    "name": "acme",
    "request": {
        "path": "/oauth/refresh",
        "client_auth": "query",
        "client_id_field": "key",
        "client_secret_field": "sig_secret",
        "params_in": "query",
        "encoding": "none",
        "refresh_token_field": "rt",
        "static_params": {"grant": "refresh"},
    },
    "response": {
        "access_token": "data.at",
        "refresh_token": "data.rt",
        "expires_in": "data.exp",
        "expires_format": "epoch_millis",
        "success": {"path": "ok", "equals": ["true"]},
    },
    "errors": [
        {"status": 401, "code": "E42", "outcome": "reauth", "meaning": "token gone: re-authorize acme"},
        {"status": 503, "outcome": "transient", "meaning": "acme is down for maintenance"},
    ],
}


def test_a_sixth_vendor_described_as_json_builds_its_request() -> None:
    spec = load_dialect_spec(json.dumps(ACME))
    request = build(spec)
    assert request.method == "POST"
    assert request.url.split("?")[0] == "https://vendor.example:8443/oauth/refresh"
    assert query_of(request) == {
        "grant": ["refresh"],
        "rt": [REFRESH],
        "key": [CLIENT_ID],
        "sig_secret": [CLIENT_SECRET],
    }
    assert request.content is None  # encoding "none": no body at all
    assert "Content-Type" not in request.headers
    assert "Authorization" not in request.headers  # credentials go in the query, not Basic
    assert CLIENT_SECRET not in request.safe_url and CLIENT_SECRET not in repr(request)


def test_a_refresh_token_in_a_custom_query_field_is_hidden_from_the_safe_url() -> None:
    request = build(load_dialect_spec(json.dumps(ACME)))
    assert REFRESH not in request.safe_url
    assert REFRESH not in repr(request)


def test_a_sixth_vendor_described_as_json_reads_its_answers() -> None:
    spec = load_dialect_spec(json.dumps(ACME))
    expires = NOW + timedelta(minutes=10)
    tokens = parse(
        spec,
        200,
        {"ok": True, "data": {"at": "acme-at-2", "rt": "acme-rt-2", "exp": int(expires.timestamp() * 1000)}},
    )
    assert tokens.access_token.get_secret_value() == "acme-at-2"
    assert tokens.refresh_token is not None and tokens.refresh_token.get_secret_value() == "acme-rt-2"
    assert tokens.expires_at == expires  # epoch milliseconds, not seconds from now
    # The success predicate: a 200 whose "ok" is not true is a failure, whatever else it holds.
    with pytest.raises(TransientRefreshError, match="ok=false"):
        parse(spec, 200, {"ok": False, "data": {"at": "acme-at-3", "exp": 1}})
    # The error rules: 401 with E42 means re-authorize, with the spec's own words ...
    with pytest.raises(RefreshTokenRejected, match="token gone: re-authorize acme") as info:
        parse(spec, 401, {"error": "E42", "error_description": "refresh token revoked"})
    assert info.value.vendor_code == "E42"
    # ... a 401 with another code does not match that rule (the default: credentials refused) ...
    with pytest.raises(ConfigurationError) as other:
        parse(spec, 401, {"error": "E7"})
    assert not isinstance(other.value, RefreshTokenRejected)
    # ... and a rule without a code matches any answer of its status.
    with pytest.raises(TransientRefreshError, match="down for maintenance"):
        parse(spec, 503, {"error": "whatever"})


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"request": {"path": "oauth/token"}}, "dialect.request.path"),
        ({"request": {"path": "/t", "client_auth": "carrier-pigeon"}}, "dialect.request.client_auth"),
        ({"request": {"path": "/t", "encoding": "none"}}, "dialect.request"),
        (
            {"request": {"path": "/t", "access_token_header": "Bad Header"}},
            "dialect.request.access_token_header",
        ),
        ({"response": {"access_token": "a..b"}}, "dialect.response.access_token"),
        ({"response": {"expires_format": "fortnights"}}, "dialect.response.expires_format"),
        ({"errors": [{"outcome": "panic", "meaning": "x"}]}, "dialect.errors.0.outcome"),
        ({"name": "Has Spaces"}, "dialect.name"),
        ({"surprise": 1}, "dialect.surprise"),
    ],
)
def test_a_bad_spec_is_rejected_naming_the_field(patch: dict[str, object], field: str) -> None:
    raw: dict[str, object] = {"name": "acme", "request": {"path": "/t"}}
    raw.update(patch)
    with pytest.raises(ConfigurationError) as info:
        load_dialect_spec(json.dumps(raw), source="extra field 'dialect' of connection 'acme'")
    message = str(info.value)
    assert field in message
    assert "connection 'acme'" in message


def test_a_spec_that_is_not_json_says_so() -> None:
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_dialect_spec("{name: acme")
