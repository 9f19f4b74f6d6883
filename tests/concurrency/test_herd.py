"""Herd: 16 spawned processes x 4 expiry rounds (``HERD_PROCESSES``/``HERD_ROUNDS`` for more; the
herd benchmark runs 64) against a rotating, reuse-detecting vendor.

Exactly one refresh request per round, zero invalid_grant, every process gets a token valid for at
least min_ttl — for each lock backend with its natural store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokenrefresh.testing import OAuth2BasicEmulator
from airflow_provider_tokenrefresh.testing.herd import run_herd

# Sized for `make test` on 2 cores beside other suites; the invariants do not depend on the size.
PROCESSES = int(os.environ.get("HERD_PROCESSES", "16"))
ROUNDS = int(os.environ.get("HERD_ROUNDS", "4"))


def _check(result: Any) -> None:
    assert result.errors == []
    assert result.refreshes_per_round == [1] * ROUNDS
    assert result.invalid_grant == 0
    assert result.min_ttl_violations == 0
    assert all(len(g) == 1 for g in result.generations_per_round)  # everyone got the same token
    assert len(result.times_to_token) == PROCESSES * ROUNDS


@pytest.fixture
def vendor() -> Any:
    with OAuth2BasicEmulator(rotation=True, reuse_detection=True) as emu:
        yield emu


def _spec(vendor: Any, **backend: Any) -> dict[str, Any]:
    seed = vendor.issue_tokens()
    return {
        "dialect": "oauth2_basic",
        "base_url": vendor.base_url,
        "client_id": vendor.client_id,
        "client_secret": vendor.client_secret,
        "seed_refresh": seed.refresh_token,
        "key": "herd_conn",
        **backend,
    }


@pytest.mark.slow
def test_herd_file_lock_with_file_store(vendor: Any, tmp_path: Path) -> None:
    spec = _spec(
        vendor, lock="file", lock_dir=str(tmp_path / "locks"), store="file", store_dir=str(tmp_path / "s")
    )
    _check(run_herd(spec, vendor, processes=PROCESSES, rounds=ROUNDS))


@pytest.mark.slow
def test_negative_control_without_a_lock_or_lease_the_herd_burns_the_token(
    vendor: Any, tmp_path: Path
) -> None:
    """Proves the herd test can fail: no lock, a last-writer-wins store and every intent treated as
    crashed (the naive deployment) refresh many times and trip reuse detection."""
    spec = _spec(vendor, lock="none", store="blind_file", store_dir=str(tmp_path / "s"), stale_after=0.0)
    result = run_herd(spec, vendor, processes=8, rounds=2)
    assert sum(result.refreshes_per_round) > 2 or result.invalid_grant > 0 or result.errors


@pytest.mark.slow
def test_without_any_lock_the_record_alone_keeps_one_refresh_per_round(vendor: Any, tmp_path: Path) -> None:
    """The record is the lease: with no lock at all (processes that share no lock domain, like
    containers with file locks), the intent's compare-and-set still lets exactly one through."""
    spec = _spec(vendor, lock="none", store="file", store_dir=str(tmp_path / "s"))
    _check(run_herd(spec, vendor, processes=PROCESSES, rounds=ROUNDS))


@pytest.mark.slow
def test_herd_redis_lock_with_vault_store(vendor: Any, redis_server: str, bao_server: Any) -> None:
    url, token = bao_server
    spec = _spec(
        vendor, lock="redis", redis_url=redis_server, store="vault", vault_url=url, vault_token=token
    )
    spec["key"] = f"herd/{vendor.port}"
    _check(run_herd(spec, vendor, processes=PROCESSES, rounds=ROUNDS))


@pytest.mark.slow
def test_herd_postgres_lock_with_aws_store(vendor: Any, postgres_server: str, moto_server: str) -> None:
    spec = _spec(vendor, lock="postgres", postgres_dsn=postgres_server, store="aws", aws_endpoint=moto_server)
    spec["key"] = f"herd-{vendor.port}"
    _check(run_herd(spec, vendor, processes=PROCESSES, rounds=ROUNDS))


@pytest.mark.slow
def test_herd_file_lock_with_variable_store(vendor: Any, tmp_path: Path) -> None:
    """The embedded default (one machine): file lock + Airflow Variables in a real SQLite metadata DB,
    in the server context (core ``Variable``). The in-task path, through the execution API from
    real mapped task instances, is ``test_herd_in_task.py``."""
    from airflow_provider_tokenrefresh.testing.stack import AirflowStack

    stack = AirflowStack(home=tmp_path / "airflow", dags_folder=tmp_path / "dags")
    (tmp_path / "dags").mkdir()
    stack.migrate()
    env = {k: v for k, v in stack.env().items() if k.startswith(("AIRFLOW", "_AIRFLOW"))}
    env["_AIRFLOW_PROCESS_CONTEXT"] = "server"
    spec = _spec(vendor, lock="file", lock_dir=str(tmp_path / "locks"), store="variable", airflow_env=env)
    _check(run_herd(spec, vendor, processes=PROCESSES, rounds=ROUNDS))
