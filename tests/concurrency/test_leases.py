"""Lost leases, across real processes: a lock that is lost must never lead to a second send.

Each test runs real keepers in spawned processes (:mod:`tests.concurrency.leasehelp`) against a
rotating, reuse-detecting emulated vendor, a real redis-server or PostgreSQL, and a store shared
by the processes. Outcomes are judged at the vendor (which refresh token was presented how often,
families revoked, whether a token still works) and in the store — never by what a keeper says
about itself. Processes are steered by files and by polling the vendor's recorded requests; every
process started is stopped by its PID.
"""

from __future__ import annotations

import inspect
import os
import signal
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import airflow_provider_tokenrefresh
from airflow_provider_tokenrefresh.keeper import TokenKeeper
from airflow_provider_tokenrefresh.stores import FileTokenStore

from .leasehelp import (
    count_lines,
    finish,
    presented,
    read_result,
    spawn,
    vendor_figures,
    wait_until,
)

STALE_AFTER_SUPPORTED = "stale_after" in inspect.signature(TokenKeeper.__init__).parameters


def _spec(emu: Any, **backend: Any) -> dict[str, Any]:
    return {
        "dialect": "oauth2_basic",
        "base_url": emu.base_url,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        **backend,
    }


def _cfg(tmp: Path, name: str, spec: dict[str, Any], key: str, seed: str, **more: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "spec": spec,
        "key": key,
        "seed_refresh": seed,
        "result_file": str(tmp / f"{name}.json"),
        "pause_file": str(tmp / f"{name}.paused"),
        "release_file": str(tmp / f"{name}.release"),
        "ready_file": str(tmp / f"{name}.ready"),
        "steps": [{"call": "get_valid_token"}],
    }
    cfg.update(more)
    return cfg


def _vendor(emulator_factory: Any) -> Any:
    return emulator_factory("oauth2_basic", rotation=True, reuse_detection=True)


def _same_tree(*results: dict[str, Any]) -> None:
    """Every child imported the package from the same tree as this test process."""
    here = airflow_provider_tokenrefresh.__file__
    for result in results:
        assert not result.get("setup_error"), result.get("setup_error")
        assert result.get("module_file") == here, (result.get("module_file"), here)
    print(f"package under test: {here} (children: {sorted({r['module_file'] for r in results})})")


def _outcome(result: dict[str, Any], index: int = -1) -> dict[str, Any]:
    outcomes = result.get("outcomes") or []
    assert outcomes, f"the child reported no outcome: {result}"
    return outcomes[index]


def _describe(outcome: dict[str, Any]) -> str:
    if outcome.get("ok"):
        return f"token of generation {outcome.get('generation')}"
    return f"{outcome.get('error_type')}({outcome.get('kind')}): {outcome.get('message', '')[:160]}"


def _store_read(directory: Path, key: str) -> Any:
    record, _ = FileTokenStore(str(directory)).read(key)
    return record


def _check(problems: list[str], figures: dict[str, Any]) -> None:
    print("vendor:", figures)
    assert not problems, "\n".join([*problems, f"vendor: {figures}"])


# --------------------------------------------------------------------------------------------------


