"""The herd in real Airflow task processes, through the execution API.

16 mapped task instances of one DAG run (``dags/herd_in_task_dag.py``), run by a real scheduler
and LocalExecutor (``AirflowStack``: api-server, scheduler, dag-processor — nothing defers, so no
triggerer; SQLite;
127.0.0.1; ``[core] parallelism`` above the herd so every member runs at once), need the token
of one connection with default settings (``lock: auto`` → file lock, ``store: variable`` →
``airflow.sdk.Variable`` through the execution API) at the same moment, round after round, against
a rotating, reuse-detecting vendor whose access tokens live ``ACCESS_TTL`` seconds. Round 0 is the
first use (no record, the connection's seed); every later round starts once the token the round
before handed out has passed its refresh point (the keeper's rule: less than ``min(min_ttl,
lifetime / 2)`` left).

Judged at the vendor: one refresh request per round, no ``invalid_grant``, every member's token
accepted by the protected API; in Airflow: every task instance succeeded; in the store: the
refresh token left there is the vendor's live one. Overlap is checked, not assumed: in every
round all members' first store reads started before the refresh request reached the vendor, and
all of them returned only after it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokenrefresh.testing import OAuth2BasicEmulator
from airflow_provider_tokenrefresh.testing.connections import emulator_connection
from airflow_provider_tokenrefresh.testing.herd import run_task_herd, stored_tokens
from airflow_provider_tokenrefresh.testing.stack import AirflowStack

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

DAG_FILE = Path(__file__).parent / "dags" / "herd_in_task_dag.py"
TASKS = 16
#: The first use (from the seed) and then three expiry windows.
ROUNDS = 4
#: Access-token lifetime. The refresh point is half of it after issuance (the default 300 s min_ttl
#: is capped at half the lifetime): ~20 s, while the last of 16 members has its token ~8 s after
#: issuance on an idle 2-core machine (waiters re-read the store one at a time under the lock).
#: Every second of headroom costs a second per round.
ACCESS_TTL = 40.0
CONN_ID = "herd_vendor"


@pytest.fixture
def vendor() -> Any:
    with OAuth2BasicEmulator(rotation=True, reuse_detection=True, access_ttl=ACCESS_TTL) as emu:
        yield emu


@pytest.fixture
def stack(tmp_path: Path) -> Any:
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    slots = str(TASKS + 4)
    deployment = AirflowStack(
        home=tmp_path / "home",
        dags_folder=dags,
        extra_env={
            "AIRFLOW__CORE__PARALLELISM": slots,
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": slots,
        },
    )
    t0 = time.monotonic()
    try:
        deployment.migrate()
        # Nothing here defers: no triggerer, one process less competing for the two cores.
        deployment.start(components=("api-server", "scheduler", "dag-processor"))
        deployment.wait_for_dag("herd_in_task")
        print(f"stack up in {time.monotonic() - t0:.1f}s")
        yield deployment
    finally:
        deployment.stop()


def test_mapped_tasks_share_one_refresh_per_expiry_window(
    stack: AirflowStack, vendor: Any, tmp_path: Path
) -> None:
    seed = vendor.issue_tokens()
    stack.put_connection(
        CONN_ID, "tokenrefresh_oauth2_basic", **emulator_connection(vendor, seed.refresh_token, None)
    )

    result = run_task_herd(stack, vendor, tmp_path / "herd", conn_id=CONN_ID, tasks=TASKS, rounds=ROUNDS)

    print(
        f"herd in tasks: {TASKS} x {ROUNDS} rounds in {result.wall_s:.1f}s (trigger to all members ready: "
        f"{result.startup_s:.1f}s), vendor {result.counters}"
    )
    for r in result.rounds:
        print(
            f"round {r.index}: {r.refreshes} refresh(es), {r.token_requests} token request(s), {r.overlap()}"
        )
    # Real task processes, the execution API, the defaults.
    rows = [row for r in result.rounds for row in r.rows]
    assert len(rows) == TASKS * ROUNDS
    assert {row["execution_context"] for row in rows} == {True}
    assert {(row["store"], row["lock"]) for row in rows} == {("variable", "file")}
    assert result.errors == []

    # At the vendor: one refresh per round, nothing rejected, every token accepted.
    assert result.refreshes_per_round == [1] * ROUNDS
    assert [r.token_requests for r in result.rounds] == [1] * ROUNDS
    assert result.counters.get("invalid_grant", 0) == 0
    assert result.counters.get("reuse_detected", 0) == 0
    assert result.counters.get("sample:ok", 0) == TASKS * ROUNDS
    assert result.counters.get("sample:unauthorized", 0) == 0
    assert {row["status"] for row in rows} == {200}
    generations = []
    for r in result.rounds:
        # Everyone in a round got the one token the vendor issued in it, with min_ttl to spare.
        assert {row["fingerprint"] for row in r.rows} == {r.vendor_fingerprint}
        assert len({row["generation"] for row in r.rows}) == 1
        generations.append(r.rows[0]["generation"])
        assert min(row["access_ttl"] for row in r.rows) >= min(
            r.rows[0]["min_ttl"], r.rows[0]["access_lifetime"] / 2
        )
    assert generations == list(range(generations[0], generations[0] + ROUNDS))

    # Overlap: 16 processes, each inside get_valid_token when the one refresh request arrived,
    # and each having read the store (execution API) before it — seeing the due record.
    for r in result.rounds:
        evidence = r.overlap()
        assert evidence["distinct_pids"] == TASKS, evidence
        assert evidence["first_read_before_refresh"] == TASKS, evidence
        assert evidence["got_after_refresh"] == TASKS, evidence
        if r.index > 0:
            assert evidence["first_read_saw_generation"] == [generations[r.index - 1]], evidence

    # In Airflow: the run and every task instance succeeded.
    assert result.run_state == "success"
    member_states = [state for task_id, _, state in result.ti_states if task_id == "member"]
    assert member_states == ["success"] * TASKS, result.ti_states
    assert {state for _, _, state in result.ti_states} == {"success"}

    # In the store: the vendor's live refresh token, at the last round's generation.
    stored, generation = stored_tokens(stack, CONN_ID)
    assert generation == generations[-1]
    family = vendor.families()[-1]
    assert stored == vendor.current_tokens(family).refresh_token
    assert vendor.is_refresh_token_valid(stored)
