"""Where the fan-out's time goes: ours against variants of itself, in one run.

The fan-out benchmark (``fanout.py``) compares ours with the peer and with a bare-httpx floor.
This one keeps the keeper and changes one thing at a time, 1,000 connections at 50 ms:

* ``file``: what ``make bench`` measures (``refresh_all``, 64 threads, ``FileTokenStore`` and
  ``FileRefreshLock`` on the working directory's disk);
* ``tmpfs``: the same store and lock under ``/dev/shm`` (no disk, no ext4 inode allocation);
* ``memory``: an in-process compare-and-set dict instead of the store, no lock (what is left is
  the keeper, its client and the GIL);
* ``loop``: the keeper on one asyncio event loop instead of 64 threads — each connection's
  ``TokenKeeper.refresh`` runs in a greenlet that awaits ``RefreshClient.arefresh`` on an
  ``httpx.AsyncClient`` of its worker coroutine (64 of them), the store and lock calls run inline.
  A prototype of the "one async path" shape with the keeper's whole protocol, not a product path;
  ``greenlet`` comes with SQLAlchemy (an Airflow dependency);
* ``loop_memory``: the event loop with the in-memory store (to compare with ``memory``: threads
  against one loop, no store I/O on either).

Each variant runs in its own child process; reported: wall time, the child's user and system CPU
during ``refresh_all`` (``getrusage``), peak RSS, refreshes accepted by the vendor, and wall time
over the ``file`` variant's. ``python -m benchmarks.fanout_where [connections]``; writes
``benchmarks/results/fanout_where.json``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import basic_keepers, child_env, maxrss_bytes, ratio, vendor
from benchmarks.fanout import write_job

CONNECTIONS = 1000
LATENCY = 0.05
MAX_WORKERS = 64
VARIANTS = ("file", "tmpfs", "memory", "loop", "loop_memory")
RESULTS = Path(__file__).resolve().parent / "results" / "fanout_where.json"


class _MemoryStore:
    """A compare-and-set dict: the store with no I/O at all."""

    name = "memory"
    atomic = True

    def __init__(self) -> None:
        self._records: dict[str, tuple[Any, str]] = {}
        self._lock = threading.Lock()
        self._writes = 0

    def read(self, key: str) -> tuple[Any, str | None]:
        found = self._records.get(key)
        return (None, None) if found is None else found

    def write(self, key: str, record: Any, expected_version: str | None) -> str:
        from airflow_provider_tokenrefresh.errors import StoreConflict

        with self._lock:
            found = self._records.get(key)
            if (found[1] if found else None) != expected_version:
                raise StoreConflict(f"record {key!r} changed since it was read (memory)")
            self._writes += 1
            version = str(self._writes)
            self._records[key] = (record, version)
            return version


def _on_loop(keepers: dict[str, Any], workers: int) -> dict[str, Any]:
    """``refresh_all`` on one event loop: each keeper's refresh in a greenlet, awaiting the HTTP."""
    import asyncio
    import contextvars

    import greenlet

    from airflow_provider_tokenrefresh.client import RefreshClient

    class Bridged(greenlet.greenlet):  # type: ignore[misc]
        """A greenlet whose sync code may await on the loop that runs it."""

    http: contextvars.ContextVar[Any] = contextvars.ContextVar("http")
    sync_refresh = RefreshClient.refresh

    def refresh(self: RefreshClient, refresh_token: str, access_token: str | None = None, **kw: Any) -> Any:
        current = greenlet.getcurrent()
        if not isinstance(current, Bridged):
            return sync_refresh(self, refresh_token, access_token, **kw)
        return current.parent.switch(self.arefresh(refresh_token, access_token, client=http.get()))

    async def run_sync(fn: Any, **kwargs: Any) -> Any:
        child = Bridged(fn, parent=greenlet.getcurrent())
        child.gr_context = contextvars.copy_context()  # the worker's client (a greenlet starts with none)
        pending = child.switch(**kwargs)
        while not child.dead:
            try:
                value = await pending
            except BaseException as exc:  # thrown into the keeper, as a sync call would raise
                pending = child.throw(exc)
            else:
                pending = child.switch(value)
        return pending

    async def main() -> dict[str, Any]:
        queue = list(keepers.items())[::-1]
        outcomes: dict[str, Any] = {}
        first = next(iter(keepers.values())).client

        async def worker() -> None:
            async with first.async_client(max_connections=1, max_keepalive_connections=1) as client:
                http.set(client)
                while queue:
                    name, keeper = queue.pop()
                    try:
                        outcomes[name] = await run_sync(
                            keeper.refresh, force=True, min_ttl=keeper.refresh_margin
                        )
                    except Exception as exc:  # reported per connection
                        outcomes[name] = exc

        await asyncio.gather(*(worker() for _ in range(workers)))
        return outcomes

    RefreshClient.refresh = refresh  # type: ignore[method-assign]
    try:
        return asyncio.run(main())
    finally:
        RefreshClient.refresh = sync_refresh  # type: ignore[method-assign]


