"""Upgrades: records written by 0.1.0 are read correctly, old and new code share one connection, and a
record of a newer schema is never written.

0.1.0 itself (the last commit of that release, taken from this repository's history with
``git archive``) runs in child processes beside the current code, on one file store.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokenrefresh.errors import ConfigurationError
from airflow_provider_tokenrefresh.stores import FileTokenStore
from airflow_provider_tokenrefresh.tokens import RECORD_SCHEMA_VERSION

from .conftest import EmulatorFactory
from .keeperhelp import make_keeper
from .releases import RELEASE_0_1_0, extract_release

ROOT = Path(__file__).resolve().parents[1]

OLD_CHILD = """
import json, sys
from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
from airflow_provider_tokenrefresh.dialects import PRESETS
from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper
from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
from airflow_provider_tokenrefresh.stores import FileTokenStore
import airflow_provider_tokenrefresh
a = json.loads(sys.argv[1])
client = RefreshClient(PRESETS["oauth2_basic"], ClientSettings(
    base_url=a["base_url"], credentials=ClientCredentials(a["client_id"], a["client_secret"]),
    allow_insecure_http=True))
keeper = TokenKeeper("conn", client, FileTokenStore(a["store"]), FileRefreshLock(a["locks"]), Seed(a["seed"]),
                     conn_id="test_oauth2_basic")
record = keeper.refresh(force=True).record if a["force"] else keeper.get_valid_token(min_ttl=60)
print(json.dumps({"generation": record.generation, "file": airflow_provider_tokenrefresh.__file__}))
"""


@pytest.fixture(scope="module")
def release_0_1_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_release(RELEASE_0_1_0, tmp_path_factory.mktemp("release-0.1.0"))


def _old(release: Path, emu: Any, tmp: Path, seed: str, *, force: bool) -> dict[str, Any]:
    args = {
        "base_url": emu.base_url,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "store": str(tmp / "store"),
        "locks": str(tmp / "locks"),
        "seed": seed,
        "force": force,
    }
    out = subprocess.run(
        [sys.executable, "-c", OLD_CHILD, json.dumps(args)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(release), "HOME": str(tmp)},
        cwd=str(tmp),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["file"].startswith(str(release))  # really the old code
    return result


def test_old_and_new_code_share_one_connection(
    release_0_1_0: Path, emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_basic")
    seed = emu.issue_tokens()
    store = FileTokenStore(str(tmp_path / "store"))
    # 0.1.0 refreshes first and writes a schema-1 record.
    assert _old(release_0_1_0, emu, tmp_path, seed.refresh_token, force=False)["generation"] == 1
    raw = json.loads(Path(store._path("conn")).read_text())
    assert raw["schema_version"] == 1 and "intent_id" not in raw
    # The new code reads it as it is (no refresh needed), then refreshes and writes schema 2.
    new = make_keeper(emu, tmp_path, seed.refresh_token)
    assert new.get_valid_token(min_ttl=60).generation == 1
    assert emu.refresh_requests == 1
    assert new.refresh(force=True).record.generation == 2
    assert json.loads(Path(store._path("conn")).read_text())["schema_version"] == RECORD_SCHEMA_VERSION
    # 0.1.0 reads the new record and uses it; and its next refresh continues the same chain.
    assert _old(release_0_1_0, emu, tmp_path, seed.refresh_token, force=False)["generation"] == 2
    assert emu.refresh_requests == 2
    assert _old(release_0_1_0, emu, tmp_path, seed.refresh_token, force=True)["generation"] == 3
    stored, _ = store.read("conn")
    assert stored is not None and stored.refresh_token is not None
    assert emu.is_refresh_token_valid(stored.refresh_token.get_secret_value())
    assert emu.counters.get("invalid_grant", 0) == 0
    # And the new code carries on from 0.1.0's write.
    assert make_keeper(emu, tmp_path, seed.refresh_token).refresh(force=True).record.generation == 4


def test_a_record_of_a_newer_schema_is_used_but_never_written(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_basic")
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token)
    keeper.get_valid_token(min_ttl=60)
    path = Path(FileTokenStore(str(tmp_path / "store"))._path("conn"))
    future = json.loads(path.read_text()) | {"schema_version": RECORD_SCHEMA_VERSION + 1, "field_of_0_9": [1]}
    path.write_text(json.dumps(future))
    before = path.read_bytes()
    newer = make_keeper(emu, tmp_path, seed.refresh_token)
    assert newer.get_valid_token(min_ttl=60).generation == 1  # still valid: used as it is
    with pytest.raises(ConfigurationError, match="newer release") as info:
        newer.refresh(force=True)
    assert "test_oauth2_basic" in str(info.value)
    assert path.read_bytes() == before
    assert emu.refresh_requests == 1
