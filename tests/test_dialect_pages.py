"""docs/dialects/*.md: a page per built-in dialect whose error table covers every error rule of the
preset, and whose example connection, with the emulator's address and demo values put in for the
capitals, really refreshes at the emulator and opens its protected API (judged at the vendor)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from airflow_provider_tokenrefresh.dialects import PRESETS
from airflow_provider_tokenrefresh.testing import EMULATORS

from .conftest import EmulatorFactory

PAGES = Path(__file__).resolve().parents[1] / "docs" / "dialects"

CHILD = """
import json, sys
import httpx
from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
out = {}
for conn_id, url in json.loads(sys.argv[1]).items():
    with TokenRefreshHook(conn_id) as hook:
        record = hook.get_record()
        headers = hook.get_auth_header()
    out[conn_id] = [record.generation, httpx.get(url, headers=headers, timeout=30).status_code]
print(json.dumps(out))
"""


def _page(name: str) -> str:
    return (PAGES / f"{name}.md").read_text()


def _example(page: str) -> dict[str, Any]:
    [block] = re.findall(r"```json\n(.*?)```", page, flags=re.S)
    example: dict[str, Any] = json.loads(block)
    return example


def test_a_page_per_dialect_with_every_error_rule() -> None:
    assert sorted(p.stem for p in PAGES.glob("*.md")) == sorted(PRESETS)
    for name, spec in PRESETS.items():
        page = _page(name)
        assert f"`tokenrefresh_{name}`" in page.splitlines()[0]
        for rule in spec.errors:
            for code in rule.code or []:
                assert f"`{code}`" in page, (name, code)
            for status in rule.status or []:
                assert f"HTTP {status}" in page, (name, status)
            assert rule.meaning in page, (name, rule.meaning)


def test_every_example_connection_refreshes_at_the_emulator(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    urls = {}
    emulators = {}
    for name in sorted(EMULATORS):
        emu = emulator_factory(name)
        seed = emu.issue_tokens()
        text = json.dumps(_example(_page(name)))
        for placeholder, value in {
            "https://vendor.example": emu.base_url,
            "CLIENT_ID": emu.client_id,
            "CLIENT_SECRET": emu.client_secret,
            "REFRESH_TOKEN": seed.refresh_token,
            "ACCESS_TOKEN": seed.access_token,
        }.items():
            text = text.replace(placeholder, value)
        conn = json.loads(text)
        assert conn["conn_type"] == f"tokenrefresh_{name}"
        assert "CLIENT" not in text and "_TOKEN\"" not in text  # every capital was filled in
        # Only what a test needs beyond the page: plain http to 127.0.0.1, a file store and lock.
        conn["extra"] |= {
            "allow_insecure_http": True,
            "store": "file",
            "store_path": str(tmp_path / f"store_{name}"),
            "lock": "file",
        }
        env[f"AIRFLOW_CONN_DOC_{name.upper()}"] = json.dumps(conn)
        urls[f"doc_{name}"] = emu.sample_url
        emulators[f"doc_{name}"] = emu
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(urls)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {key: [1, 200] for key in urls}
    for conn_id, emu in emulators.items():
        assert (emu.counters.get("ok"), emu.counters.get("sample:ok")) == (1, 1), (conn_id, emu.counters)
