"""One contract, every store: file, OpenBao KV v2 (real `bao`), AWS Secrets Manager (real moto server)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokenrefresh.errors import StoreConflict, StoreError
from airflow_provider_tokenrefresh.stores import FileTokenStore, TokenStore
from airflow_provider_tokenrefresh.tokens import TokenRecord

CANARY = "CANARY-refresh-in-store-3c9e1f"


def _vault(bao_server: tuple[str, str]) -> TokenStore:
    import hvac

    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    url, token = bao_server
    return VaultTokenStore(hvac.Client(url=url, token=token))


def _aws(moto_server: str) -> TokenStore:
    import boto3

    from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore

    return AwsSecretsManagerTokenStore(
        boto3.client(
            "secretsmanager",
            endpoint_url=moto_server,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
    )


@pytest.fixture(params=["file", "vault", "aws"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TokenStore:
    if request.param == "file":
        return FileTokenStore(str(tmp_path / "records"))
    if request.param == "vault":
        return _vault(request.getfixturevalue("bao_server"))
    return _aws(request.getfixturevalue("moto_server"))


def _key() -> str:
    return f"conn-{uuid.uuid4().hex[:10]}/with_odd-chars"


def _record(refresh: str = CANARY, generation: int = 0) -> TokenRecord:
    return TokenRecord.seeded(refresh, "access-" + refresh).model_copy(update={"generation": generation})


def test_empty_read(store: TokenStore) -> None:
    assert store.read(_key()) == (None, None)


def test_write_then_read_round_trips_the_secrets(store: TokenStore) -> None:
    key = _key()
    version = store.write(key, _record(), None)
    record, read_version = store.read(key)
    assert read_version == version
    assert record is not None and record.refresh_token is not None
    assert record.refresh_token.get_secret_value() == CANARY
    assert record == _record().model_copy(update={"updated_at": record.updated_at})


def test_stale_version_is_a_conflict_and_changes_nothing(store: TokenStore) -> None:
    key = _key()
    v1 = store.write(key, _record(generation=1), None)
    v2 = store.write(key, _record(generation=2), v1)
    assert v2 != v1
    with pytest.raises(StoreConflict) as info:
        store.write(key, _record("stale-writer-token", generation=3), v1)
    assert CANARY not in str(info.value) and "stale-writer-token" not in str(info.value)
    record, version = store.read(key)
    assert record is not None and record.generation == 2 and version == v2
    with pytest.raises(StoreConflict):
        store.write(key, _record(generation=9), None)  # "must not exist yet" but it does


def test_racing_writers_exactly_one_wins(store: TokenStore) -> None:
    key = _key()
    base = store.write(key, _record(generation=1), None)
    writers = 6
    barrier = threading.Barrier(writers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def write(n: int) -> None:
        barrier.wait()
        try:
            store.write(key, _record(f"writer-{n}-token", generation=2 + n), base)
            result = "won"
        except StoreConflict:
            result = "conflict"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * (writers - 1) + ["won"]
    record, _ = store.read(key)
    assert record is not None and record.generation >= 2


def test_no_secret_in_repr_or_errors(store: TokenStore, tmp_path: Path) -> None:
    assert CANARY not in repr(store)
    broken: Callable[[], Any]
    if isinstance(store, FileTokenStore):
        key = _key()
        store.write(key, _record(), None)
        Path(store._path(key)).write_text('{"refresh_token": "' + CANARY + '", "generation": "x"}')
        broken = lambda: store.read(key)  # noqa: E731
        with pytest.raises(ValueError) as info:
            broken()
        assert CANARY not in str(info.value)
    else:
        assert store.name in ("vault", "aws")


def test_unreachable_server_is_a_store_error_without_secrets() -> None:
    import boto3
    import hvac

    from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore
    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    vault = VaultTokenStore(hvac.Client(url="http://127.0.0.1:9", token=CANARY, timeout=2))
    aws = AwsSecretsManagerTokenStore(
        boto3.client(
            "secretsmanager",
            endpoint_url="http://127.0.0.1:9",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key=CANARY,
            config=__import__("botocore.config").config.Config(
                retries={"max_attempts": 0}, connect_timeout=2
            ),
        )
    )
    for store in (vault, aws):
        with pytest.raises(StoreError) as info:
            store.write("k", _record(), None)
        assert CANARY not in str(info.value)
