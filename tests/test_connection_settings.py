"""Bad connection input gets a clear error naming the connection and the field; nothing echoed."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_tokenrefresh.errors import ConfigurationError
from airflow_provider_tokenrefresh.settings import settings_from_fields

SECRET = "CANARY-secret-in-bad-extra-77ab"


def build(conn_type: str = "tokenrefresh_oauth2_basic", **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "host": "https://vendor.example",
        "login": "client",
        "password": "secret-value",
        "extra": {"refresh_token": "refresh-value-123"},
    }
    fields.update(overrides)
    return settings_from_fields("my_conn", conn_type, **fields)


def test_a_valid_connection_is_typed() -> None:
    s = build(
        extra={
            "refresh_token": "refresh-value-123",
            "verify": "false",
            "refresh_margin": "120",
            "refresh_token_ttl": 3600,
            "allow_insecure_http": "true",
        }
    )
    assert s.dialect.name == "oauth2_basic"
    assert s.extra.verify is False
    assert s.extra.refresh_margin == 120
    assert s.extra.refresh_lifetime == 3600
    assert s.store_key == "tokenrefresh_token__my_conn"


def test_host_without_scheme_and_a_port_field() -> None:
    assert build(host="vendor.example", port=8743).base_url == "https://vendor.example:8743"


def test_prefixed_extra_names_from_older_forms_are_accepted() -> None:
    s = build(extra={"extra__tokenrefresh_oauth2_basic__refresh_token": "refresh-value-123"})
    assert s.extra.refresh_token is not None


@pytest.mark.parametrize(
    ("overrides", "conn_type", "field"),
    [
        ({"host": None}, "tokenrefresh_oauth2_basic", "'host'"),
        ({"login": None}, "tokenrefresh_oauth2_post", "'login'"),
        ({"password": ""}, "tokenrefresh_appid_json", "'password'"),
        ({"extra": {}}, "tokenrefresh_query_basic", "'refresh_token'"),
        ({"extra": {"refresh_token": "refresh-value-123"}}, "tokenrefresh_bearer_json", "'access_token'"),
        (
            {"extra": {"refresh_token": "r-12345", "refresh_margin": SECRET}},
            "tokenrefresh_oauth2_basic",
            "extra.refresh_margin",
        ),
        (
            {"extra": {"refresh_token": "r-12345", "store": "floppy"}},
            "tokenrefresh_oauth2_basic",
            "extra.store",
        ),
        (
            {"extra": {"refresh_token": "r-12345", "endpoint": "token"}},
            "tokenrefresh_oauth2_basic",
            "extra.endpoint",
        ),
        ({"extra": "{not json"}, "tokenrefresh_oauth2_basic", "'extra'"),
        ({}, "tokenrefresh_custom", "'dialect'"),
        (
            {"extra": {"refresh_token": "r-12345", "dialect": {"name": "x", "request": {"path": "nope"}}}},
            "tokenrefresh_custom",
            "dialect.request.path",
        ),
        ({}, "http", "conn_type 'http'"),
    ],
)
def test_bad_input_names_the_connection_and_the_field(
    overrides: dict[str, Any], conn_type: str, field: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        build(conn_type, **overrides)
    message = str(info.value)
    assert "my_conn" in message
    assert field in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "path", ["vendor_a_record", "records/vendor-a", "tokens_of_vendor_a", "api_secret_x"]
)
def test_a_variable_key_is_always_one_airflow_masks(path: str) -> None:
    from airflow.sdk._shared.secrets_masker.secrets_masker import should_hide_value_for_key

    key = build(extra={"refresh_token": "refresh-value-123", "store_path": path}).store_key
    assert should_hide_value_for_key(key), key  # Airflow's own rule, as the UI and API apply it
    assert key.startswith(path)


def test_a_vault_path_is_kept_as_written() -> None:
    s = build(
        extra={
            "refresh_token": "refresh-value-123",
            "store": "vault",
            "store_conn_id": "v",
            "store_path": "vendor_a",
        }
    )
    assert s.store_key == "vendor_a" and s.legacy_store_key is None
