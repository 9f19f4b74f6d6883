"""One contract, every store: file, OpenBao KV v2 (a real ``bao`` dev server), AWS Secrets Manager
(a real moto server), Airflow Variables (a real SQLite metadata database, ``airflow db migrate``d,
the store run in a child process: see ``variable_server.py``).

Each test uses keys of its own, so the session-wide servers need no cleaning between tests. Racing
writers are threads with their own store (and so their own client), released together by a
barrier; nothing waits on a clock.

Variables have no compare-and-set (``atomic = False``): where the contract needs one (writers
racing from one version), the Variable store is held to what it does promise instead: a write
compares the stored value with the version it was given and refuses a stale one, and it reads its
own write back; so whatever the race, the stored record is one a writer was told it wrote, and a
writer still holding an older version is refused.
"""

from __future__ import annotations

import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_tokenrefresh.errors import ConfigurationError, StoreConflict, StoreError
from airflow_provider_tokenrefresh.stores import FileTokenStore, TokenStore
from airflow_provider_tokenrefresh.tokens import TokenRecord

CANARY = "CANARY-refresh-in-store-3c9e1f"
VAULT_TOKEN_CANARY = "CANARY-vault-token-77b1"
AWS_SECRET_CANARY = "CANARY-aws-secret-key-51ce"


@dataclass
class Backend:
    """A store under test, how to make another one like it, and how to plant a raw value."""

    kind: str
    new_store: Callable[[], TokenStore]
    plant: Callable[[str, str], None]  # key, raw value as the backend would hold it

    def __post_init__(self) -> None:
        self.store = self.new_store()


def _file_backend(directory: Path) -> Backend:
    def plant(key: str, raw: str) -> None:
        store = FileTokenStore(str(directory))
        Path(store._path(key)).write_text(raw)

    return Backend("file", lambda: FileTokenStore(str(directory)), plant)


def _vault_backend(url: str, token: str) -> Backend:
    import hvac

    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    def plant(key: str, raw: str) -> None:
        path = VaultTokenStore(hvac.Client(url=url, token=token)).path(key)
        hvac.Client(url=url, token=token).secrets.kv.v2.create_or_update_secret(
            path=path, secret={"record": raw}, mount_point="secret"
        )

    # A factory, as from_connection builds it: one client per thread.
    return Backend("vault", lambda: VaultTokenStore(lambda: hvac.Client(url=url, token=token)), plant)


def _boto_client(endpoint: str, **overrides: Any) -> Any:
    import boto3

    settings: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    return boto3.session.Session().client("secretsmanager", **(settings | overrides))


def _aws_backend(endpoint: str) -> Backend:
    from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore

    def plant(key: str, raw: str) -> None:
        name = AwsSecretsManagerTokenStore(None).secret_name(key)
        _boto_client(endpoint).create_secret(Name=name, SecretString=raw)

    return Backend("aws", lambda: AwsSecretsManagerTokenStore(_boto_client(endpoint)), plant)


def _variable_backend(server: Any, kind: str = "variable") -> Backend:
    return Backend(kind, lambda: server.new_store(kind), server.plant)


