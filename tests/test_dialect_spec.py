"""The dialect spec: presets validate, custom specs load, bad specs name the field."""

from __future__ import annotations

import json

import pytest

from airflow_provider_tokenrefresh.dialects import PRESETS, get_dialect, load_dialect_spec
from airflow_provider_tokenrefresh.dialects.spec import DialectSpec
from airflow_provider_tokenrefresh.errors import ConfigurationError


def test_there_are_exactly_the_five_documented_presets() -> None:
    assert sorted(PRESETS) == ["appid_json", "bearer_json", "oauth2_basic", "oauth2_post", "query_basic"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name: str) -> None:
    spec = PRESETS[name]
    again = load_dialect_spec(spec.model_dump_json())
    assert again == spec


def test_unknown_dialect_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="oauth2_basic"):
        get_dialect("nope")


def test_a_sixth_vendor_is_described_as_data() -> None:
    spec = load_dialect_spec(
        {
            "name": "acme",
            "request": {
                "path": "/oauth/refresh",
                "client_auth": "query",
                "client_id_field": "key",
                "client_secret_field": "sig_secret",
                "params_in": "query",
                "encoding": "none",
                "refresh_token_field": "rt",
            },
            "response": {
                "access_token": "data.at",
                "refresh_token": "data.rt",
                "expires_in": "data.exp",
                "expires_format": "epoch_millis",
                "success": {"path": "ok", "equals": ["true"]},
            },
            "errors": [{"status": 401, "code": "E42", "outcome": "reauth", "meaning": "token gone"}],
        }
    )
    assert isinstance(spec, DialectSpec)
    assert spec.errors[0].status == [401]
    assert spec.errors[0].code == ["E42"]


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