def test_redis_lease_lost_mid_call_never_sends_the_token_twice(
    emulator_factory: Any, redis_server: str, tmp_path: Path
) -> None:
    """Process 1 is frozen mid-call past its Redis lease; process 2 must not replay its token."""
    import redis

    from airflow_provider_tokenrefresh.locks.redis import RedisRefreshLock

    emu = _vendor(emulator_factory)
    seed = emu.issue_tokens().refresh_token
    key = f"leases-redis-{uuid.uuid4().hex[:8]}"
    store_dir = tmp_path / "store"
    spec = _spec(
        emu, lock="redis", redis_url=redis_server, lock_ttl=2.0, store="file", store_dir=str(store_dir)
    )
    lock_key = RedisRefreshLock(redis_server, ttl=2.0).lock_key(key)
    client = redis.Redis.from_url(redis_server)
    # The vendor rotates on receipt and holds its answer back: process 1 is mid-call.
    emu.inject("slow", delay=4.0)
    # stale_after (new keeper) well above the whole scenario: process 1's intent stays young.
    p1 = spawn(_cfg(tmp_path, "p1", spec, key, seed, stale_after=30.0))
    p2 = None
    try:
        assert wait_until(lambda: emu.refresh_requests >= 1, 60), "process 1 never reached the vendor"
        os.kill(p1.pid, signal.SIGSTOP)
        # Frozen longer than its lease: wait until the Redis key really lapsed.
        assert wait_until(lambda: not client.exists(lock_key), 15), "the frozen lease never lapsed"
        trace = tmp_path / "p2.reads"
        p2 = spawn(_cfg(tmp_path, "p2", spec, key, seed, stale_after=30.0, trace_file=str(trace)))
        assert wait_until(lambda: os.path.exists(tmp_path / "p2.ready"), 60), "process 2 never started"
        # Process 2 has decided once it sent something, finished, or keeps polling the store.
        acted = wait_until(
            lambda: emu.refresh_requests >= 2 or not p2.is_alive() or count_lines(trace) >= 6, 10
        )
        print(f"process 2 acted before process 1 resumed: {acted} (store reads: {count_lines(trace)})")
        os.kill(p1.pid, signal.SIGCONT)
        finish(p1)
        finish(p2)
    finally:
        finish(p1)
        if p2 is not None:
            finish(p2)

    r1, r2 = read_result(tmp_path / "p1.json"), read_result(tmp_path / "p2.json")
    _same_tree(r1, r2)
    o1, o2 = _outcome(r1), _outcome(r2)
    figures = vendor_figures(emu, seed)
    tokens = presented(emu)
    problems: list[str] = []
    if tokens.count(seed) != 1:
        problems.append(f"the refresh token was presented to the vendor {tokens.count(seed)} times, not once")
    twice = [t for t, n in Counter(tokens).items() if n > 1 and t != seed]
    if twice:
        problems.append(f"{len(twice)} other refresh token(s) presented more than once")
    if emu.families_revoked:
        problems.append(f"{emu.families_revoked} token family revoked by the vendor (reuse detected)")
    stored = _store_read(store_dir, key)
    stored_rt = stored.refresh_token.get_secret_value() if stored and stored.refresh_token else seed
    if not emu.is_refresh_token_valid(stored_rt):
        state = (stored.state, stored.generation) if stored else None
        problems.append(
            f"the stored refresh token is not valid at the vendor (stored state, generation: {state})"
        )
    for name, outcome in (("process 1", o1), ("process 2", o2)):
        if outcome.get("ok") and not emu.is_access_token_valid(outcome["access_token"]):
            problems.append(f"{name} returned an access token the vendor rejects")
    if not o2.get("ok"):
        in_flight = o2.get("kind") == "refresh_in_flight" or "in flight" in (o2.get("message") or "")
        if not in_flight:
            problems.append(f"process 2 failed other than with 'refresh in flight': {_describe(o2)}")
    print("process 1:", _describe(o1), "| process 2:", _describe(o2))
    _check(problems, figures)


def test_postgres_session_killed_before_the_call_makes_no_call(
    emulator_factory: Any, postgres_server: str, tmp_path: Path
) -> None:
    """Process 1's lock session is terminated after its intent, before its call: it must not call."""
    import psycopg

    emu = _vendor(emulator_factory)
    seed = emu.issue_tokens().refresh_token
    key = f"leases-pg-{uuid.uuid4().hex[:8]}"
    store_dir = tmp_path / "store"
    spec = _spec(emu, lock="postgres", postgres_dsn=postgres_server, store="file", store_dir=str(store_dir))
    # Pause at the first of these checkpoints: after taking the lock and writing the intent.
    p1 = spawn(_cfg(tmp_path, "p1", spec, key, seed, block_at=["intent_written", "before_request"]))
    p3 = None
    try:
        assert wait_until(lambda: os.path.exists(tmp_path / "p1.paused"), 60), "process 1 never paused"
        requests_before = emu.refresh_requests
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pid, pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                "WHERE application_name = 'airflow-tokenrefresh-lock'"
            ).fetchall()
        assert killed, "no lock session to kill: process 1 did not hold a postgres lock while paused"
        assert all(ok for _, ok in killed), killed
        (tmp_path / "p1.release").touch()
        finish(p1)
        requests_after_kill = emu.refresh_requests - requests_before
        r1 = read_result(tmp_path / "p1.json")
        stored_after_p1 = _store_read(store_dir, key)
        rt_after_p1 = (
            stored_after_p1.refresh_token.get_secret_value()
            if stored_after_p1 is not None and stored_after_p1.refresh_token
            else seed
        )
        valid_after_p1 = emu.is_refresh_token_valid(rt_after_p1)  # judged before anyone else runs

        # A later normal run: one forced refresh, exactly one vendor call.
        ok_before, requests_before_p3 = emu.counters.get("ok", 0), emu.refresh_requests
        p3 = spawn(
            _cfg(tmp_path, "p3", spec, key, seed, stale_after=5.0, steps=[{"call": "refresh", "force": True}])
        )
        finish(p3)
    finally:
        finish(p1)
        if p3 is not None:
            finish(p3)

    r3 = read_result(tmp_path / "p3.json")
    _same_tree(r1, r3)
    o1, o3 = _outcome(r1), _outcome(r3)
    print(f"killed lock sessions: {len(killed)}; process 1 paused at {r1.get('checkpoints', [])[:1]}")
    figures = vendor_figures(emu, seed)
    problems: list[str] = []
    if requests_after_kill:
        problems.append(
            f"process 1 called the vendor {requests_after_kill} time(s) after its lock session was killed"
        )
    if o1.get("ok"):
        problems.append("process 1 raised no error after losing its lock session (it returned a token)")
    elif not o1.get("provider_error"):
        problems.append(f"process 1 failed with a raw {o1.get('error_type')}, not a provider error")
    if not valid_after_p1:
        problems.append("after process 1 the stored refresh token is not valid at the vendor")
    if rt_after_p1 != seed:
        problems.append(
            "after process 1 the store holds a rotated refresh token (generation "
            f"{getattr(stored_after_p1, 'generation', None)}): the vendor was called after the kill"
        )
    if not o3.get("ok"):
        problems.append(f"the later normal refresh failed: {_describe(o3)}")
    if emu.refresh_requests - requests_before_p3 != 1 or emu.counters.get("ok", 0) - ok_before != 1:
        problems.append(
            f"the later refresh made {emu.refresh_requests - requests_before_p3} vendor call(s) with "
            f"{emu.counters.get('ok', 0) - ok_before} success(es), not exactly one"
        )
    final = _store_read(store_dir, key)
    if (
        final is None
        or final.refresh_token is None
        or not emu.is_refresh_token_valid(final.refresh_token.get_secret_value())
    ):
        problems.append("after the later refresh the stored refresh token is not valid at the vendor")
    if o3.get("ok") and not emu.is_access_token_valid(o3["access_token"]):
        problems.append("the later refresh returned an access token the vendor rejects")
    print("process 1:", _describe(o1), "| later refresh:", _describe(o3))
    _check(problems, figures)