@pytest.fixture(params=["file", "vault", "aws", "variable", "sealed_variable"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "file":
        return _file_backend(tmp_path / "records")
    if request.param == "vault":
        url, token = request.getfixturevalue("bao_server")
        return _vault_backend(url, token)
    if request.param in ("variable", "sealed_variable"):
        return _variable_backend(request.getfixturevalue("variable_server"), request.param)
    return _aws_backend(request.getfixturevalue("moto_server"))


def test_only_the_variable_store_lacks_a_compare_and_set(backend: Backend) -> None:
    # The racing tests below hold a store without one to a weaker promise: say which that is.
    assert backend.store.atomic is (backend.kind not in ("variable", "sealed_variable"))


def _key(tail: str = "conn") -> str:
    """A fresh key with the characters real keys have: ``/``, ``-``, ``_``."""
    return f"contract-{uuid.uuid4().hex[:10]}/team_a/{tail}"


def _record(refresh: str = CANARY, generation: int = 0) -> TokenRecord:
    return TokenRecord.seeded(refresh, f"access-{refresh}").model_copy(update={"generation": generation})


def _all_text(exc: BaseException) -> str:
    """Everything a log line or a traceback could show of ``exc``, chained exceptions included."""
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


# -- the contract ------------------------------------------------------------------------------------


def test_reading_a_key_never_written_gives_none_and_no_version(backend: Backend) -> None:
    assert backend.store.read(_key()) == (None, None)


def test_first_write_reads_back_equal_with_secrets_intact(backend: Backend) -> None:
    key = _key()
    written = _record(generation=3)
    version = backend.store.write(key, written, None)
    assert version is not None
    record, read_version = backend.new_store().read(key)  # another instance: nothing cached
    assert read_version == version
    assert record == written
    assert record is not None and record.refresh_token is not None and record.access_token is not None
    assert record.refresh_token.get_secret_value() == CANARY
    assert record.access_token.get_secret_value() == f"access-{CANARY}"


def test_write_with_the_current_version_gives_a_new_version(backend: Backend) -> None:
    key = _key()
    v1 = backend.store.write(key, _record(generation=1), None)
    v2 = backend.store.write(key, _record("second-token", generation=2), v1)
    v3 = backend.store.write(key, _record("third-token", generation=3), v2)
    assert len({v1, v2, v3}) == 3
    record, version = backend.store.read(key)
    assert version == v3
    assert record is not None and record.generation == 3


def test_stale_version_is_a_conflict_and_changes_nothing(backend: Backend) -> None:
    key = _key()
    v1 = backend.store.write(key, _record(generation=1), None)
    current = _record("current-token", generation=2)
    v2 = backend.store.write(key, current, v1)
    with pytest.raises(StoreConflict):
        backend.store.write(key, _record("stale-writer-token", generation=3), v1)
    with pytest.raises(StoreConflict):  # "must not exist yet", but it does
        backend.store.write(key, _record("late-creator-token", generation=9), None)
    assert backend.store.read(key) == (current, v2)


def _race(backend: Backend, key: str, base: Any, writers: int) -> tuple[dict[int, Any], list[BaseException]]:
    """``writers`` threads, each with its own store, write from ``base`` at once: each winner and
    the version it was given, and anything raised other than a conflict."""
    stores = [backend.new_store() for _ in range(writers)]
    barrier = threading.Barrier(writers)
    winners: dict[int, Any] = {}
    unexpected: list[BaseException] = []
    guard = threading.Lock()

    def write(n: int) -> None:
        barrier.wait()
        try:
            version = stores[n].write(key, _record(f"writer-{n}-token", generation=100 + n), base)
        except StoreConflict:
            return
        except BaseException as exc:
            with guard:
                unexpected.append(exc)
            return
        with guard:
            winners[n] = version

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    return winners, unexpected


def _check_race(backend: Backend, key: str, base: Any, winners: dict[int, Any]) -> Any:
    """What a race from ``base`` must leave behind; returns the version now stored."""
    record, version = backend.store.read(key)
    assert record is not None
    writer = record.generation - 100
    if backend.store.atomic:
        # Compare-and-set: exactly one writer wins, and it is the one whose record is stored.
        assert list(winners) == [writer], winners
    else:
        # No compare-and-set: overlapping writers may each be told they wrote. What holds: at least
        # one write lands; the stored record is one a writer was told it wrote, under exactly the
        # version that writer was given (its read-back saw it) ...
        assert winners, "every racing writer was refused"
        assert writer in winners, (writer, winners)
    assert winners[writer] == version
    # ... and a writer still holding the version the race started from is refused, changing nothing.
    with pytest.raises(StoreConflict):
        backend.new_store().write(key, _record("late-stale-writer", generation=999), base)
    assert backend.store.read(key) == (record, version)
    return version


def test_writers_racing_from_the_same_version_exactly_one_wins(backend: Backend) -> None:
    key = _key()
    version = backend.store.write(key, _record(generation=1), None)
    for _ in range(4):  # each round races from the version the previous winner wrote
        winners, unexpected = _race(backend, key, version, writers=6)
        assert unexpected == []
        version = _check_race(backend, key, version, winners)


def test_writers_racing_to_create_exactly_one_wins(backend: Backend) -> None:
    key = _key()
    winners, unexpected = _race(backend, key, None, writers=6)
    assert unexpected == []
    _check_race(backend, key, None, winners)


def test_a_writer_that_read_before_another_wrote_is_refused(backend: Backend) -> None:
    """Read-compare-write, as the keeper uses every store: two readers of one version, one writes
    first; the other's write is refused (a store without compare-and-set included), and succeeds
    once it has read again."""
    key = _key()
    base = backend.store.write(key, _record(generation=1), None)
    first, second = backend.new_store(), backend.new_store()
    seen_first, seen_second = first.read(key), second.read(key)
    assert seen_first[1] == seen_second[1] == base
    v2 = first.write(key, _record("first-writer", generation=2), seen_first[1])
    with pytest.raises(StoreConflict):
        second.write(key, _record("second-writer", generation=2), seen_second[1])
    record, version = backend.store.read(key)
    assert version == v2 and record is not None and record.refresh_token is not None
    assert record.refresh_token.get_secret_value() == "first-writer"
    again = second.read(key)
    v3 = second.write(key, _record("second-writer", generation=3), again[1])
    assert backend.new_store().read(key)[1] == v3 != v2


@pytest.mark.parametrize(
    "tail", ["plain", "with-dash", "with_underscore", "nested/deeper/key", "dots.in.name", "a@b+c=d"]
)
def test_keys_with_path_like_characters_work(backend: Backend, tail: str) -> None:
    key = _key(tail)
    version = backend.store.write(key, _record(f"token-for-{tail}"), None)
    record, read_version = backend.store.read(key)
    assert read_version == version
    assert record is not None and record.refresh_token is not None
    assert record.refresh_token.get_secret_value() == f"token-for-{tail}"


def test_similar_keys_do_not_collide(backend: Backend) -> None:
    stem = f"contract-{uuid.uuid4().hex[:10]}"
    keys = [f"{stem}/a", f"{stem}_a", f"{stem}-a", f"{stem}/a/b"]
    for n, key in enumerate(keys):
        backend.store.write(key, _record(f"token-{n}-of-similar"), None)
    for n, key in enumerate(keys):
        record, _ = backend.store.read(key)
        assert record is not None and record.refresh_token is not None
        assert record.refresh_token.get_secret_value() == f"token-{n}-of-similar"


def test_no_secret_in_repr_or_in_conflict_errors(backend: Backend) -> None:
    key = _key()
    v1 = backend.store.write(key, _record(generation=1), None)
    backend.store.write(key, _record(CANARY + "-next", generation=2), v1)
    assert CANARY not in repr(backend.store)
    errors: list[BaseException] = []
    for expected in (v1, None):
        with pytest.raises(StoreConflict) as info:
            backend.store.write(key, _record(CANARY + "-stale", generation=3), expected)
        errors.append(info.value)
    for error in errors:
        assert CANARY not in _all_text(error)
    assert CANARY not in repr(backend.store)


# Short, so that an error quoting the raw value (pydantic shows up to ~50 characters) shows it whole.
SHORT_CANARY = "CANARY-rt-9f1"
_CORRUPT = {
    "not json": '{"refresh_token":"' + SHORT_CANARY + '",',
    "wrong shape": '{"refresh_token":"' + SHORT_CANARY + '","generation":"x"}',
}


@pytest.mark.parametrize("damage", sorted(_CORRUPT))
def test_a_corrupted_record_is_a_clear_error_without_the_secret(
    backend: Backend, damage: str, request: pytest.FixtureRequest
) -> None:
    key = _key()
    backend.plant(key, _CORRUPT[damage])
    with pytest.raises(ConfigurationError) as info:
        backend.store.read(key)
    assert SHORT_CANARY not in _all_text(info.value)
    assert key in str(info.value)  # names where the bad value is
    # It may hold the only live refresh token: the advice is never to delete it.
    message = str(info.value)
    assert "do not delete it" in message or "Do not delete it" in message, message
    assert "delete it or" not in message, message


def test_unreachable_servers_are_store_errors_without_credentials(tmp_path: Path) -> None:
    import botocore.config
    import hvac

    from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore
    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    port = _closed_port()
    vault = VaultTokenStore(hvac.Client(url=f"http://127.0.0.1:{port}", token=VAULT_TOKEN_CANARY, timeout=2))
    aws = AwsSecretsManagerTokenStore(
        _boto_client(
            f"http://127.0.0.1:{port}",
            aws_secret_access_key=AWS_SECRET_CANARY,
            config=botocore.config.Config(retries={"max_attempts": 0}, connect_timeout=2),
        )
    )
    stores: list[TokenStore] = [vault, aws]
    for store in stores:
        for write in (False, True):
            with pytest.raises(StoreError) as info:
                if write:
                    store.write("k", _record(), None)
                else:
                    store.read("k")
            text = _all_text(info.value)
            assert not isinstance(info.value, StoreConflict)
            for secret in (CANARY, VAULT_TOKEN_CANARY, AWS_SECRET_CANARY):
                assert secret not in text
            assert f"127.0.0.1:{port}" in str(info.value) or "cannot reach" in str(info.value)
        assert VAULT_TOKEN_CANARY not in repr(store) and AWS_SECRET_CANARY not in repr(store)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a write whose answer was lost ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vault", "aws"])
def test_a_retried_write_that_already_landed_is_not_a_conflict(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """The server applied the write but its answer was lost; the retry finds its own record there."""
    if kind == "vault":
        backend = _vault_backend(*request.getfixturevalue("bao_server"))
    else:
        backend = _aws_backend(request.getfixturevalue("moto_server"))
    key = _key()
    mine = _record("retried-token", generation=2)
    created = backend.store.write(key, mine, None)
    assert backend.store.write(key, mine, None) == created  # CreateSecret / cas=0 retried
    v2 = backend.store.write(key, _record("rotated-token", generation=3), created)
    rotated = backend.store.read(key)[0]
    assert rotated is not None
    assert backend.store.write(key, rotated, created) == v2  # stage move / cas=v1 retried
    with pytest.raises(StoreConflict):  # a different record from the old version still loses
        backend.store.write(key, _record("someone-else", generation=3), created)


# -- Vault / OpenBao specifics -----------------------------------------------------------------------


def _conn(**fields: Any) -> SimpleNamespace:
    base: dict[str, Any] = dict.fromkeys(("host", "port", "schema", "login", "password"))
    base["extra_dejson"] = fields.pop("extra", {})
    return SimpleNamespace(**(base | fields))


def test_vault_from_connection_round_trips(bao_server: tuple[str, str]) -> None:
    from urllib.parse import urlsplit

    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    url, token = bao_server
    parts = urlsplit(url)
    prefix = f"conn-{uuid.uuid4().hex[:8]}"
    by_fields = VaultTokenStore.from_connection(
        _conn(host=parts.hostname, port=parts.port, schema="http", password=token,
              extra={"mount_point": "secret", "path_prefix": prefix, "verify": "true", "timeout": "5"}),
    )  # fmt: skip
    by_url = VaultTokenStore.from_connection(_conn(host=url, password=token), path_prefix=prefix)
    assert by_fields.path_prefix == by_url.path_prefix == f"{prefix}/"
    written = _record()
    version = by_fields.write("team/key", written, None)
    assert by_url.read("team/key") == (written, version)
    assert token not in repr(by_fields) and url in repr(by_fields)


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"host": "vault.example", "password": ""}, "password"),
        ({"host": "", "password": "t"}, "host"),
        ({"host": "vault.example", "schema": "postgres", "password": "t"}, "schema"),
        ({"host": "vault.example", "password": "t", "extra": {"verify": "/no/such/ca.pem"}}, "verify"),
        ({"host": "vault.example", "password": "t", "extra": {"timeout": "soon"}}, "timeout"),
    ],
)
def test_vault_from_connection_refuses_bad_settings(fields: dict[str, Any], complaint: str) -> None:
    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    with pytest.raises(ConfigurationError, match=complaint):
        VaultTokenStore.from_connection(_conn(**fields))


