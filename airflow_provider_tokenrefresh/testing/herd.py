"""The herd: N spawned processes need a token at the same moment, round after round.

Shared by the herd test (``tests/concurrency/test_herd.py``) and the herd benchmark (product code and benchmarks never import ``tests``). Every round
moves a *virtual* clock (shared by construction: real time + round x ``ROUND_SECONDS``) far enough
that the stored access token has expired, then all processes ask for a token at once (barrier).
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
        lock_timeout=120,
        clock=clock,
        **({"stale_after": spec["stale_after"]} if "stale_after" in spec else {}),
    )
    for r in range(rounds):
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
    spec: dict[str, Any], emulator: Any, *, processes: int, rounds: int, min_ttl: float = 300
) -> HerdResult:
    """Start ``processes`` spawned workers and run ``rounds`` rounds; the parent counts refreshes."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(i, spec, rounds, min_ttl, barrier, results), daemon=True)
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