def test_redis_fence_counter_reset_locks_no_one_out(
    emulator_factory: Any, redis_server: str, tmp_path: Path
) -> None:
    """Redis loses its fence counters (restart without persistence): refreshing must still work."""
    import redis

    from airflow_provider_tokenrefresh.locks.redis import RedisRefreshLock
    from airflow_provider_tokenrefresh.testing.stack import AirflowStack

    emu = _vendor(emulator_factory)
    seed = emu.issue_tokens().refresh_token
    key = f"leases_fence_{uuid.uuid4().hex[:8]}"
    # The Variable store on a real SQLite metadata DB, as the herd sets it up (it checks fences).
    (tmp_path / "dags").mkdir()
    stack = AirflowStack(home=tmp_path / "airflow", dags_folder=tmp_path / "dags")
    stack.migrate()
    env = {k: v for k, v in stack.env().items() if k.startswith(("AIRFLOW", "_AIRFLOW"))}
    env["_AIRFLOW_PROCESS_CONTEXT"] = "server"
    spec = _spec(emu, lock="redis", redis_url=redis_server, store="variable", airflow_env=env)
    client = redis.Redis.from_url(redis_server)
    lock = RedisRefreshLock(redis_server)
    force = {"call": "refresh", "force": True}

    before = spawn(_cfg(tmp_path, "before", spec, key, seed, steps=[force, force, force]))
    after = None
    try:
        finish(before)
        rb = read_result(tmp_path / "before.json")
        ok_before_reset, requests_before_reset = emu.counters.get("ok", 0), emu.refresh_requests
        counter = client.get(lock.fence_key(key)) if hasattr(lock, "fence_key") else None
        print(f"fence counter before the reset: {counter!r}")
        client.flushall()  # Redis restarted without persistence: every counter starts over
        after = spawn(_cfg(tmp_path, "after", spec, key, seed, steps=[force, {"call": "get_valid_token"}]))
        finish(after)
    finally:
        finish(before)
        if after is not None:
            finish(after)

    ra = read_result(tmp_path / "after.json")
    _same_tree(rb, ra)
    figures = vendor_figures(emu, seed)
    # Preconditions: three refreshes went through and the fence grew.
    assert [o.get("ok") for o in rb["outcomes"]] == [True, True, True], [_describe(o) for o in rb["outcomes"]]
    assert (ok_before_reset, requests_before_reset) == (3, 3), figures
    fences = [(o["stored_after"].get("record") or {}).get("fence") for o in rb["outcomes"]]
    print(f"stored fences before the reset: {fences}")
    gen_before = rb["outcomes"][-1]["stored_after"]["record"]["generation"]

    forced, later = _outcome(ra, 0), _outcome(ra, 1)
    stored = (forced.get("stored_after") or {}).get("record") or {}
    problems: list[str] = []
    if not forced.get("ok"):
        problems.append(f"the forced refresh after the reset failed: {_describe(forced)}")
    if emu.counters.get("ok", 0) != 4 or emu.refresh_requests != 4:
        problems.append(
            f"the vendor saw {emu.refresh_requests} refresh request(s), {emu.counters.get('ok', 0)} "
            "successful, not 4 and 4 (the forced refresh after the reset never reached the vendor)"
        )
    if stored.get("generation") != gen_before + 1:
        problems.append(f"the store holds generation {stored.get('generation')}, not {gen_before + 1}")
    if stored.get("state") != "valid" or not emu.is_refresh_token_valid(stored.get("refresh_token") or ""):
        problems.append(f"the stored refresh token is not valid at the vendor (state {stored.get('state')})")
    for name, outcome in (("the forced refresh", forced), ("a later get_valid_token", later)):
        if outcome.get("ok") and not emu.is_access_token_valid(outcome["access_token"]):
            problems.append(f"{name} returned an access token the vendor rejects")
    if not later.get("ok"):
        problems.append(f"a later get_valid_token failed: {_describe(later)}")
    _check(problems, figures)


