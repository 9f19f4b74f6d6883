"""``store: sealed_variable`` on a real metadata DB: a record under the old, masked Variable moves in
two writes without a moment where it lives nowhere, the old Variable becomes a tombstone that the
plain store refuses, nothing is readable without the Fernet key, and rotation works.

The stores run in a child (``variable_server.py``) on a migrated SQLite database; the raw Variable
values are read back there through ``airflow.models.Variable`` (as the UI and the API see them,
Airflow's own at-rest encryption removed).
"""

from __future__ import annotations

import json
import traceback
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from airflow_provider_tokenrefresh.errors import ConfigurationError, StoreConflict
from airflow_provider_tokenrefresh.stores.seal import Sealer, classify_old, envelope_token
from airflow_provider_tokenrefresh.tokens import TokenRecord

RT = "CANARY-sealed-refresh-5d0c2a"
AT = "CANARY-sealed-access-91e4b7"


def _names(tail: str) -> tuple[str, str]:
    """The keeper's (old, masked) key and where the sealed store puts it (``variable_server``'s rule)."""
    import uuid

    old = f"tokenrefresh_token__{tail}_{uuid.uuid4().hex[:8]}"
    return old, f"{old}.sealed"


def _record(generation: int = 3, intent: str | None = None) -> TokenRecord:
    record = TokenRecord.seeded(RT, AT).model_copy(update={"generation": generation})
    if intent is not None:
        record = record.model_copy(update={"intent_id": intent, "refresh_started_by": "test"})
    return record


def _all_text(exc: BaseException) -> str:
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


def test_an_old_record_moves_in_two_writes_and_never_lives_nowhere(variable_server: Any) -> None:
    old_key, sealed_key = _names("move")
    variable_server.plant(old_key, _record().to_storage_json())  # what 0.2.0 left
    store = variable_server.new_store("sealed_variable")

    record, version = store.read(old_key)
    assert record is not None and record.generation == 3 and str(version).startswith("old:")

    # First write (a claim): the old Variable becomes a tombstone holding the sealed record.
    claimed = store.write(old_key, _record(intent="i-1"), version)
    assert str(claimed).startswith("moving:")
    raw_old = store.raw(old_key)
    assert store.raw(sealed_key) is None
    moving = classify_old(raw_old)
    assert moving.kind == "moving" and moving.moved_to == sealed_key
    assert RT not in raw_old and AT not in raw_old
    again, again_version = store.read(old_key)
    assert again is not None and again.intent_id == "i-1" and again_version == claimed

    # Second write (the answer): the sealed Variable exists, the tombstone is only a pointer.
    answered = store.write(old_key, _record(generation=4), claimed)
    raw_sealed = store.raw(sealed_key)
    assert raw_sealed is not None and RT not in raw_sealed and AT not in raw_sealed
    assert envelope_token(raw_sealed) is not None
    pointer = classify_old(store.raw(old_key))
    assert pointer.kind == "moved" and pointer.sealed is None and pointer.moved_to == sealed_key
    final, final_version = store.read(old_key)
    assert final is not None and final.generation == 4 and final_version == answered
    assert final.refresh_token is not None and final.refresh_token.get_secret_value() == RT

    # A writer still holding a version from before the move is refused at each step.
    with pytest.raises(StoreConflict):
        store.write(old_key, _record(generation=9), version)
    with pytest.raises(StoreConflict):
        store.write(old_key, _record(generation=9), claimed)


def test_the_plain_store_refuses_the_tombstone_and_says_where_the_record_went(variable_server: Any) -> None:
    old_key, sealed_key = _names("refused")
    variable_server.plant(old_key, _record().to_storage_json())
    sealed = variable_server.new_store("sealed_variable")
    _, version = sealed.read(old_key)
    sealed.write(old_key, _record(intent="i-1"), version)

    plain = variable_server.new_store("variable")
    with pytest.raises(ConfigurationError) as caught:
        plain.read(old_key)
    text = str(caught.value)
    assert (
        "tombstone" in text and sealed_key in text and "sealed_variable" in text and "Do not delete" in text
    )
    assert RT not in _all_text(caught.value)


