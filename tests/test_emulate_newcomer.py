"""A newcomer's first connection: ``airflow-tokenrefresh emulate`` prints a ready-to-paste
``airflow connections add`` line per dialect; pasted into a shell (as printed) against a fresh
Airflow metadata database, each makes a connection that really refreshes at the emulator."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_tokenrefresh.testing import EMULATORS
from airflow_provider_tokenrefresh.testing.stack import AirflowStack, stop_process_groups

BIN = Path(sys.executable).parent

_USE = """
import json, sys
import httpx
from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
out = {}
for conn_id, url in json.loads(sys.argv[1]).items():
    with TokenRefreshHook(conn_id) as hook:
        headers = hook.get_auth_header()
    out[conn_id] = httpx.get(url, headers=headers, timeout=30).status_code
print(json.dumps(out))
"""


def _read_until_lines(proc: subprocess.Popen[str], count: int) -> tuple[list[dict[str, str]], list[str]]:
    """The emulators' JSON lines and the ``airflow connections add`` lines, as printed."""
    assert proc.stdout is not None
    infos: list[dict[str, str]] = []
    lines: list[str] = []
    for raw in proc.stdout:
        line = raw.strip()
        if line.startswith("{"):
            infos.append(json.loads(line))
        elif line.startswith("airflow connections add "):
            lines.append(line)
            if len(lines) == count:
                return infos, lines
    raise AssertionError(f"emulate exited {proc.wait(timeout=10)} before printing {count} lines")


def test_pasted_connection_lines_refresh_at_the_emulators(tmp_path: Path) -> None:
    names = sorted(EMULATORS)
    stack = AirflowStack(home=tmp_path / "home", dags_folder=tmp_path / "dags")
    (tmp_path / "dags").mkdir()
    env = {**stack.env(), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    emulate = subprocess.Popen(
        [str(BIN / "airflow-tokenrefresh"), "emulate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        infos, lines = _read_until_lines(emulate, len(names))
        assert [i["dialect"] for i in infos] == names
        for name, line in zip(names, lines, strict=True):
            argv = shlex.split(line)
            assert argv[3] == f"demo_{name}" and argv[argv.index("--conn-type") + 1] == f"tokenrefresh_{name}"
            extra = json.loads(argv[argv.index("--conn-extra") + 1])
            assert extra["refresh_token"] and extra["allow_insecure_http"] is True
        stack.migrate()
        # Pasted into a shell, exactly as printed.
        pasted = subprocess.run(
            ["bash", "-e", "-c", "\n".join(lines)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert pasted.returncode == 0, pasted.stderr[-3000:]
        assert pasted.stdout.count("Successfully added") == len(names), pasted.stdout[-2000:]
        conn_ids = [f"demo_{name}" for name in names]
        # A first use in a task's way (the hook): each connection refreshes with the pasted seed, and
        # the new access token opens the emulator's sample API.
        urls = {f"demo_{i['dialect']}": i["base_url"] + i["sample_path"] for i in infos}
        used = subprocess.run(
            [sys.executable, "-c", _USE, json.dumps(urls)],
            env={**env, "_AIRFLOW_PROCESS_CONTEXT": "server"},  # outside a task: the metastore's connections
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert used.returncode == 0, used.stderr[-3000:]
        assert json.loads(used.stdout.strip().splitlines()[-1]) == dict.fromkeys(conn_ids, 200)
        status = subprocess.run(
            [str(BIN / "airflow-tokenrefresh"), "status", "--json", *conn_ids],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        rows = {row["conn_id"]: row for row in json.loads(status.stdout)}
        assert {c: (rows[c]["state"], rows[c]["generation"]) for c in conn_ids} == {
            c: ("valid", 1) for c in conn_ids
        }, status.stderr[-2000:]
    finally:
        stop_process_groups([emulate], grace=30)  # SIGTERM to its group, SIGKILL after 30 s
        if emulate.stdout is not None:
            emulate.stdout.close()
    assert emulate.returncode == 0


@pytest.mark.parametrize("flag", ["--no-connection-lines"])
def test_the_lines_can_be_left_out(flag: str) -> None:
    emulate = subprocess.Popen(
        [str(BIN / "airflow-tokenrefresh"), "emulate", "oauth2_basic", flag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert emulate.stderr is not None
        for line in emulate.stderr:  # printed once everything else has been
            if "emulators running" in line:
                break
    finally:
        os.killpg(emulate.pid, signal.SIGTERM)
        out, _ = emulate.communicate(timeout=30)
    assert "connections add" not in out and '"dialect": "oauth2_basic"' in out
