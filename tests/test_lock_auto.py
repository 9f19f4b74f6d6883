"""``lock: auto`` (the default): the Celery broker's Redis only where it really coordinates every
component, else a file lock; a process that would pick another lock than the record's refuses."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import EmulatorFactory

CHILD = """
import json, sys
from airflow_provider_tokenrefresh.errors import TokenRefreshError
from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
hook = TokenRefreshHook("vendor")
try:
    record = hook.get_record(min_ttl=60)
    print(json.dumps({"ok": True, "lock": hook.keeper.lock.name, "lock_in_use": record.lock_in_use}))
except TokenRefreshError as exc:
    print(json.dumps({"ok": False, "lock": hook.keeper.lock.name, "error": str(exc), "kind": exc.kind}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(home: Path, conn: dict[str, Any], **airflow: str) -> dict[str, Any]:
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(home), "HOME": str(home)}
    env["AIRFLOW_CONN_VENDOR"] = json.dumps(conn)
    env |= {f"AIRFLOW__{key.upper()}": value for key, value in airflow.items()}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _conn(emu: Any, seed: Any) -> dict[str, Any]:
    return {
        "conn_type": "tokenrefresh_oauth2_basic",
        "host": emu.base_url,
        "login": emu.client_id,
        "password": emu.client_secret,
        # default lock (auto); a file store, so that no metadata database is needed here
        "extra": {"refresh_token": seed.refresh_token, "allow_insecure_http": True, "store": "file"},
    }


def test_local_executor_gets_a_file_lock_even_with_the_celery_default_broker(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_basic")
    result = _run(tmp_path, _conn(emu, emu.issue_tokens()), core__executor="LocalExecutor")
    assert result == {"ok": True, "lock": "file", "lock_in_use": "file"}


def test_celery_with_a_broker_that_does_not_answer_gets_a_file_lock(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_basic")
    result = _run(
        tmp_path,
        _conn(emu, emu.issue_tokens()),
        core__executor="CeleryExecutor",
        celery__broker_url=f"redis://127.0.0.1:{_free_port()}/0",
    )
    assert result["ok"] and result["lock"] == "file"


@pytest.mark.slow
def test_celery_with_a_redis_broker_locks_there_and_a_misconfigured_component_refuses(
    emulator_factory: EmulatorFactory, tmp_path: Path, redis_server: str
) -> None:
    import redis

    emu = emulator_factory("oauth2_basic")
    conn = _conn(emu, emu.issue_tokens())
    celery = {"core__executor": "CeleryExecutor", "celery__broker_url": redis_server}
    result = _run(tmp_path, conn, **celery)
    assert result["ok"] and result["lock"] == "redis"
    assert result["lock_in_use"].startswith("redis://127.0.0.1:")
    # Judged at Redis: the refresh really took the lock there (its fencing counter exists).
    assert redis.Redis.from_url(redis_server).keys("tokenrefresh:lock:*:fence")
    refreshes = emu.refresh_requests
    # A component whose configuration lacks the Celery settings would pick a file lock: it refuses.
    wrong = _run(tmp_path, conn, core__executor="LocalExecutor")
    assert wrong["ok"] is False and wrong["kind"] == "configuration"
    assert "'vendor'" in wrong["error"] and "lock: auto" in wrong["error"] and "redis://" in wrong["error"]
    assert emu.refresh_requests == refreshes