def test_a_fresh_record_is_created_sealed_and_the_old_name_stays_unused(variable_server: Any) -> None:
    old_key, sealed_key = _names("fresh")
    store = variable_server.new_store("sealed_variable")
    assert store.read(old_key) == (None, None)
    version = store.write(old_key, _record(generation=0), None)
    assert store.raw(old_key) is None
    raw = store.raw(sealed_key)
    assert (
        raw is not None and RT not in raw and json.loads(raw)["sealed_by"] == "airflow-provider-tokenrefresh"
    )
    assert store.read(old_key)[1] == version
    # An old record that appears meanwhile (a host with an outdated view seeding) is not overwritten.
    other_old, _ = _names("fresh_race")
    variable_server.plant(other_old, _record().to_storage_json())
    with pytest.raises(StoreConflict):
        store.write(other_old, _record(generation=0), None)


def test_a_pointer_without_its_sealed_record_is_a_clear_error(variable_server: Any) -> None:
    from airflow_provider_tokenrefresh.stores.seal import tombstone

    old_key, sealed_key = _names("lost")
    variable_server.plant(old_key, tombstone(sealed_key))
    with pytest.raises(ConfigurationError) as caught:
        variable_server.new_store("sealed_variable").read(old_key)
    text = str(caught.value)
    assert sealed_key in text and "does not exist" in text and "Do not delete" in text


def test_another_fernet_key_cannot_open_it_and_the_error_says_so_without_the_token(
    variable_server: Any,
) -> None:
    old_key, _ = _names("otherkey")
    store = variable_server.new_store("sealed_variable")
    store.write(old_key, _record(), None)
    stranger = variable_server.new_store("sealed_variable", Fernet.generate_key().decode())
    with pytest.raises(ConfigurationError) as caught:
        stranger.read(old_key)
    text = _all_text(caught.value)
    assert "[core] fernet_key" in str(caught.value) and "Do not delete" in str(caught.value)
    assert RT not in text and AT not in text


def test_rotation_new_key_first_reads_old_seals_and_reseals_on_write(variable_server: Any) -> None:
    old_fernet, new_fernet = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old_key, sealed_key = _names("rotate")
    before = variable_server.new_store("sealed_variable", old_fernet)
    version = before.write(old_key, _record(), None)

    rotated = variable_server.new_store("sealed_variable", f"{new_fernet},{old_fernet}")
    record, read_version = rotated.read(old_key)
    assert record is not None and read_version == version
    assert rotated.sealed_with_old_key() == [sealed_key]
    rotated.write(old_key, _record(generation=4), read_version)
    assert rotated.sealed_with_old_key() == [sealed_key]  # not read since: still as last seen
    rotated.read(old_key)
    assert rotated.sealed_with_old_key() == []

    only_new = variable_server.new_store("sealed_variable", new_fernet)
    resealed, _ = only_new.read(old_key)
    assert resealed is not None and resealed.generation == 4


