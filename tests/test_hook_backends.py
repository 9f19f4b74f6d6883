"""The hook wires the connection's lock and store: Redis lock + Vault store, PostgreSQL lock + AWS store.

Connections come from AIRFLOW_CONN_* environment variables (the SDK reads them outside tasks), and
the hook runs in a child process with its own AIRFLOW_HOME, as a CLI call would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import EmulatorFactory

CHILD = """
import json, sys
from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
hook = TokenRefreshHook("vendor")
first = hook.get_record(min_ttl=60)
status = hook.token_status()
print(json.dumps({"generation": first.generation, "store": status["store"], "lock": status["lock"],
                  "keeper_store": type(hook.keeper.store).__name__, "keeper_lock": type(hook.keeper.lock).__name__}))
"""


def _run(tmp_path: Path, conns: dict[str, dict[str, Any]]) -> dict[str, Any]:
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    env |= {f"AIRFLOW_CONN_{name.upper()}": json.dumps(conn) for name, conn in conns.items()}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _vendor_conn(emu: Any, seed: Any, **extra: Any) -> dict[str, Any]:
    return {
        "conn_type": "tokenrefresh_oauth2_basic",
        "host": emu.base_url,
        "login": emu.client_id,
        "password": emu.client_secret,
        "extra": {"refresh_token": seed.refresh_token, "allow_insecure_http": True, **extra},
    }


@pytest.mark.slow
def test_redis_lock_and_vault_store_from_connections(
    emulator_factory: EmulatorFactory, tmp_path: Path, redis_server: str, bao_server: tuple[str, str]
) -> None:
    import hvac

    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    emu = emulator_factory("oauth2_basic")
    seed = emu.issue_tokens()
    vault_url, vault_token = bao_server
    redis_port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    result = _run(
        tmp_path,
        {
            "vendor": _vendor_conn(
                emu,
                seed,
                store="vault",
                store_conn_id="vault_conn",
                lock="redis",
                lock_conn_id="redis_conn",
                store_path=f"hooktest-{emu.port}",
            ),
            "vault_conn": {"conn_type": "generic", "host": vault_url, "password": vault_token},
            "redis_conn": {"conn_type": "redis", "host": "127.0.0.1", "port": redis_port},
        },
    )
    assert result == {
        "generation": 1,
        "store": "vault",
        "lock": "redis",
        "keeper_store": "VaultTokenStore",
        "keeper_lock": "RedisRefreshLock",
    }
    record, _ = VaultTokenStore(hvac.Client(url=vault_url, token=vault_token)).read(f"hooktest-{emu.port}")
    assert record is not None and record.refresh_token is not None
    assert emu.is_refresh_token_valid(record.refresh_token.get_secret_value())
    # Read the secret as Vault itself holds it (not through the provider's store): KV v2 at the
    # documented place, the record one JSON field of it, its refresh token the rotated one.
    raw = hvac.Client(url=vault_url, token=vault_token).secrets.kv.v2.read_secret_version(
        path=f"airflow/tokenrefresh/hooktest-{emu.port}", mount_point="secret", raise_on_deleted_version=True
    )
    stored = json.loads(raw["data"]["data"]["record"])
    _assert_rotated_once(emu, seed, stored)


@pytest.mark.slow
def test_postgres_lock_and_aws_store_from_connections(
    emulator_factory: EmulatorFactory, tmp_path: Path, postgres_server: str, moto_server: str
) -> None:
    import psycopg.conninfo

    emu = emulator_factory("appid_json")
    seed = emu.issue_tokens()
    pg = psycopg.conninfo.conninfo_to_dict(postgres_server)
    store_path = f"hooktest-aws-{emu.port}"
    result = _run(
        tmp_path,
        {
            "vendor": {
                **_vendor_conn(
                    emu,
                    seed,
                    store="aws",
                    store_conn_id="aws_conn",
                    lock="postgres",
                    lock_conn_id="pg_conn",
                    store_path=store_path,
                ),
                "conn_type": "tokenrefresh_appid_json",
            },
            "aws_conn": {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"region_name": "us-east-1", "endpoint_url": moto_server},
            },
            "pg_conn": {
                "conn_type": "postgres",
                "host": pg.get("host", "127.0.0.1"),
                "port": int(pg["port"]),
                "login": pg.get("user", "postgres"),
                "schema": pg.get("dbname", "postgres"),
            },
        },
    )
    assert result == {
        "generation": 1,
        "store": "aws",
        "lock": "postgres",
        "keeper_store": "AwsSecretsManagerTokenStore",
        "keeper_lock": "PostgresRefreshLock",
    }
    # Read the secret back from moto with plain boto3 (not through the provider's store).
    import boto3

    client = boto3.client(
        "secretsmanager",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    secret = client.get_secret_value(SecretId=f"airflow/tokenrefresh/{store_path}", VersionStage="AWSCURRENT")
    stored = json.loads(secret["SecretString"])
    _assert_rotated_once(emu, seed, stored)


def _assert_rotated_once(emu: Any, seed: Any, stored: dict[str, Any]) -> None:
    """The stored record holds the vendor's one rotation: its tokens are live, the seed is dead."""
    assert stored["generation"] == 1
    assert emu.refresh_requests == 1
    assert stored["refresh_token"] != seed.refresh_token
    assert emu.is_refresh_token_valid(stored["refresh_token"])
    assert emu.is_access_token_valid(stored["access_token"])
    assert not emu.is_refresh_token_valid(seed.refresh_token)
