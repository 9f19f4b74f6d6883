"""Fan-out: one keeper task refreshes 1,000 connections against a vendor with 50 ms latency.

Ours: ``fanout.refresh_all(keepers, force=True, max_workers=64)`` — what ``TokenRefreshOperator``
runs — over 1,000 ``TokenKeeper`` objects sharing one ``FileTokenStore`` and one
``FileRefreshLock``. Peer: the same 1,000 refreshes one after another, each with its own Authlib
``OAuth2Client`` persisting through ``update_token``. Each side runs in its own child process
(peak RSS from ``getrusage`` there); the emulator runs in this process.

Child usage (internal): ``python -m benchmarks.fanout {ours|peer} INPUT.json OUTPUT.json``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import (
    LISTEN_BACKLOG,
    atomic_write_json,
    authlib_oauth2_client,
    basic_keepers,
    child_env,
    maxrss_bytes,
    ratio,
    vendor,
    write_private_json,
)

CONNECTIONS = 1000
LATENCY = 0.05
MAX_WORKERS = 64
#: The issue's goal for 1,000 connections at 50 ms on 2 cores (stretch: 1 s).
GOAL_SECONDS = 1.5
#: Peak RSS of ours over the peer's, at most (the issue's goal).
RSS_GOAL_RATIO = 1.2
#: Seconds ours' ``refresh_all`` may take (20x the goal) before the child reports how far it got
#: and stops, so that a regression cannot hold ``make bench`` hostage.
BUDGET_S = 60.0
#: Seconds allowed for building the keepers (untimed setup) before the child gives up likewise.
SETUP_BUDGET_S = 120.0
CHILD_TIMEOUT = 900


def _ours(job: dict[str, Any], progress: dict[str, Any], started: threading.Event) -> dict[str, Any]:
    # What the peer's setup imports too (Authlib's client is httpx's): a keeper imports it on its
    # first request, which would put a one-time import inside the timed region.
    import httpx  # noqa: F401

    from airflow_provider_tokenrefresh.fanout import refresh_all
    from airflow_provider_tokenrefresh.keeper import RefreshOutcome
    from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
    from airflow_provider_tokenrefresh.stores import FileTokenStore

    rss_imports = maxrss_bytes()
    progress.update(phase="building keepers", keepers_built=0, maxrss_after_imports_bytes=rss_imports)
    setup = time.perf_counter()
    store = FileTokenStore(str(Path(job["workdir"]) / "store"))
    lock = FileRefreshLock(str(Path(job["workdir"]) / "locks"))
    keepers = basic_keepers(job, job["seeds"], store, lock, lambda i: f"conn_{i:04d}")
    progress["keepers_built"] = len(keepers)
    setup = time.perf_counter() - setup
    start = time.perf_counter()
    progress.update(phase="refresh_all", setup_s=setup, refresh_all_started=start)
    started.set()
    outcomes = refresh_all(keepers, force=True, max_workers=job["max_workers"])
    wall = time.perf_counter() - start
    errors = Counter(
        str(getattr(o, "kind", type(o).__name__))
        for o in outcomes.values()
        if not isinstance(o, RefreshOutcome)
    )
    refreshed = sum(1 for o in outcomes.values() if isinstance(o, RefreshOutcome) and o.refreshed)
    for keeper in keepers.values():
        keeper.client.close()
    return {
        "setup_s": setup,
        "wall_s": wall,
        "refreshed": refreshed,
        "errors": dict(errors),
        "maxrss_after_imports_bytes": rss_imports,
        "maxrss_bytes": maxrss_bytes(),
    }


def _peer(job: dict[str, Any]) -> dict[str, Any]:
    import ssl

    OAuth2Client = authlib_oauth2_client()
    rss_imports = maxrss_bytes()
    verify = ssl.create_default_context()  # shared: httpx would otherwise load the CA bundle per client
    tokens_dir = Path(job["workdir"]) / "peer-tokens"
    tokens_dir.mkdir(mode=0o700)
    errors: Counter[str] = Counter()
    refreshed = 0
    start = time.perf_counter()
    for i, seed in enumerate(job["seeds"]):
        path = str(tokens_dir / f"conn_{i:04d}.json")

        def update_token(
            token: dict[str, Any],
            refresh_token: str | None = None,
            access_token: str | None = None,
            path: str = path,
        ) -> None:
            atomic_write_json(path, dict(token))

        token = {
            "access_token": seed["access_token"],
            "refresh_token": seed["refresh_token"],
            "token_type": "Bearer",
            "expires_at": int(time.time()) + 3600,
        }
        with OAuth2Client(
            client_id=job["client_id"],
            client_secret=job["client_secret"],
            token_endpoint_auth_method="client_secret_basic",
            token_endpoint=job["token_url"],
            token=token,
            update_token=update_token,
            verify=verify,
            trust_env=False,
            timeout=30,
        ) as client:
            try:
                client.refresh_token(job["token_url"], refresh_token=seed["refresh_token"])
                refreshed += 1
            except Exception as exc:
                errors[str(getattr(exc, "error", None) or type(exc).__name__)] += 1
    wall = time.perf_counter() - start
    return {
        "setup_s": 0.0,
        "wall_s": wall,
        "refreshed": refreshed,
        "errors": dict(errors),
        "maxrss_after_imports_bytes": rss_imports,
        "maxrss_bytes": maxrss_bytes(),
    }


def _floor_async(job: dict[str, Any], *, one_client: bool = False) -> dict[str, Any]:
    """The "one async path" shape at its own limit: the same requests from ``max_workers``
    coroutines on one event loop, nothing parsed, stored or locked. Each coroutine sends on an
    ``httpx.AsyncClient`` of its own (one kept-alive connection), or, with ``one_client``, all on
    one ``AsyncClient`` with ``max_workers`` connections. Measured beside the threaded floor to
    decide which shape the fan-out takes."""
    import asyncio
    import ssl

    import httpx

    rss_imports = maxrss_bytes()
    auth = (job["client_id"], job["client_secret"])
    verify = ssl.create_default_context()
    workers = job["max_workers"]

    def client(connections: int) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(verify=verify, trust_env=False, timeout=30, limits=limits)

    async def main() -> tuple[float, Counter[int]]:
        queue = [seed["refresh_token"] for seed in reversed(job["seeds"])]
        codes: Counter[int] = Counter()
        shared = client(workers) if one_client else None

        async def worker() -> None:
            async with contextlib.AsyncExitStack() as stack:
                http = shared if shared is not None else await stack.enter_async_context(client(1))
                while queue:
                    data = {"grant_type": "refresh_token", "refresh_token": queue.pop()}
                    codes[(await http.post(job["token_url"], data=data, auth=auth)).status_code] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        wall = time.perf_counter() - start
        if shared is not None:
            await shared.aclose()
        return wall, codes

    wall, codes = asyncio.run(main())
    return _bare_result(wall, codes, rss_imports)


def _bare_result(wall: float, codes: Counter[int], rss_imports: int) -> dict[str, Any]:
    """A floor side's result: its HTTP status counts as refreshed (200) and errors."""
    return {
        "setup_s": 0.0,
        "wall_s": wall,
        "refreshed": codes.get(200, 0),
        "errors": {str(code): n for code, n in codes.items() if code != 200},
        "maxrss_after_imports_bytes": rss_imports,
        "maxrss_bytes": maxrss_bytes(),
    }


