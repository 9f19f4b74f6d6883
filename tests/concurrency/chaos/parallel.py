"""``--jobs N``: N independent chaos runners side by side, each with its own servers, vendor and
seed (``seed``, ``seed + 1``, ...), the rounds split among them; their reports merged into one.

A round is latency-bound (a held answer, a settle, a process start), so one runner leaves the
cores mostly idle; runners share nothing, so the merged report judges every round exactly as a
single run would. Each runner's own report (``part-<i>.json``, written every 250 rounds) is
kept beside the merged one.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .runner import ChaosReport

_COUNTERS = {
    "by_fault_and_store": "cells",
    "end_states": "ends",
    "torn_state_evidence": "evidence",
    "checks": "checks",
    "seconds_by_fault": "fault_seconds",
}


def report_from_dict(data: dict[str, Any]) -> ChaosReport:
    """A report back from its ``as_dict()`` form."""
    report = ChaosReport(
        rounds=int(data["rounds"]),
        requested=int(data.get("requested", data["rounds"])),
        violations=list(data["violations"]),
        seconds=float(data["seconds"]),
        stopped=data.get("stopped"),
    )
    for key, attr in _COUNTERS.items():
        setattr(report, attr, collections.Counter(data.get(key, {})))
    return report


def merge(parts: list[ChaosReport], *, requested: int, seconds: float) -> ChaosReport:
    """One report of ``parts``: counts summed, violations listed by runner."""
    merged = ChaosReport(requested=requested, seconds=seconds)
    for i, part in enumerate(parts):
        merged.rounds += part.rounds
        merged.violations += [f"job {i}: {v}" for v in part.violations]
        for attr in _COUNTERS.values():
            getattr(merged, attr).update(getattr(part, attr))
        if part.stopped and not merged.stopped:
            merged.stopped = f"job {i} {part.stopped}"
    return merged


def split(rounds: int, jobs: int) -> list[int]:
    """``rounds`` split into ``jobs`` near-equal shares."""
    return [rounds // jobs + (1 if i < rounds % jobs else 0) for i in range(jobs)]


def run_parallel(args: Any, workdir: Path) -> ChaosReport:
    """Run ``args.jobs`` runners of ``python -m tests.concurrency.chaos`` and merge their reports."""
    started = time.monotonic()
    shares = split(args.rounds, args.jobs)
    parts = [workdir / f"part-{i}.json" for i in range(args.jobs)]
    procs: list[subprocess.Popen[bytes]] = []
    stopping: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    for i, share in enumerate(shares):
        argv = [sys.executable, "-m", "tests.concurrency.chaos", "--rounds", str(share)]
        argv += ["--seed", str(args.seed + i), "--json", str(parts[i])]
        if args.only:
            argv += ["--only", args.only]
        if args.stores:
            argv += ["--stores", args.stores]
        with open(workdir / f"part-{i}.err", "wb") as err:
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err))
    last = 0.0
    while any(proc.poll() is None for proc in procs):
        time.sleep(1)
        if time.monotonic() - last >= 60:
            last = time.monotonic()
            done = sum(json.loads(p.read_text())["rounds"] for p in parts if p.exists())
            print(
                f"chaos: {done} of {args.rounds} rounds judged ({args.jobs} jobs), {last - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )
    reports = []
    for i, (proc, path) in enumerate(zip(procs, parts, strict=True)):
        if not path.exists():
            tail = (workdir / f"part-{i}.err").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"chaos job {i} exited {proc.returncode} without a report:\n{tail}")
        reports.append(report_from_dict(json.loads(path.read_text())))
        if proc.returncode not in (0, 1, 3):
            reports[-1].violations.append(f"the runner exited {proc.returncode}")
    merged = merge(reports, requested=args.rounds, seconds=time.monotonic() - started)
    if stopping and not merged.stopped:
        merged.stopped = f"stopped by {signal.Signals(stopping[0]).name}"
    return merged
