"""Release-ready: ``uv build`` makes a wheel and an sdist whose metadata ``twine check`` accepts, the
version comes from one place, and the wheel installs into a clean Airflow virtualenv where
Airflow lists the provider."""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import airflow_provider_tokenrefresh
from airflow_provider_tokenrefresh.get_provider_info import get_provider_info

ROOT = Path(__file__).resolve().parents[1]


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is needed (make uv installs it into .tools/)"
    return found


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path = ROOT) -> str:
    result = subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args[:3]} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    _run(_uv(), "build", "--out-dir", str(out))
    yield out


def _one(dist: Path, pattern: str) -> Path:
    [found] = list(dist.glob(pattern))
    return found


def test_wheel_and_sdist_pass_twine_check_with_the_one_version(dist: Path) -> None:
    version = airflow_provider_tokenrefresh.__version__
    wheel = _one(dist, "airflow_provider_tokenrefresh-*.whl")
    sdist = _one(dist, "airflow_provider_tokenrefresh-*.tar.gz")
    assert wheel.name == f"airflow_provider_tokenrefresh-{version}-py3-none-any.whl"
    assert sdist.name == f"airflow_provider_tokenrefresh-{version}.tar.gz"
    out = _run(sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist))
    assert out.count("PASSED") == 2, out
    assert get_provider_info()["versions"] == [version]

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        [meta_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
        entry_points = zf.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    assert meta["Version"] == version
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.11"
    assert any(r.startswith("apache-airflow") for r in meta.get_all("Requires-Dist"))
    assert "Framework :: Apache Airflow :: Provider" in meta.get_all("Classifier")
    assert {u.split(",")[0] for u in meta.get_all("Project-URL")} >= {"Homepage", "Changelog", "Issues"}
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "apache_airflow_provider" in entry_points and "airflow.plugins" in entry_points
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "dags/"))]
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml"} <= members
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text()


def test_the_wheel_installs_into_a_clean_airflow_venv_and_the_provider_is_listed(
    dist: Path, tmp_path: Path
) -> None:
    wheel = _one(dist, "airflow_provider_tokenrefresh-*.whl")
    venv = tmp_path / "clean"
    uv = _uv()
    _run(uv, "venv", "--quiet", "--python", sys.executable, str(venv))
    python = venv / "bin" / "python"
    # Only the wheel: its own requirements bring Airflow, as `pip install` would for a user.
    _run(uv, "pip", "install", "--quiet", "--python", str(python), str(wheel), timeout=900)
    home = tmp_path / "home"
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    # Run outside the checkout, so that nothing can import the package from it.
    listed = json.loads(
        _run(str(venv / "bin" / "airflow"), "providers", "list", "-o", "json", env=env, cwd=tmp_path)
    )
    ours = [p for p in listed if p["package_name"] == "airflow-provider-tokenrefresh"]
    assert ours, [p["package_name"] for p in listed]
    assert ours[0]["version"] == airflow_provider_tokenrefresh.__version__
    # The connection types come from the installed wheel, not from this checkout.
    where = _run(
        str(python),
        "-c",
        "import airflow_provider_tokenrefresh as p; print(p.__file__)",
        env=env,
        cwd=tmp_path,
    )
    assert str(venv) in where and str(ROOT) not in where
    hooks = json.loads(
        _run(str(venv / "bin" / "airflow"), "providers", "hooks", "-o", "json", env=env, cwd=tmp_path)
    )
    types = {h["connection_type"] for h in hooks if h.get("package_name") == "airflow-provider-tokenrefresh"}
    assert {"tokenrefresh_oauth2_basic", "tokenrefresh_bearer_json"} <= types, types