def _floor_async_one(job: dict[str, Any]) -> dict[str, Any]:
    return _floor_async(job, one_client=True)


def _floor(job: dict[str, Any]) -> dict[str, Any]:
    """The machine's limit for this fan-out: the same refresh requests from ``max_workers`` threads
    on bare kept-alive ``httpx.Client`` s (one per thread), nothing parsed, stored or locked."""
    import ssl
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    rss_imports = maxrss_bytes()
    verify = ssl.create_default_context()
    local = threading.local()
    auth = (job["client_id"], job["client_secret"])

    def one(refresh_token: str) -> int:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(verify=verify, trust_env=False, timeout=30)
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return client.post(job["token_url"], data=data, auth=auth).status_code

    start = time.perf_counter()
    with ThreadPoolExecutor(job["max_workers"]) as pool:
        codes = Counter(pool.map(one, [seed["refresh_token"] for seed in job["seeds"]]))
    wall = time.perf_counter() - start
    return _bare_result(wall, codes, rss_imports)


def write_job(emulator: Any, workdir: Path, connections: int, max_workers: int, **more: Any) -> Path:
    """Make ``workdir`` and write a child's job there: ``connections`` fresh token families of
    ``emulator``, its URLs and client credentials, ``max_workers`` and ``more``; the file's path."""
    workdir.mkdir()
    seeds = [emulator.issue_tokens() for _ in range(connections)]
    job = {
        "workdir": str(workdir),
        "base_url": emulator.base_url,
        "token_url": emulator.token_url,
        "client_id": emulator.client_id,
        "client_secret": emulator.client_secret,
        "max_workers": max_workers,
        **more,
        "seeds": [{"refresh_token": s.refresh_token, "access_token": s.access_token} for s in seeds],
    }
    write_private_json(workdir / "job.json", job)
    return workdir / "job.json"


