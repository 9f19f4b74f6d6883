"""Earlier releases of the package, taken from this repository's history, for tests that run them
beside the current code (upgrades, rollouts)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The last commit of 0.1.0, and the 0.2.0 release commit ("Version 0.2.0").
RELEASE_0_1_0 = "88f714b"
RELEASE_0_2_0 = "6020e7e"


def extract_release(commit: str, target: Path) -> Path:
    """Write the package as it was at ``commit`` under ``target`` (put ``target`` on ``PYTHONPATH``)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "airflow_provider_tokenrefresh"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target