def test_vault_url_from_connection_fields() -> None:
    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    def url(**fields: Any) -> str:
        return VaultTokenStore.from_connection(_conn(password="t", **fields)).url

    assert url(host="vault.example") == "https://vault.example"
    assert url(host="vault.example", port=8200) == "https://vault.example:8200"
    assert url(host="vault.example", port=8200, schema="http") == "http://vault.example:8200"
    assert url(host="https://vault.example:8443/", port=8200) == "https://vault.example:8443"
    assert url(host="http://vault.example", port=8200) == "http://vault.example:8200"


def test_vault_refuses_keys_that_escape_the_prefix(bao_server: tuple[str, str]) -> None:
    import hvac

    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    store = VaultTokenStore(hvac.Client(url=bao_server[0], token=bao_server[1]))
    for key in ("a/../../b", "./a", "a//b", "/a", "a/", "with space", "ünï"):
        with pytest.raises(ConfigurationError):
            store.write(key, _record(), None)
        with pytest.raises(ConfigurationError):
            store.read(key)


def test_vault_deleted_latest_version_reads_as_no_record_and_can_be_written(
    bao_server: tuple[str, str],
) -> None:
    import hvac

    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    client = hvac.Client(url=bao_server[0], token=bao_server[1])
    store = VaultTokenStore(client)
    key = _key()
    v1 = store.write(key, _record(generation=1), None)
    client.secrets.kv.v2.delete_latest_version_of_secret(path=store.path(key), mount_point="secret")
    record, version = store.read(key)
    assert record is None and version == v1  # check-and-set must still name the deleted version
    with pytest.raises(StoreConflict):
        store.write(key, _record(generation=2), None)
    v2 = store.write(key, _record(generation=2), version)
    assert v1 == 1 and v2 == 2
    client.secrets.kv.v2.delete_metadata_and_all_versions(path=store.path(key), mount_point="secret")
    assert store.read(key) == (None, None)