@pytest.mark.parametrize("value", ["", " , ", "not-a-fernet-key"])
def test_a_missing_or_invalid_fernet_key_is_a_clear_error(value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Sealer(value)
    assert "[core] fernet_key" in str(caught.value) and "Nothing was read or written" in str(caught.value)


def test_a_record_with_a_secret_canary_is_never_in_clear_in_the_sealed_value() -> None:
    sealer = Sealer(Fernet.generate_key().decode())
    record = _record().model_copy(update={"refresh_token": SecretStr(RT * 3)})
    token = sealer.seal(record.to_storage_json())
    assert RT not in token
    plain, primary = sealer.unseal(token)
    assert primary and TokenRecord.from_storage_json(plain).refresh_token == record.refresh_token


@pytest.fixture(scope="module")
def other_key_server(variable_server: Any) -> Any:
    """A second component on the same metadata DB whose [core] fernet_key is another one."""
    from .variable_server import VariableStoreServer

    server = VariableStoreServer(
        variable_server.home, fernet_key=Fernet.generate_key().decode(), migrate=False
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["variable", "sealed_variable"])
def test_a_component_with_another_fernet_key_never_reads_a_record_as_absent(
    variable_server: Any, other_key_server: Any, kind: str
) -> None:
    """Airflow's ``Variable.get`` answers ``None`` for a value it cannot decrypt; read as "no
    record", the keeper would seed from the connection's (spent) refresh token and the vendor's
    reuse detection would revoke the family."""
    old_key, _ = _names(f"undecryptable_{kind}")
    variable_server.new_store(kind).write(old_key, _record(), None)
    stranger = other_key_server.new_store(kind)
    with pytest.raises(ConfigurationError) as caught:
        stranger.read(old_key)
    text = str(caught.value)
    assert "[core] fernet_key" in text and "Do not delete" in text, text
    assert RT not in _all_text(caught.value)
    # A key that no component ever wrote is still simply absent.
    never, _ = _names(f"never_{kind}")
    assert stranger.read(never) == (None, None)


MOVE_CHILD = r"""
import json, os, signal, sys
from datetime import timedelta
from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
from airflow_provider_tokenrefresh.dialects import PRESETS
from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper
from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
from airflow_provider_tokenrefresh.stores.sealed_variable import SealedVariableTokenStore
from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore
from airflow_provider_tokenrefresh.tokens import utcnow
a = json.loads(sys.argv[1])
client = RefreshClient(PRESETS["oauth2_basic"], ClientSettings(
    base_url=a["base_url"], credentials=ClientCredentials(a["client_id"], a["client_secret"]),
    allow_insecure_http=True))
store = (SealedVariableTokenStore(sealed_keys={a["key"]: a["sealed"]}) if a["sealed"] else VariableTokenStore())
offset = timedelta(seconds=a["clock_offset"])
keeper = TokenKeeper(a["key"], client, store, FileRefreshLock(a["locks"]), Seed(a["seed"]), conn_id="crash_move",
                     settle=0.3, stale_after=2.0, clock=lambda: utcnow() + offset)
if a["kill_at"]:
    keeper.checkpoint = lambda name: os.kill(os.getpid(), signal.SIGKILL) if name == a["kill_at"] else None
try:
    record = keeper.refresh(force=True).record
    print(json.dumps({"generation": record.generation, "state": record.state}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "kind": getattr(exc, "kind", None)}))
"""


@pytest.mark.parametrize(
    ("kill_at", "end"),
    [("intent_written", "valid"), ("before_request", "valid"), ("after_answer", "reauth_required")],
)
def test_a_keeper_killed_in_the_middle_of_the_move_loses_nothing_it_had(
    variable_server: Any, emulator_factory: Any, tmp_path: Any, kill_at: str, end: str
) -> None:
    """SIGKILL at a step of the first refresh after the switch (its claim is the move); a keeper
    that comes after the stale bound recovers as on the plain store: valid when the request never
    left, re-authorization when the vendor's answer died with the killed process."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    emu = emulator_factory("oauth2_basic", rotation=True, reuse_detection=True)
    seed = emu.issue_tokens()
    old_key, sealed_key = _names(f"crash_{kill_at}")
    root = str(Path(__file__).resolve().parents[2])
    env = {**variable_server.env(), "PYTHONPATH": root}

    def child(*, sealed: bool, kill: str | None, offset: float) -> subprocess.CompletedProcess[str]:
        args = {
            "base_url": emu.base_url, "client_id": emu.client_id, "client_secret": emu.client_secret,
            "key": old_key, "sealed": sealed_key if sealed else None, "seed": seed.refresh_token,
            "locks": str(tmp_path / "locks"), "kill_at": kill, "clock_offset": offset,
        }  # fmt: skip
        return subprocess.run(
            [sys.executable, "-c", MOVE_CHILD, json.dumps(args)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    first = child(sealed=False, kill=None, offset=0)  # 0.2.0's layout: a record under the old name
    assert json.loads(first.stdout.splitlines()[-1]) == {"generation": 1, "state": "valid"}, first.stderr[
        -2000:
    ]
    killed = child(sealed=True, kill=kill_at, offset=0)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    reader = variable_server.new_store("sealed_variable")
    # The move had begun: the old Variable holds the tombstone with the claimed record, no sealed one yet.
    moving = classify_old(reader.raw(old_key))
    assert moving.kind == "moving" and reader.raw(sealed_key) is None, moving

    recovered = child(sealed=True, kill=None, offset=10.0)  # past the 2 s stale bound
    outcome = json.loads(recovered.stdout.splitlines()[-1])
    record, _ = variable_server.new_store("sealed_variable").read(old_key)
    assert record is not None and record.state == end, (outcome, record and record.state)
    if end == "valid":
        assert outcome == {"generation": 2, "state": "valid"}, outcome
        assert record.refresh_token is not None and emu.is_refresh_token_valid(
            record.refresh_token.get_secret_value()
        )
        assert classify_old(reader.raw(old_key)).kind == "moved" and reader.raw(sealed_key) is not None
        assert emu.counters.get("invalid_grant", 0) == 0, emu.counters
    else:
        # The answer died with the killed process: the vendor rotated, nothing stored can go on.
        assert outcome.get("kind") == "reauth_required" or record.state == "reauth_required", outcome
    # The first refresh, and either the recovery's (request never sent) or the killed one's (answer lost).
    assert emu.counters.get("ok", 0) == 2, emu.counters
