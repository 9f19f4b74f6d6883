"""The herd: N spawned processes need a token at the same moment, round after round.

Shared by the herd test (``tests/concurrency/test_herd.py``) and the herd benchmark (product code and benchmarks never import ``tests``). Every round
moves a *virtual* clock (shared by construction: real time + round x ``ROUND_SECONDS``) far enough
that the stored access token has expired, then all processes ask for a token at once (barrier).

:func:`run_task_herd` drives the same herd in real Airflow task processes: the mapped task
instances of one DAG run (``tests/concurrency/dags/herd_in_task_dag.py``) on an
:class:`~airflow_provider_tokenrefresh.testing.stack.AirflowStack`, each reading and writing the
Variable store through the execution API. Tasks run on the real clock, so a round starts once the
token the previous round handed out has really passed its refresh point (a short-lived vendor
token keeps that short); the rounds are synchronised through files (``ready-*``, ``go-*``,
``result-*``) in a directory both sides see.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

ROUND_SECONDS = 4 * 3600  # longer than any emulated access-token lifetime: each round starts expired


@dataclass
class HerdResult:
    """What one herd run measured."""

    processes: int
    rounds: int
    refreshes_per_round: list[int] = field(default_factory=list)
    invalid_grant: int = 0
    errors: list[str] = field(default_factory=list)
    min_ttl_violations: int = 0
    generations_per_round: list[set[int]] = field(default_factory=list)
    times_to_token: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """Time to token (seconds) at quantile ``q``."""
        ordered = sorted(self.times_to_token)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _worker(  # noqa: PLR0917 - the spawn target's arguments
    index: int,
    spec: dict[str, Any],
    rounds: int,
    min_ttl: float,
    barrier: Any,
    results: Any,
    read_only: bool = False,
) -> None:
    from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper
    from airflow_provider_tokenrefresh.testing.backends import build_client, build_lock, build_store

    current_round = [0]

    def clock() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=current_round[0] * ROUND_SECONDS)

    client = build_client(spec, clock=clock, timeout=60)
    keeper = TokenKeeper(
        spec["key"],
        client,
        build_store(spec),
        build_lock(spec),
        Seed(spec["seed_refresh"]),
        conn_id="herd",
        lock_timeout=300,  # 32 processes on two loaded cores (xdist workers beside them): a slow round is not a failure
        clock=clock,
        **({"stale_after": spec["stale_after"]} if "stale_after" in spec else {}),
    )
    # What an Airflow task process already has (``import airflow.sdk`` loads httpx, httpcore and
    # ctypes, which the file store's inotify watch uses), and what the peer's workers build before
    # the barrier too: the TLS context. Otherwise a process's first token pays them once (httpx
    # about 45 ms, ctypes about 2.5 ms here): in round 0, in every process at once.
    import ctypes  # noqa: F401

    import httpx

    httpx.Client(verify=client.ssl_context()).close()
    for r in range(rounds):
        if read_only:  # the clock stays: the stored token is valid; only the store is read
            TokenKeeper.clear_cache()
        else:
            current_round[0] = r + 1
        barrier.wait(timeout=300)
        start = time.perf_counter()
        try:
            record = keeper.get_valid_token(min_ttl)
            results.put(
                (index, r, record.generation, record.access_ttl(clock()), time.perf_counter() - start, None)
            )
        except Exception as exc:  # noqa: BLE001 - every failure is a result the parent counts
            results.put((index, r, -1, 0.0, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"))
        barrier.wait(timeout=300)


def run_herd(
    spec: dict[str, Any],
    emulator: Any,
    *,
    processes: int,
    rounds: int,
    min_ttl: float = 300,
    read_only: bool = False,
) -> HerdResult:
    """Start ``processes`` spawned workers and run ``rounds`` rounds; the parent counts refreshes.

    :param read_only: the clock does not move and every process forgets its cache before a round:
        all of them read a stored, valid record at once and nobody refreshes (the herd's floor:
        what reading alone costs when ``processes`` processes do it together).
    """
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(i, spec, rounds, min_ttl, barrier, results, read_only), daemon=True)
        for i in range(processes)
    ]
    for proc in workers:
        proc.start()
    outcome = HerdResult(processes=processes, rounds=rounds)
    try:
        for r in range(rounds):
            before = emulator.counters.get("ok", 0)
            barrier.wait(timeout=600)  # everyone ready: go
            barrier.wait(timeout=600)  # everyone has a token (or an error)
            outcome.refreshes_per_round.append(emulator.counters.get("ok", 0) - before)
            generations: set[int] = set()
            for _ in range(processes):
                _index, _round, generation, ttl, elapsed, error = results.get(timeout=60)
                assert _round == r
                generations.add(generation)
                outcome.times_to_token.append(elapsed)
                if error:
                    outcome.errors.append(error)
                elif ttl < min_ttl:
                    outcome.min_ttl_violations += 1
            outcome.generations_per_round.append(generations)
        outcome.invalid_grant = emulator.counters.get("invalid_grant", 0)
    finally:
        join_or_kill(workers)
    return outcome


def join_or_kill(workers: list[Any], timeout: float = 30) -> None:
    """Wait for worker processes; kill (by PID) any still alive after ``timeout`` seconds."""
    for proc in workers:
        proc.join(timeout=timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()


# -- the herd in real Airflow task processes -------------------------------------------------------

#: Seconds past a record's refresh point before a round starts (the keeper stamps ``obtained_at``
#: when the answer arrived; the rows report the record exactly, so this only absorbs clock reads).
DUE_MARGIN = 1.0


@dataclass
class TaskHerdRound:
    """One round of :func:`run_task_herd`: what the vendor saw and what every task reported."""

    index: int
    go_at: float
    #: Successful refreshes at the vendor during the round.
    refreshes: int
    #: Requests that reached the token endpoint during the round (any outcome).
    token_requests: int
    #: Arrival times (epoch seconds) of those requests.
    request_times: list[float]
    rows: list[dict[str, Any]]
    #: SHA-256 prefix of the vendor's current access token after the round.
    vendor_fingerprint: str

    def refresh_at(self) -> float:
        """When the round's (first) refresh request reached the vendor."""
        return min(self.request_times) if self.request_times else float("nan")

    def overlap(self) -> dict[str, Any]:
        """Evidence that the tasks needed the token at the same moment (one refresh request)."""
        at = self.refresh_at()
        firsts = [row["reads"][0] for row in self.rows if row.get("reads")]
        return {
            "tasks": len(self.rows),
            "distinct_pids": len({row["pid"] for row in self.rows}),
            "first_read_before_refresh": sum(read["t0"] < at for read in firsts),
            "first_read_saw_generation": sorted({read["generation"] for read in firsts}, key=str),
            "first_read_saw_intent": sum(bool(read["intent"]) for read in firsts),
            "asked_before_refresh": sum(row.get("t_ask", float("inf")) < at for row in self.rows),
            "got_after_refresh": sum(row.get("t_got", float("-inf")) > at for row in self.rows),
            "ask_spread_s": _spread([row["t_ask"] for row in self.rows if "t_ask" in row]),
            "last_token_after_refresh_s": round(
                max((row["t_got"] for row in self.rows if "t_got" in row), default=at) - at, 3
            ),
            "time_to_token_s": sorted(
                round(row["t_got"] - row["t_ask"], 3)
                for row in self.rows
                if "t_got" in row and "t_ask" in row
            ),
        }