def test_vault_errors_name_the_path_but_not_the_token(bao_server: tuple[str, str]) -> None:
    import hvac

    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    url, token = bao_server
    forbidden = VaultTokenStore(hvac.Client(url=url, token=VAULT_TOKEN_CANARY))
    key = _key()
    with pytest.raises(StoreError, match="HTTP 403") as info:
        forbidden.write(key, _record(), None)
    assert key in str(info.value) and "permission denied" in str(info.value)
    assert VAULT_TOKEN_CANARY not in _all_text(info.value) and CANARY not in _all_text(info.value)

    no_mount = VaultTokenStore(hvac.Client(url=url, token=token), mount_point="no-such-mount")
    with pytest.raises(StoreError, match="no-such-mount"):  # not "no record": the mount is missing
        no_mount.read(key)
    with pytest.raises(StoreError, match="no-such-mount"):
        no_mount.write(key, _record(), None)


def test_vault_kv_version_1_mount_is_refused(bao_server: tuple[str, str]) -> None:
    import hvac

    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    client = hvac.Client(url=bao_server[0], token=bao_server[1])
    mount = f"kv1-{uuid.uuid4().hex[:6]}"
    client.sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    store = VaultTokenStore(client, mount_point=mount)
    with pytest.raises(StoreError, match="KV version 2") as info:
        store.write(_key(), _record(), None)
    assert CANARY not in _all_text(info.value)


