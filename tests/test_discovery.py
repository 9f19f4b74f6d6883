"""Which tokenrefresh_* connections exist beyond the metastore (pure functions)."""

from __future__ import annotations

import json

from airflow_provider_tokenrefresh.discovery import (
    configured_conn_ids,
    conn_type_of,
    env_conn_ids,
    extra_conn_ids,
    merge_conn_ids,
)


def test_conn_type_of_uri_and_json() -> None:
    assert (
        conn_type_of("tokenrefresh-oauth2-basic://id:secret@vendor.example/?x=1")
        == "tokenrefresh_oauth2_basic"
    )
    assert conn_type_of("tokenrefresh_appid_json://vendor") == "tokenrefresh_appid_json"
    assert (
        conn_type_of(json.dumps({"conn_type": "tokenrefresh_bearer_json", "host": "h"}))
        == "tokenrefresh_bearer_json"
    )
    assert conn_type_of('{"host": "h"}') is None
    assert conn_type_of("{not json") is None
    assert conn_type_of("no scheme here") is None
    assert conn_type_of("[1, 2]") is None


def test_env_conn_ids_takes_only_tokenrefresh_types() -> None:
    environ = {
        "AIRFLOW_CONN_VENDOR_A": "tokenrefresh-oauth2-basic://id:s@vendor",
        "AIRFLOW_CONN_JSON_ONE": json.dumps({"conn_type": "tokenrefresh_query_basic"}),
        "AIRFLOW_CONN_POSTGRES_DEFAULT": "postgres://u:p@db/airflow",
        "AIRFLOW_CONN_": "tokenrefresh-oauth2-basic://x",
        "AIRFLOW_CONNX_OTHER": "tokenrefresh-oauth2-basic://x",
        "PATH": "/usr/bin",
    }
    assert env_conn_ids(environ) == ["json_one", "vendor_a"]


def test_configured_ids_and_merge_keep_first_order() -> None:
    assert configured_conn_ids(None) == [] and configured_conn_ids("  ") == []
    assert configured_conn_ids("b, a\nc  a,,") == ["b", "a", "c"]
    assert merge_conn_ids(["m1", "a"], ["a", "e1"], ["c1", "m1"]) == ["m1", "a", "e1", "c1"]
    environ = {"AIRFLOW_CONN_E1": "tokenrefresh-oauth2-post://v"}
    assert extra_conn_ids(environ, "vault_one e1") == ["e1", "vault_one"]