def test_lost_race_with_reuse_detection_never_calls_the_revoked_token_valid(
    emulator_factory: Any, tmp_path: Path
) -> None:
    """Process 1 stalls past the stale bound before its call; process 2 replays and rotates; then
    process 1 presents the old token and the vendor revokes the family. Nobody may call a revoked
    token valid."""
    emu = _vendor(emulator_factory)
    seed = emu.issue_tokens().refresh_token
    key = f"leases-race-{uuid.uuid4().hex[:8]}"
    store_dir = tmp_path / "store"
    stale_after = 1.0

    def spec(container: str) -> dict[str, Any]:
        # Each process in its own "container": its own lock directory, one shared store.
        return _spec(
            emu,
            lock="file",
            lock_dir=str(tmp_path / container / "locks"),
            store="file",
            store_dir=str(store_dir),
        )

    def intent_is_stale() -> bool:
        record = _store_read(store_dir, key)
        started = getattr(record, "refresh_started_at", None)
        return started is not None and (datetime.now(UTC) - started).total_seconds() > stale_after + 0.5

    problems: list[str] = []

    def judge(name: str, outcome: dict[str, Any]) -> None:
        # Checked the moment the process finished: nothing else runs meanwhile.
        if outcome.get("ok") and not emu.is_access_token_valid(outcome["access_token"]):
            problems.append(f"{name} returned an access token the vendor rejects")

    p1 = spawn(
        _cfg(tmp_path, "p1", spec("c1"), key, seed, block_at=["before_request"], stale_after=stale_after)
    )
    p2 = p3 = None
    try:
        assert wait_until(lambda: os.path.exists(tmp_path / "p1.paused"), 60), "process 1 never paused"
        assert wait_until(intent_is_stale, 30), "process 1's intent never showed in the store"
        p2 = spawn(_cfg(tmp_path, "p2", spec("c2"), key, seed, stale_after=stale_after))
        finish(p2)
        o2 = _outcome(read_result(tmp_path / "p2.json"))
        judge("process 2", o2)
        requests_by_p2 = emu.refresh_requests

        (tmp_path / "p1.release").touch()
        finish(p1)
        o1 = _outcome(read_result(tmp_path / "p1.json"))
        judge("process 1 (after the lost race)", o1)
        requests_by_p1 = emu.refresh_requests - requests_by_p2

        p3 = spawn(_cfg(tmp_path, "p3", spec("c3"), key, seed, stale_after=stale_after))
        finish(p3)
        o3 = _outcome(read_result(tmp_path / "p3.json"))
        judge("a subsequent get_valid_token", o3)
    finally:
        finish(p1)
        for proc in (p2, p3):
            if proc is not None:
                finish(proc)

    _same_tree(*(read_result(tmp_path / f"{n}.json") for n in ("p1", "p2", "p3")))
    figures = vendor_figures(emu, seed)
    print(
        f"stale_after supported: {STALE_AFTER_SUPPORTED}; vendor calls: process 2 {requests_by_p2}, "
        f"process 1 {requests_by_p1}; seed presented {presented(emu).count(seed)}x"
    )
    if not o3.get("ok") and o3.get("error_type") != "RefreshTokenRejected":
        problems.append(
            f"the subsequent get_valid_token failed other than RefreshTokenRejected: {_describe(o3)}"
        )
    final = _store_read(store_dir, key)
    if final is None:
        problems.append("the store holds no record at the end")
    elif final.state == "valid":
        rt = final.refresh_token.get_secret_value() if final.refresh_token else ""
        if not emu.is_refresh_token_valid(rt):
            problems.append(
                f"the store says 'valid' (generation {final.generation}) but its refresh token is dead at the vendor"
            )
    elif not final.reason:
        problems.append(f"the stored record is {final.state!r} without a reason")
    print(
        "process 2:",
        _describe(o2),
        "| process 1:",
        _describe(o1),
        "| later:",
        _describe(o3),
        f"| stored: {getattr(final, 'state', None)} g{getattr(final, 'generation', None)}",
    )
    _check(problems, figures)