def test_vault_factory_gives_each_thread_its_own_client(bao_server: tuple[str, str]) -> None:
    import hvac

    from airflow_provider_tokenrefresh.stores.vault import VaultTokenStore

    made: list[Any] = []

    def factory() -> Any:
        client = hvac.Client(url=bao_server[0], token=bao_server[1])
        made.append(client)
        return client

    store = VaultTokenStore(factory)
    assert made == []  # nothing until first use
    store.read(_key())
    store.read(_key())
    thread = threading.Thread(target=store.read, args=(_key(),))
    thread.start()
    thread.join()
    assert len(made) == 2


# -- AWS Secrets Manager specifics -----------------------------------------------------------------


def test_aws_losing_writer_leaves_no_pending_version(moto_server: str) -> None:
    from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore

    client = _boto_client(moto_server)
    store = AwsSecretsManagerTokenStore(client)
    key = _key()
    v1 = store.write(key, _record(generation=1), None)
    v2 = store.write(key, _record("winner", generation=2), v1)
    with pytest.raises(StoreConflict):
        store.write(key, _record("loser", generation=2), v1)
    stages = client.describe_secret(SecretId=store.secret_name(key))["VersionIdsToStages"]
    assert stages[v2] == ["AWSCURRENT"] or sorted(stages[v2]) == ["AWSCURRENT", "AWSPENDING"]
    assert stages[v1] == ["AWSPREVIOUS"]
    assert not any("AWSPENDING" in labels for version, labels in stages.items() if version not in (v1, v2))