def _spread(values: list[float]) -> float:
    return round(max(values) - min(values), 3) if values else float("nan")


@dataclass
class TaskHerdResult:
    """What :func:`run_task_herd` measured: per round, the vendor's view and the tasks' reports."""

    tasks: int
    rounds: list[TaskHerdRound] = field(default_factory=list)
    run_state: str = ""
    #: ``(task_id, map_index, state)`` of every task instance of the run.
    ti_states: list[tuple[str, int, str]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    #: Seconds from the trigger until every member was ready for round 0 (task start-up).
    startup_s: float = 0.0

    @property
    def refreshes_per_round(self) -> list[int]:
        return [r.refreshes for r in self.rounds]

    @property
    def errors(self) -> list[str]:
        return [
            f"round {r.index} task {row['index']}: {row['error']}"
            for r in self.rounds
            for row in r.rows
            if row["error"]
        ]


def _files(out: Any, pattern: str) -> list[Any]:
    return [p for p in out.glob(pattern) if not p.name.endswith(".tmp")]


@dataclass
class _Run:
    """One triggered DAG run the herd driver watches."""

    stack: Any
    dag_id: str
    run_id: str

    def state(self) -> str:
        """The run's state, or ``unknown`` while the api-server does not answer (it is polled again)."""
        import httpx

        try:
            with self.stack.api() as api:
                state: str = api.get(f"/api/v2/dags/{self.dag_id}/dagRuns/{self.run_id}").json()["state"]
                return state
        except httpx.HTTPError:
            return "unknown"

    def wait_files(self, out: Any, pattern: str, count: int, timeout: float) -> None:
        """Poll (bounded) until ``count`` files match ``pattern``; fail at once if the run ended."""
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + 2
        while (found := len(_files(out, pattern))) < count:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(
                    f"{found}/{count} {pattern} after {timeout:.0f}s:\n"
                    + self.stack.explain(self.dag_id, self.run_id)[-4000:]
                )
            if now > next_check:
                next_check = now + 2
                state = self.state()
                if state in ("success", "failed") and len(_files(out, pattern)) < count:
                    raise RuntimeError(
                        f"run {self.run_id} ended ({state}) with {found}/{count} {pattern}:\n"
                        + self.stack.explain(self.dag_id, self.run_id)[-4000:]
                    )
            time.sleep(0.02)


def _due_at(rows: list[dict[str, Any]]) -> float:
    """When the token the rows got passes its refresh point (the keeper's rule: less than
    ``min(min_ttl, lifetime / 2)`` left), plus :data:`DUE_MARGIN`."""
    expires = max(row["expires_at"] for row in rows if row.get("expires_at") is not None)
    lifetime = min(row["access_lifetime"] for row in rows if row.get("access_lifetime"))
    min_ttl = min(row["min_ttl"] for row in rows)
    return float(expires - min(min_ttl, lifetime / 2) + DUE_MARGIN)


def run_task_herd(
    stack: Any,
    emulator: Any,
    out: Any,
    *,
    conn_id: str,
    tasks: int,
    rounds: int,
    dag_id: str = "herd_in_task",
    timeout: float = 300,
) -> TaskHerdResult:
    """Trigger one run of the herd DAG (``tests/concurrency/dags/herd_in_task_dag.py``) on a running
    :class:`~airflow_provider_tokenrefresh.testing.stack.AirflowStack` and drive its rounds.

    Each round waits until all ``tasks`` mapped task instances are ready, then (from the second
    round on) until the token the previous round handed out has passed its refresh point, then
    writes ``go-<round>`` and collects every task's result. The vendor's counters are read before
    and after each round: nothing else in the deployment uses the connection.
    """
    import hashlib
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = TaskHerdResult(tasks=tasks)
    conf = {
        "conn_id": conn_id,
        "sample_url": emulator.sample_url,
        "tasks": tasks,
        "rounds": rounds,
        "out": str(out),
    }
    run = _Run(stack, dag_id, stack.trigger(dag_id, conf=conf))
    previous: list[dict[str, Any]] = []
    for r in range(rounds):
        run.wait_files(out, f"ready-{r}-*", tasks, timeout)
        if r == 0:
            result.startup_s = time.monotonic() - started
        good = [row for row in previous if row.get("expires_at") is not None]
        if good:
            due = _due_at(good)
            deadline = time.monotonic() + max(0.0, due - time.time()) + 60
            while time.time() < due:  # real time must pass: the tasks run on the real clock
                if time.monotonic() > deadline:
                    raise TimeoutError("the clock did not reach the refresh point")
                time.sleep(min(0.05, max(0.0, due - time.time())))
        before = emulator.counters.get("ok", 0)
        n_requests = len(emulator.requests)
        go_at = time.time()
        (out / f"go-{r}").write_text(str(go_at))
        run.wait_files(out, f"result-{r}-*.json", tasks, timeout)
        rows = sorted(
            (json.loads(p.read_text()) for p in _files(out, f"result-{r}-*.json")), key=lambda x: x["index"]
        )
        requests = emulator.requests[n_requests:]
        families = emulator.families()
        current = emulator.current_tokens(families[-1]).access_token if families else ""
        result.rounds.append(
            TaskHerdRound(
                index=r,
                go_at=go_at,
                refreshes=emulator.counters.get("ok", 0) - before,
                token_requests=len(requests),
                request_times=[req.time for req in requests],
                rows=rows,
                vendor_fingerprint=hashlib.sha256(current.encode()).hexdigest()[:16],
            )
        )
        previous = rows
    result.run_state = stack.wait_run(dag_id, run.run_id, timeout=timeout)
    result.ti_states = sorted(
        (ti["task_id"], int(ti.get("map_index", -1)), str(ti["state"]))
        for ti in stack.task_instances(dag_id, run.run_id)
    )
    result.counters = emulator.counters
    result.wall_s = time.monotonic() - started
    return result


def stored_tokens(stack: Any, conn_id: str) -> tuple[str | None, int | None]:
    """(refresh token, generation) of ``conn_id``'s Variable record, read in a child process in the
    server context (the core ``Variable``); never printed."""
    import json
    import subprocess
    import sys

    code = (
        "import json,sys\n"
        "from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore\n"
        "r,_=VariableTokenStore().read(sys.argv[1])\n"
        "print(json.dumps({'rt': r.refresh_token.get_secret_value() if r and r.refresh_token else None,"
        " 'generation': r.generation if r else None}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, f"tokenrefresh_token__{conn_id}"],
        env=stack.env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return data["rt"], data["generation"]
