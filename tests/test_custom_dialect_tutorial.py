"""docs/custom-dialect.md runs: its connection (with the emulator's address and seed tokens put in
for the capitals) refreshes through the real ``airflow-tokenrefresh`` commands the tutorial shows,
against the emulator started by the tutorial's own ``emulate`` command; its error messages are the
ones the provider prints for the mistakes it describes."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_tokenrefresh.errors import ConfigurationError
from airflow_provider_tokenrefresh.settings import settings_from_fields
from airflow_provider_tokenrefresh.testing.stack import stop_process_groups

PAGE = Path(__file__).resolve().parents[1] / "docs" / "custom-dialect.md"
BIN = Path(sys.executable).parent

HOOK = """
import json, sys
import httpx
from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
with TokenRefreshHook("my_vendor") as hook:
    record = hook.get_record()
    status = httpx.get(sys.argv[1], headers=hook.get_auth_header(), timeout=30).status_code
print(json.dumps([record.generation, status]))
"""


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(), flags=re.S)


def _connection() -> dict[str, Any]:
    [block] = _blocks("json")
    conn: dict[str, Any] = json.loads(block)
    return conn


@pytest.fixture
def emulate() -> Any:
    """The tutorial's ``emulate`` command, stopped by its PID afterwards."""
    [command] = [
        line
        for b in _blocks("bash")
        for line in b.splitlines()
        if line.startswith("airflow-tokenrefresh emulate")
    ]
    argv = command.split()
    proc = subprocess.Popen(
        [str(BIN / argv[0]), *argv[1:], "--no-connection-lines"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the command prints its endpoints, then waits for Ctrl-C
            if line.startswith("{"):
                lines.append(json.loads(line))
            if "emulators running" in line:
                break
        assert len(lines) == 2, lines
        yield {**lines[0], **lines[1]}
    finally:  # stopped by its PID: SIGTERM to its group, SIGKILL after 30 s
        stop_process_groups([proc], grace=30)
        if proc.stdout is not None:
            proc.stdout.close()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "airflow-tokenrefresh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_tutorials_connection_refreshes_at_the_emulator(emulate: dict[str, Any], tmp_path: Path) -> None:
    conn = _connection()
    text = json.dumps(conn)
    for placeholder, value in {
        "https://vendor.example": emulate["base_url"],
        "REFRESH_TOKEN": emulate["refresh_token"],
        "ACCESS_TOKEN": emulate["access_token"],
    }.items():
        text = text.replace(placeholder, value)
    conn = json.loads(text)
    assert conn["conn_type"] == "tokenrefresh_custom" and '_TOKEN"' not in text
    # What the tutorial tells a reader on plain http to 127.0.0.1, and a file store and lock here.
    conn["extra"] |= {
        "allow_insecure_http": True,
        "store": "file",
        "store_path": str(tmp_path / "store"),
        "lock": "file",
    }
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "HOME": str(tmp_path),
        "AIRFLOW_CONN_MY_VENDOR": json.dumps(conn),
    }
    commands = [line.split() for b in _blocks("bash") for line in b.splitlines() if "my_vendor" in line]
    assert [c[1] for c in commands] == ["refresh", "status"]
    refreshed = _cli(env, *commands[0][1:])
    assert refreshed.returncode == 0, refreshed.stderr[-3000:]
    shown = _cli(env, *commands[1][1:], "--json")
    assert shown.returncode == 0, shown.stderr[-3000:]
    (row,) = json.loads(shown.stdout)
    assert (row["conn_id"], row["state"], row["generation"], row["dialect"]) == (
        "my_vendor",
        "valid",
        1,
        "my_isales",
    )
    # A task's view: the stored token is used (no second refresh) and opens the vendor's API.
    sample = emulate["base_url"] + emulate["sample_path"]
    hook = subprocess.run(
        [sys.executable, "-c", HOOK, sample],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert hook.returncode == 0, hook.stderr[-3000:]
    assert json.loads(hook.stdout.strip().splitlines()[-1]) == [1, 200]
    # The vendor honours the stored (rotated) refresh token: a forced refresh succeeds with it.
    again = _cli(env, "refresh", "my_vendor", "--force")
    assert again.returncode == 0, again.stderr[-3000:]
    (row,) = json.loads(_cli(env, "status", "my_vendor", "--json").stdout)
    assert row["generation"] == 2 and row["state"] == "valid"
    # The seed the tutorial started from is spent (rotated away): the vendor refuses it.
    seed_use = httpx.post(
        emulate["base_url"] + emulate["token_path"],
        json={"refreshToken": emulate["refresh_token"]},
        headers={"Authentication": "Bearer " + emulate["access_token"]},
        timeout=30,
    )
    assert seed_use.json()["result"] != "0"
    for output in (refreshed, shown, hook, again):
        for secret in (emulate["refresh_token"], emulate["access_token"]):
            assert secret not in output.stdout + output.stderr


def test_the_tutorials_error_messages_are_what_the_provider_prints() -> None:
    spec = _connection()["extra"]["dialect"]
    slash = copy.deepcopy(spec)
    slash["response"]["expires_in"] = "resultData/tokenExpirationTime"
    typo = copy.deepcopy(spec)
    typo["request"]["encodig"] = typo["request"].pop("encoding")
    messages = [b.strip() for b in _blocks("text")]
    assert len(messages) == 2

    def read(dialect: dict[str, Any]) -> object:
        extra = {"refresh_token": "r", "access_token": "a", "dialect": dialect}
        return settings_from_fields(
            "my_vendor",
            "tokenrefresh_custom",
            host="https://vendor.example",
            login=None,
            password=None,
            extra=extra,
        )

    for broken, message in zip((slash, typo), messages, strict=True):
        with pytest.raises(ConfigurationError) as caught:
            read(broken)
        assert str(caught.value) == message
    read(spec)  # and the valid spec is accepted as it stands in the page