def test_aws_refuses_names_secrets_manager_would_refuse(moto_server: str) -> None:
    from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore

    store = AwsSecretsManagerTokenStore(_boto_client(moto_server))
    # moto itself accepts these; AWS does not, so the store checks before calling.
    for key in ("with space", "ünï", "semi;colon", "x" * 600):
        with pytest.raises(ConfigurationError):
            store.read(key)
        with pytest.raises(ConfigurationError):
            store.write(key, _record(), None)


def test_aws_binary_secret_is_a_clear_error(moto_server: str) -> None:
    from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore

    store = AwsSecretsManagerTokenStore(_boto_client(moto_server))
    key = _key()
    _boto_client(moto_server).create_secret(Name=store.secret_name(key), SecretBinary=CANARY.encode())
    with pytest.raises(ConfigurationError, match="binary") as info:
        store.read(key)
    assert CANARY not in _all_text(info.value)


def test_aws_secret_scheduled_for_deletion_is_named(moto_server: str) -> None:
    from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore

    client = _boto_client(moto_server)
    store = AwsSecretsManagerTokenStore(client)
    key = _key()
    store.write(key, _record(), None)
    client.delete_secret(SecretId=store.secret_name(key), RecoveryWindowInDays=7)
    with pytest.raises(StoreError, match="scheduled for deletion") as info:
        store.read(key)
    assert not isinstance(info.value, StoreConflict)
    assert CANARY not in _all_text(info.value)


def test_aws_from_connection_round_trips(moto_server: str) -> None:
    from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore

    prefix = f"conn-{uuid.uuid4().hex[:8]}/"
    store = AwsSecretsManagerTokenStore.from_connection(
        _conn(login="testing", password=AWS_SECRET_CANARY,
              extra={"region_name": "us-east-1", "endpoint_url": moto_server, "prefix": prefix,
                     "aws_session_token": "session-canary-token", "timeout": 5}),
    )  # fmt: skip
    assert store.prefix == prefix
    written = _record()
    version = store.write("team/key", written, None)
    reader = AwsSecretsManagerTokenStore(_boto_client(moto_server), prefix=prefix)
    assert reader.read("team/key") == (written, version)
    assert AWS_SECRET_CANARY not in repr(store) and "session-canary-token" not in repr(store)


def test_aws_from_connection_refuses_bad_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow_provider_tokenrefresh.stores.aws import AwsSecretsManagerTokenStore

    with pytest.raises(ConfigurationError, match="both"):
        AwsSecretsManagerTokenStore.from_connection(_conn(login="AKIDONLY"))
    with pytest.raises(ConfigurationError, match="verify"):
        AwsSecretsManagerTokenStore.from_connection(_conn(extra={"verify": "/no/such/ca.pem"}))
    # No region anywhere: boto3 cannot build the client; said on first use, as configuration.
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    store = AwsSecretsManagerTokenStore.from_connection(_conn(login="a", password=AWS_SECRET_CANARY))
    with pytest.raises(ConfigurationError, match="region") as info:
        store.read("k")
    assert AWS_SECRET_CANARY not in _all_text(info.value)
