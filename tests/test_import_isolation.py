"""Core types and the dialect engine must not import Airflow (or the heavy HTTP client)."""

from __future__ import annotations

import subprocess
import sys

CORE_MODULES = [
    "airflow_provider_tokenrefresh.tokens",
    "airflow_provider_tokenrefresh.errors",
    "airflow_provider_tokenrefresh.redaction",
    "airflow_provider_tokenrefresh.dialects",
    "airflow_provider_tokenrefresh.dialects.wire",
    "airflow_provider_tokenrefresh.client",
    "airflow_provider_tokenrefresh.testing",
]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = (
        "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_core_and_dialects_load_no_airflow_module() -> None:
    loaded = _loaded_after_import(CORE_MODULES)
    assert "airflow_provider_tokenrefresh.dialects.presets" in loaded  # the import really happened
    leaked = sorted(m for m in loaded if m == "airflow" or m.startswith("airflow."))
    assert leaked == []


def test_dialects_do_not_load_httpx() -> None:
    loaded = _loaded_after_import(["airflow_provider_tokenrefresh.dialects.wire"])
    assert "httpx" not in loaded
