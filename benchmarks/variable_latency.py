"""Variable write-ack and read-to-visible time from tasks, through the execution API, under load.

The token keeper's claim on a store without compare-and-set (Airflow Variables) is *write, wait
``settle``, read back*, and it withdraws a claim whose read-to-acknowledged time exceeded
``settle / 2`` (default settle 2 s: an assumed bound of 1 s). This benchmark measures that bound
on a real deployment (``AirflowStack``: api-server, scheduler, dag-processor, triggerer,
LocalExecutor, SQLite, all on 127.0.0.1) with ``benchmarks/dags/variable_latency_dag.py``:
``writers`` mapped tasks x ``iterations`` writes (own key, and every ``shared_every``-th write
the one shared key) while ``readers`` mapped tasks read every key round-robin.

Per write (``time.monotonic()``, one clock for every process on the machine):

* **ack** ``t1 - t0``: ``Variable.set`` call start to its return;
* **visible** ``t2 - t0``: to the end of the read-back that returned the value (own key, retried
  up to 5 s), or on the shared key a value no older than ours (a concurrent or later write of
  another writer: ours was no longer hidden behind an older one);
* **read→ack** ``t1 - t_pre`` and **read→visible** ``t2 - t_pre``: from the start of the read
  that precedes the write, as the keeper measures its claim;
* **silent failure**: ``Variable.set`` returned but the value never showed (own key), or the
  read-back returned a value that an earlier, already acknowledged write had superseded (shared
  key); ``Variable.set`` swallows the execution API's error answers (apache/airflow#68537).

Readers' observations are checked for **stale reads after ack**: a read that started after some
write was acknowledged and still returned an older value. None means: once ``Variable.set``
returned, every reader sees the value (or a newer one) — visibility is bounded by the ack.
Cross-reader visibility (first reader observation of a value - its write's ``t0``) is an upper
bound: it includes the reader's round-robin poll gap.

``python -m benchmarks.variable_latency`` (``--conditions baseline,cpu_hog``; ``--writers``,
``--iterations``, ``--readers``, ``--shared-every``). ``cpu_hog`` adds one busy-loop process.
Writes ``benchmarks/results/variable_latency.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_provider_tokenrefresh.keeper import DEFAULT_SETTLE
from benchmarks.common import RESULTS, configure_bytecode_cache, percentile

DAG_ID = "variable_latency"
DAG_FILE = Path(__file__).resolve().parent / "dags" / "variable_latency_dag.py"
SHARED_KEY = "varlat_shared"
#: The keeper's claim settle time: it must be at least twice the worst read-to-visible time.
BOUND_S = DEFAULT_SETTLE
OUTPUT = RESULTS / "variable_latency.json"


# -- the load -------------------------------------------------------------------------------------


def start_cpu_hog() -> subprocess.Popen[bytes]:
    """One busy-loop process at normal priority (dies with this process; stopped by its PID)."""
    from airflow_provider_tokenrefresh.testing.stack import _die_with_parent

    return subprocess.Popen(
        [sys.executable, "-c", "while True: pass"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets a kernel flag
    )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# -- analysis -------------------------------------------------------------------------------------


def _ms(values: list[float]) -> dict[str, float | int | None]:
    def r(x: float) -> float | None:
        return None if math.isnan(x) else round(x * 1000, 2)

    return {
        "n": len(values),
        "p50": r(percentile(values, 0.50)),
        "p95": r(percentile(values, 0.95)),
        "p99": r(percentile(values, 0.99)),
        "max": r(max(values) if values else math.nan),
    }


def _load(path: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted(path.glob("*.jsonl")):
        with open(f) as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


class _KeyHistory:
    """Every write to one key, to ask "had a newer write than V been acknowledged before t?"."""

    def __init__(self, writes: list[dict[str, Any]]) -> None:
        done = sorted((w for w in writes if not w.get("_lost")), key=lambda w: w["t1"])
        self.t1 = [w["t1"] for w in done]
        self.max_t0: list[float] = []
        best = -math.inf
        for w in done:
            best = max(best, w["t0"])
            self.max_t0.append(best)

    def superseded(self, older_t1: float, at: float) -> bool:
        """Whether some write that started after ``older_t1`` was acknowledged before ``at``."""
        i = bisect.bisect_left(self.t1, at)
        return i > 0 and self.max_t0[i - 1] > older_t1


def analyse(out: Path, writers: int) -> dict[str, Any]:
    rows = _load(out)
    writes = [r for r in rows if "w" in r]
    reads = [r for r in rows if "r" in r]
    by_value = {w["value"]: w for w in writes}
    for w in writes:
        w["_lost"] = w["key"] != SHARED_KEY and w["back"] != w["value"]
    histories = {
        key: _KeyHistory([w for w in writes if w["key"] == key])
        for key in {w["key"] for w in writes} | {SHARED_KEY}
    }

    def stale(key: str, value: str | None, at: float) -> bool:
        older = by_value.get(value) if value is not None else None
        return histories[key].superseded(older["t1"] if older else -math.inf, at)

    # Shared-key read-backs: ours, a concurrent/later write (fine), or an older one (lost/stale).
    shared_stale = 0
    shared_superseded = 0
    for w in writes:
        if w["key"] != SHARED_KEY or w["back"] == w["value"]:
            continue
        if stale(SHARED_KEY, w["back"], w["t_read"]):
            w["_lost"] = True
            shared_stale += 1
        else:
            shared_superseded += 1
    ok = [w for w in writes if not w["_lost"]]
    lost = [w for w in writes if w["_lost"]]

    # Every read that is not a writer's own read-back: stale after an acknowledged write?
    observations = [(r["key"], r["v"], r["ts"]) for r in reads] + [
        (w["key"], w["pre"], w["t_pre"]) for w in writes
    ]
    stale_reads = sum(stale(k, v, ts) for k, v, ts in observations)
    first_seen: dict[str, float] = {}
    for r in reads:
        if r["v"] is not None and r["v"] not in first_seen:
            first_seen[r["v"]] = r["te"]
    cross = [first_seen[w["value"]] - w["t0"] for w in writes if w["value"] in first_seen]
    gaps: list[float] = []
    last: dict[tuple[int, str], float] = {}
    for r in sorted(reads, key=lambda r: r["ts"]):
        k = (r["r"], r["key"])
        if k in last:
            gaps.append(r["ts"] - last[k])
        last[k] = r["ts"]

    visible = [w["t2"] - w["t0"] for w in ok]
    read_to_visible = [w["t2"] - w["t_pre"] for w in ok]
    worst_visible = max(visible) if visible else math.nan
    worst_read_to_visible = max(read_to_visible) if read_to_visible else math.nan
    span = (min(w["t_pre"] for w in writes), max(w["t2"] for w in writes)) if writes else (0.0, 0.0)
    return {
        "writes": len(writes),
        "writers_reporting": len({w["w"] for w in writes}),
        "writers_expected": writers,
        "shared_key_writes": sum(w["key"] == SHARED_KEY for w in writes),
        "silent_failures": len(lost),
        "silent_failures_own_key": sum(w["key"] != SHARED_KEY for w in lost),
        "silent_failures_shared_key": shared_stale,
        "shared_readback_superseded_by_concurrent_write": shared_superseded,
        "late_visible_own_key": sum(w["attempts"] > 1 and not w["_lost"] for w in writes),
        "set_errors_raised": sum(bool(w["set_error"]) for w in writes),
        "get_errors": sum(len(w["get_errors"]) for w in writes) + sum(bool(r["e"]) for r in reads),
        "ack_ms": _ms([w["t1"] - w["t0"] for w in writes]),
        "visible_ms": _ms(visible),
        "read_to_ack_ms": _ms([w["t1"] - w["t_pre"] for w in writes]),
        "read_to_visible_ms": _ms(read_to_visible),
        "over_half_bound": {
            "visible": sum(v > BOUND_S / 2 for v in visible),
            "read_to_ack": sum(w["t1"] - w["t_pre"] > BOUND_S / 2 for w in writes),
        },
        "over_bound": {
            "visible": sum(v > BOUND_S for v in visible),
            "read_to_ack": sum(w["t1"] - w["t_pre"] > BOUND_S for w in writes),
        },
        "reader_reads": len(reads),
        "stale_reads_after_ack": stale_reads,
        "reads_checked_for_staleness": len(observations),
        "cross_reader_visible_upper_bound_ms": _ms(cross),
        "reader_poll_gap_ms": _ms(gaps),
        "write_phase_s": round(span[1] - span[0], 1),
        "writes_per_s": round(len(writes) / (span[1] - span[0]), 1) if span[1] > span[0] else None,
        "bound_s": BOUND_S,
        "bound_ge_2x_worst_visible": bool(2 * worst_visible <= BOUND_S),
        "bound_ge_2x_worst_read_to_visible": bool(2 * worst_read_to_visible <= BOUND_S),
        "max_bound_supported_s": None if math.isnan(worst_visible) else round(2 * worst_visible, 3),
        "examples_lost": [
            {k: w[k] for k in ("key", "value", "back", "t0", "t1", "t2", "attempts", "set_error")}
            for w in lost[:5]
        ],
    }


def _log_errors(text: str) -> dict[str, int]:
    patterns = {
        "database_is_locked": r"database is locked",
        "http_5xx": r'" 5\d\d |HTTP/1\.1" 5\d\d|status_code=5\d\d',
        "server_response_error": r"ServerResponseError",
        "tracebacks": r"Traceback \(most recent call last\)",
    }
    return {name: len(re.findall(p, text)) for name, p in patterns.items()}


# -- the run --------------------------------------------------------------------------------------


class LoadSampler:
    """The 1-minute load average every few seconds while a run goes (other work moves every figure)."""

    def __init__(self, every: float = 5.0) -> None:
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float | None]:
        s = self.samples
        return {
            "mean": round(sum(s) / len(s), 2) if s else None,
            "max": round(max(s), 2) if s else None,
            "min": round(min(s), 2) if s else None,
        }


def run_condition(
    stack: Any, out_root: Path, label: str, conf: dict[str, Any], timeout: float
) -> dict[str, Any]:
    hog = start_cpu_hog() if label == "cpu_hog" else None
    try:
        load_before = os.getloadavg()
        started = time.monotonic()
        with LoadSampler() as load:
            run_id = stack.trigger(DAG_ID, conf={**conf, "label": label})
            state = stack.wait_run(DAG_ID, run_id, timeout=timeout)
        wall = time.monotonic() - started
        load_after = os.getloadavg()
    finally:
        if hog is not None:
            stop_process(hog)
    tis = stack.task_instances(DAG_ID, run_id)
    result = analyse(out_root / label, int(conf["writers"]))
    result.update(
        {
            "condition": label,
            "extra_load": "one busy-loop process (python -c 'while True: pass')" if hog else "none",
            "run_id": run_id,
            "run_state": state,
            "run_wall_s": round(wall, 1),
            "task_states": sorted(f"{ti['task_id']}[{ti.get('map_index', -1)}]={ti['state']}" for ti in tis),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
            "loadavg_1m_during_run": load.summary(),
            "task_log_errors": _log_errors(stack.run_logs(DAG_ID, run_id)),
        }
    )
    if state != "success":
        result["explain"] = stack.explain(DAG_ID, run_id)[-4000:]
    return result


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:,.1f}" if isinstance(v, float) else str(v)


def table(results: list[dict[str, Any]]) -> str:
    head = "| figure | " + " | ".join(r["condition"] for r in results) + " |"
    lines = [head, "|" + "---|" * (len(results) + 1)]

    def row(name: str, get: Any) -> None:
        lines.append(f"| {name} | " + " | ".join(_fmt(get(r)) for r in results) + " |")

    row("writes (count)", lambda r: r["writes"])
    row("silent failures", lambda r: r["silent_failures"])
    row(
        "stale reads after ack / reads checked",
        lambda r: f"{r['stale_reads_after_ack']} / {r['reads_checked_for_staleness']}",
    )
    for metric, label in (
        ("ack_ms", "ack"),
        ("visible_ms", "visible"),
        ("read_to_visible_ms", "read→visible"),
    ):
        for q in ("p50", "p95", "p99", "max"):
            row(f"{label} {q} (ms)", lambda r, m=metric, q=q: r[m][q])
    row(
        f"visible > {BOUND_S / 2:.1f} s / > {BOUND_S:.1f} s",
        lambda r: f"{r['over_half_bound']['visible']} / {r['over_bound']['visible']}",
    )
    row(f"read→ack > {BOUND_S / 2:.1f} s (claim withdrawn)", lambda r: r["over_half_bound"]["read_to_ack"])
    row("cross-reader visible ≤ max (ms)", lambda r: r["cross_reader_visible_upper_bound_ms"]["max"])
    row("writes/s", lambda r: r["writes_per_s"])
    row("run wall (s)", lambda r: r["run_wall_s"])
    row(
        "load avg 1 min during run (mean / max)",
        lambda r: f"{r['loadavg_1m_during_run']['mean']} / {r['loadavg_1m_during_run']['max']}",
    )
    row(
        f"settle {BOUND_S:.1f} s ≥ 2x worst visible",
        lambda r: (
            ("met" if r["bound_ge_2x_worst_visible"] else "missed")
            + f" (2x worst = {r['max_bound_supported_s']} s)"
        ),
    )
    row(
        f"settle {BOUND_S:.1f} s ≥ 2x worst read→visible",
        lambda r: "met" if r["bound_ge_2x_worst_read_to_visible"] else "missed",
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=2500)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--shared-every", type=int, default=4)
    parser.add_argument("--conditions", default="baseline,cpu_hog")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per DAG run")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--keep", action="store_true", help="keep the temporary AIRFLOW_HOME")
    args = parser.parse_args(argv)

    from airflow_provider_tokenrefresh.testing.stack import AirflowStack

    configure_bytecode_cache()
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="varlat-"))
    dags, out_root = tmp / "dags", tmp / "out"
    dags.mkdir()
    out_root.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    slots = str(args.writers + args.readers + 1)
    stack = AirflowStack(
        home=tmp / "home",
        dags_folder=dags,
        extra_env={
            "VARLAT_OUT": str(out_root),
            "AIRFLOW__CORE__PARALLELISM": slots,
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": slots,
        },
    )
    conf = {
        "writers": args.writers,
        "iterations": args.iterations,
        "readers": args.readers,
        "shared_every": args.shared_every,
    }
    results: list[dict[str, Any]] = []
    try:
        stack.migrate()
        stack.start()
        stack.wait_for_dag(DAG_ID)
        startup = time.monotonic() - t_start
        print(f"stack up in {startup:.0f}s (api-server {stack.base_url})", flush=True)
        for label in args.conditions.split(","):
            print(
                f"[{label}] {args.writers} writers x {args.iterations} writes, {args.readers} readers …",
                flush=True,
            )
            result = run_condition(stack, out_root, label, conf, args.timeout)
            results.append(result)
            print(
                f"[{label}] {result['run_state']} in {result['run_wall_s']}s: {result['writes']} writes, "
                f"{result['silent_failures']} silent failures, visible max {result['visible_ms']['max']} ms",
                flush=True,
            )
        component_errors = _log_errors("\n".join(stack.output(n) for n in ("api-server", "scheduler")))
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - t_start
    import airflow

    report = {
        "benchmark": "variable_latency",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "cd /work/main && .venv/bin/python -m benchmarks.variable_latency "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "airflow": airflow.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "deployment": "AirflowStack: api-server (1 worker), scheduler, dag-processor, triggerer; "
        "LocalExecutor; SQLite; 127.0.0.1",
        "config": {**conf, "parallelism": int(slots), "bound_s": BOUND_S, "own_key_retry_s": 5.0},
        "startup_s": round(startup, 1),
        "total_s": round(total, 1),
        "component_log_errors": component_errors,
        "conditions": results,
        "total_writes": sum(r["writes"] for r in results),
        "total_silent_failures": sum(r["silent_failures"] for r in results),
        "table_markdown": table(results),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(report["table_markdown"])
    print(
        f"\ntotal writes {report['total_writes']:,}, silent failures {report['total_silent_failures']}, "
        f"took {total:.0f}s; JSON: {args.output}"
    )
    return 0 if all(r["run_state"] == "success" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