def _variant(variant: str, job: dict[str, Any]) -> dict[str, Any]:
    import httpx  # noqa: F401 - imported before the timed region, as in fanout.py

    from airflow_provider_tokenrefresh.fanout import refresh_all
    from airflow_provider_tokenrefresh.keeper import RefreshOutcome
    from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
    from airflow_provider_tokenrefresh.stores import FileTokenStore
    from airflow_provider_tokenrefresh.testing.backends import NoLock

    base = Path(job["workdir"])
    if variant == "tmpfs":
        base = Path(tempfile.mkdtemp(prefix="bench-fanout-where-", dir="/dev/shm"))
    memory = variant.endswith("memory")
    store: Any = _MemoryStore() if memory else FileTokenStore(str(base / "store"))
    lock: Any = NoLock() if memory else FileRefreshLock(str(base / "locks"))
    keepers = basic_keepers(job, job["seeds"], store, lock, lambda i: f"conn_{i:04d}")
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if variant.startswith("loop"):
        outcomes = _on_loop(keepers, job["max_workers"])
    else:
        outcomes = refresh_all(keepers, force=True, max_workers=job["max_workers"])
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    if variant == "tmpfs":
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return {
        "wall_s": wall,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
        "refreshed": sum(1 for o in outcomes.values() if isinstance(o, RefreshOutcome) and o.refreshed),
        "errors": sorted({type(o).__name__ for o in outcomes.values() if isinstance(o, Exception)}),
        "peak_rss_mib": maxrss_bytes() / 2**20,
    }


def run(connections: int = CONNECTIONS) -> dict[str, Any]:
    """Every variant against one emulator, each on fresh token families, in its own child."""
    if not os.path.isdir("/dev/shm"):
        raise RuntimeError("the tmpfs variant needs /dev/shm")
    results: dict[str, Any] = {}
    with (
        vendor(rotation=True, reuse_detection=True, latency=LATENCY) as emulator,
        tempfile.TemporaryDirectory(prefix="bench-fanout-where-") as tmp,
    ):
        for variant in VARIANTS:
            workdir = Path(tmp) / variant
            job_path = write_job(emulator, workdir, connections, MAX_WORKERS)
            emulator.reset_counters()
            out = workdir / "out.json"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.fanout_where",
                    "--child",
                    variant,
                    str(job_path),
                    str(out),
                ],
                env=child_env(),
                cwd=str(workdir),
                check=True,
                timeout=600,
            )
            result = json.loads(out.read_text())
            result["vendor_ok"] = emulator.counters.get("ok", 0)
            result["vendor_invalid_grant"] = emulator.counters.get("invalid_grant", 0)
            results[variant] = result
            print(
                f"  {variant:7s} {result['wall_s']:6.2f} s wall, user {result['user_s']:.2f} s, sys "
                f"{result['sys_s']:.2f} s, peak RSS {result['peak_rss_mib']:.0f} MiB, "
                f"{result['vendor_ok']}/{connections} accepted, errors {result['errors'] or 'none'}",
                flush=True,
            )
    for result in results.values():
        result["wall_vs_file"] = ratio(result["wall_s"], results["file"]["wall_s"])
    return {
        "config": {
            "connections": connections,
            "latency_s": LATENCY,
            "max_workers": MAX_WORKERS,
            "variants": VARIANTS,
        },
        "results": results,
        "load_average": os.getloadavg(),
    }


def _main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        variant, job_path, out_path = argv[1:]
        result = _variant(variant, json.loads(Path(job_path).read_text()))
        Path(out_path).write_text(json.dumps(result))
        sys.stdout.flush()
        os._exit(0)
    connections = int(argv[0]) if argv else CONNECTIONS
    report = run(connections)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    _main(sys.argv[1:])