def _side(
    side: str, emulator: Any, workdir: Path, connections: int, max_workers: int, budget: float
) -> dict[str, Any]:
    write_job(emulator, workdir, connections, max_workers, budget_s=budget, setup_budget_s=SETUP_BUDGET_S)
    emulator.reset_counters()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fanout",
            side,
            str(workdir / "job.json"),
            str(workdir / "out.json"),
        ],
        env=child_env(),
        cwd=str(workdir),
        timeout=CHILD_TIMEOUT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fan-out child ({side}) failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads((workdir / "out.json").read_text())
    counters = emulator.counters
    result["vendor_ok"] = counters.get("ok", 0)
    result["vendor_requests"] = emulator.refresh_requests
    result["vendor_invalid_grant"] = counters.get("invalid_grant", 0)
    result["peak_rss_mib"] = result["maxrss_bytes"] / 2**20
    return result


def run(
    connections: int = CONNECTIONS,
    latency: float = LATENCY,
    max_workers: int = MAX_WORKERS,
    budget: float = BUDGET_S,
) -> dict[str, Any]:
    """Both sides against one emulator, each with its own fresh token families."""
    with (
        vendor(rotation=True, reuse_detection=True, latency=latency) as emulator,
        tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp,
    ):
        ours = _side("ours", emulator, Path(tmp) / "ours", connections, max_workers, budget)
        if ours.get("timed_out"):
            print(
                f"  fan-out ours: ** did not finish within {budget:.0f} s ** (phase {ours['phase']}: "
                f"{ours.get('keepers_built', 0)} keepers built, {ours['vendor_ok']}/{connections} refreshed)",
                flush=True,
            )
        else:
            print(
                f"  fan-out ours: {ours['wall_s']:.2f} s, {ours['refreshed']}/{connections} refreshed, "
                f"errors {ours['errors'] or 'none'}, peak RSS {ours['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
        floor = _side("floor", emulator, Path(tmp) / "floor", connections, max_workers, budget)
        print(
            f"  fan-out floor (bare httpx, {max_workers} threads, no store): {floor['wall_s']:.2f} s, "
            f"{floor['refreshed']}/{connections} answered 200",
            flush=True,
        )
        asyncs = {}
        for side, shape in (("floor_async", "an AsyncClient each"), ("floor_async_one", "one AsyncClient")):
            asyncs[side] = _side(side, emulator, Path(tmp) / side, connections, max_workers, budget)
            print(
                f"  fan-out async floor ({max_workers} coroutines on {shape}, no store): "
                f"{asyncs[side]['wall_s']:.2f} s, {asyncs[side]['refreshed']}/{connections} answered 200",
                flush=True,
            )
        peer = _side("peer", emulator, Path(tmp) / "peer", connections, max_workers, budget)
        print(
            f"  fan-out peer: {peer['wall_s']:.2f} s, {peer['refreshed']}/{connections} refreshed, "
            f"peak RSS {peer['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    goal = (
        not ours.get("timed_out")
        and ours["wall_s"] <= GOAL_SECONDS
        and ours["refreshed"] == connections
        and not ours["errors"]
    )
    return {
        "config": {
            "connections": connections,
            "latency_s": latency,
            "max_workers": max_workers,
            "vendor": "OAuth2BasicEmulator(rotation=True, reuse_detection=True)",
            "listen_backlog": LISTEN_BACKLOG,
            "ours": "fanout.refresh_all(force=True) over TokenKeeper x N, one FileTokenStore, one FileRefreshLock",
            "peer": "for each connection: authlib OAuth2Client(...).refresh_token(url), update_token -> JSON file",
            "floor": "the same requests from max_workers threads on bare kept-alive httpx clients, no store or lock",
            "floor_async": "the same requests from max_workers coroutines, one httpx.AsyncClient each, no store or lock",
            "floor_async_one": "the same, all coroutines on one httpx.AsyncClient (max_workers connections)",
            "timed": "ours: refresh_all only (keepers built before, setup_s); peer: the whole loop incl. clients",
            "goal_s": GOAL_SECONDS,
            "rss_goal_ratio": RSS_GOAL_RATIO,
            "budget_s": budget,
            "setup_budget_s": SETUP_BUDGET_S,
        },
        "ours": ours,
        "peer": peer,
        "floor": floor,
        **asyncs,
        "goal_met": goal,
        "ratios": {
            "wall_s": None if ours.get("timed_out") else ratio(ours["wall_s"], peer["wall_s"]),
            "wall_s_vs_floor": None if ours.get("timed_out") else ratio(ours["wall_s"], floor["wall_s"]),
            "async_floor_vs_floor": ratio(asyncs["floor_async"]["wall_s"], floor["wall_s"]),
            "async_one_client_vs_floor": ratio(asyncs["floor_async_one"]["wall_s"], floor["wall_s"]),
            "peak_rss": ratio(ours["maxrss_bytes"], peer["maxrss_bytes"]),
        },
    }


def _run_ours_within(job: dict[str, Any], budget: float) -> dict[str, Any]:
    """``_ours`` on a thread; past ``budget`` seconds in a phase, report how far it got instead."""
    progress: dict[str, Any] = {}
    holder: dict[str, dict[str, Any]] = {}
    started = threading.Event()
    worker = threading.Thread(target=lambda: holder.update(result=_ours(job, progress, started)), daemon=True)
    worker.start()
    if started.wait(job["setup_budget_s"]):
        worker.join(budget)
    if "result" in holder:
        return holder["result"]
    refresh_started = progress.pop("refresh_all_started", None)
    return {
        **progress,
        "timed_out": True,
        "budget_s": budget,
        "setup_budget_s": job["setup_budget_s"],
        "wall_s": None,
        "refresh_all_elapsed_s": None if refresh_started is None else time.perf_counter() - refresh_started,
        "maxrss_bytes": maxrss_bytes(),
    }


def _child(argv: list[str]) -> None:
    import os

    side, job_path, out_path = argv
    job = json.loads(Path(job_path).read_text())
    sides = {
        "peer": _peer,
        "floor": _floor,
        "floor_async": _floor_async,
        "floor_async_one": _floor_async_one,
    }
    result = _run_ours_within(job, job["budget_s"]) if side == "ours" else sides[side](job)
    Path(out_path).write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # do not wait for a refresh thread that overran its budget


if __name__ == "__main__":
    _child(sys.argv[1:])
