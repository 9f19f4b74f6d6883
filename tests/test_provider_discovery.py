"""Airflow finds the provider the way a deployment does: ``airflow providers list`` and
``airflow providers hooks`` (entry point ``apache_airflow_provider``) and ``airflow plugins``
(entry point ``airflow.plugins``), in a fresh ``AIRFLOW_HOME``. Part of ``make test-compat``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from airflow_provider_tokenrefresh import __version__

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
TYPES = {
    "tokenrefresh_oauth2_basic",
    "tokenrefresh_oauth2_post",
    "tokenrefresh_query_basic",
    "tokenrefresh_appid_json",
    "tokenrefresh_bearer_json",
    "tokenrefresh_custom",
}


def _airflow(tmp_path: Path, *args: str) -> list[dict[str, object]]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [AIRFLOW, *args, "--output", "json"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows: list[dict[str, object]] = json.loads(result.stdout[result.stdout.index("[") :])
    return rows


def test_the_provider_and_its_connection_types_are_listed(tmp_path: Path) -> None:
    providers = {row["package_name"]: row for row in _airflow(tmp_path, "providers", "list")}
    assert providers["airflow-provider-tokenrefresh"]["version"] == __version__
    hooks = {str(row["connection_type"]) for row in _airflow(tmp_path, "providers", "hooks")}
    assert hooks >= TYPES, TYPES - hooks


def test_the_health_plugin_is_listed(tmp_path: Path) -> None:
    plugins = {row["name"]: row for row in _airflow(tmp_path, "plugins")}
    assert "tokenrefresh_health" in plugins, sorted(plugins)
