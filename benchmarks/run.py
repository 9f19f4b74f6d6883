"""Run every benchmark, write ``benchmarks/results/latest.json`` and ``latest.png``, print a table.

``python -m benchmarks.run`` (``make bench``); ``--only herd,hotpath`` runs a subset.
Kept free of heavy imports at module level: spawned herd workers import this module again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import (
    RESULTS,
    child_env,
    configure_bytecode_cache,
    ensure_repo_on_path,
    run_in_child,
)

if TYPE_CHECKING:
    from collections.abc import Callable

ORDER = ("herd", "fanout", "hotpath", "hotpath_task", "importcost", "overhead")

WARM_IMPORTS = (
    "import airflow.sdk, airflow.providers.http.operators.http, httpx, httpcore, "
    "authlib.integrations.httpx_client, airflow_provider_tokenrefresh.hooks.tokenrefresh, "
    "airflow_provider_tokenrefresh.operators.tokenrefresh, airflow_provider_tokenrefresh.sensors.tokenrefresh, "
    "airflow_provider_tokenrefresh.testing, airflow_provider_tokenrefresh.testing.herd, benchmarks.fanout, matplotlib.pyplot; "
    "httpx.Client().close()"
)


def warm_bytecode() -> float:
    """Import everything once in a child so that every measured process finds compiled bytecode."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", WARM_IMPORTS],
        env=child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"warming the bytecode cache failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for dist in (
        "apache-airflow",
        "airflow-provider-tokenrefresh",
        "authlib",
        "httpx",
        "apache-airflow-providers-http",
        "matplotlib",
    ):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    return found


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value:,.{digits}f}{unit}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}x"


def _span(bounds: list[float]) -> str:
    return f"{bounds[0]:.0f} to {bounds[1]:.0f}"


def _safe_ratio(ours: float, peer: float) -> float | None:
    return None if peer == 0 else ours / peer


def markdown(results: dict[str, Any]) -> str:
    """The README table: one row per figure, ours next to its peer and the ratio ours/peer."""
    rows = [
        "| Benchmark | Measure | Ours | Peer | Ours/Peer |",
        "|---|---|---:|---:|---:|",
    ]
    goals: list[str] = []
    herd = results.get("herd")
    if herd:
        rounds = herd["config"]["rounds"]
        for s in herd["sizes"]:
            o, p, n = s["ours"], s["peer"], s["processes"]
            name = f"Herd N={n}, {rounds} rounds (peer: Authlib)"
            rows.append(
                f"| {name} | refresh requests / round, mean (max) | "
                f"{o['refresh_requests_per_round_mean']:.1f} ({o['refresh_requests_per_round_max']}) | "
                f"{p['refresh_requests_per_round_mean']:.1f} ({p['refresh_requests_per_round_max']}) | "
                f"{_ratio(s['ratios']['refresh_requests_per_round_mean'])} |"
            )
            rows.append(
                f"| | invalid_grant (processes left without a token) | {o['invalid_grant']} "
                f"({o['processes_without_token']}) | {p['invalid_grant']} ({p['processes_without_token']}) | "
                f"{_ratio(_safe_ratio(o['invalid_grant'], p['invalid_grant']))} |"
            )
            rows.append(
                f"| | time to token p50 / p99 (ms) | {o['p50_ms']:.0f} / {o['p99_ms']:.0f} | "
                f"{p['p50_ms']:.0f} / {p['p99_ms']:.0f} | {_ratio(s['ratios']['p50_ms'])} / "
                f"{_ratio(s['ratios']['p99_ms'])} |"
            )
        met = herd["goal_exactly_one_refresh_per_round"]
        goals.append(f"herd, exactly 1 refresh per round at every N: {'met' if met else 'MISSED'}")
        if "uncontended" in herd:
            alone = herd["uncontended"]["p50_ms"]
            rows.append(f"| Herd reference | one uncontended refresh, p50 (ms) | {alone:.0f} | — | |")
            for s in herd["sizes"]:
                g, o = s["goal_time_to_token"], s["ours"]
                rows.append(
                    f"| Herd N={s['processes']} floor | the same processes only reading a valid record, p99 (ms) | "
                    f"{o['read_only_p99_ms']:.0f} | — | |"
                )
                goals.append(
                    f"herd N={s['processes']} p50 <= 1.5x one refresh ({g['p50_limit_ms']:.0f} ms): "
                    f"{'met' if g['p50_met'] else 'MISSED'} ({o['p50_ms']:.0f} ms); p99 <= 2x max(one refresh, "
                    f"read-only p99) ({g['p99_limit_ms']:.0f} ms): {'met' if g['p99_met'] else 'MISSED'} "
                    f"({o['p99_ms']:.0f} ms)"
                )
    fanout = results.get("fanout")
    if fanout:
        o, p, c = fanout["ours"], fanout["peer"], fanout["config"]
        name = f"Fan-out {c['connections']:,} connections, {c['latency_s'] * 1e3:.0f} ms vendor (peer: Authlib, sequential)"
        stopped = bool(o.get("timed_out"))
        if stopped and o.get("phase") == "refresh_all":
            ours_wall = f"> {o['budget_s']:.0f} (stopped; {o['vendor_ok']:,} refreshed by then)"
        elif stopped:
            ours_wall = f"not reached (building the keepers took > {o['setup_budget_s']:.0f} s)"
        else:
            ours_wall = f"{o['wall_s']:.2f}"
        rows.append(
            f"| {name} | wall time (s) | {ours_wall} | {p['wall_s']:.2f} | {_ratio(fanout['ratios']['wall_s'])} |"
        )
        floor = fanout.get("floor")
        if floor:
            rows.append(
                f"| | limit: bare httpx, {c['max_workers']} threads, no store or lock (s) | "
                f"{ours_wall} | {floor['wall_s']:.2f} (floor) | {_ratio(fanout['ratios'].get('wall_s_vs_floor'))} |"
            )
        shapes = (
            ("floor_async", "async_floor_vs_floor", "an `AsyncClient` each"),
            ("floor_async_one", "async_one_client_vs_floor", "one `AsyncClient`"),
        )
        for side, key, shape in shapes:
            if floor and side in fanout:
                rows.append(
                    f"| | async shape: bare httpx, {c['max_workers']} coroutines on {shape} (s, vs the threaded floor) | "
                    f"{fanout[side]['wall_s']:.2f} | {floor['wall_s']:.2f} (floor) | {_ratio(fanout['ratios'].get(key))} |"
                )
        setup = o.get("setup_s")
        rows.append(
            f"| | building the keepers (s, not in wall time) | "
            f"{_fmt(setup, digits=2) if setup is not None else '> ' + _fmt(o['setup_budget_s'], digits=0)} | — | |"
        )
        rows.append(
            f"| | peak RSS (MiB) | {o['peak_rss_mib']:.0f} | {p['peak_rss_mib']:.0f} | "
            f"{_ratio(fanout['ratios']['peak_rss'])} |"
        )
        rss_goal = fanout["config"].get("rss_goal_ratio")
        if rss_goal is not None:
            rss = fanout["ratios"]["peak_rss"]
            goals.append(
                f"fan-out peak RSS <= {rss_goal:g}x the peer: {'met' if rss is not None and rss <= rss_goal else 'MISSED'} ({_ratio(rss)})"
            )
        if stopped:
            goals.append(f"fan-out within {fanout['config']['goal_s']:g} s: MISSED ({ours_wall})")
        else:
            goals.append(
                f"fan-out within {fanout['config']['goal_s']:g} s: {'met' if fanout['goal_met'] else 'MISSED'} ({o['wall_s']:.2f} s)"
            )
    hot = results.get("hotpath")
    if hot:
        r = hot["results"]
        name = "Hot path, valid token (peer: Authlib `ensure_active_token`)"
        rows.append(
            f"| {name} | ns/op, in-process cache hit | {_fmt(r['ours_cache']['median_ns'], digits=0)} | "
            f"{_fmt(r['peer']['median_ns'], digits=0)} | {_ratio(hot['ratios']['cache_vs_peer'])} |"
        )
        rows.append(
            f"| | ns/op, `hook.get_token()`, cache hit (vs our cache hit) | {_fmt(r['ours_hook']['median_ns'], digits=0)} | "
            f"{_fmt(r['ours_cache']['median_ns'], digits=0)} | {_ratio(hot['ratios']['hook_vs_cache'])} |"
        )
        rows.append(
            f"| | ns/op, via FileTokenStore (`clear_cache()` first) | {_fmt(r['ours_store']['median_ns'], digits=0)} | "
            f"{_fmt(r['peer']['median_ns'], digits=0)} | {_ratio(hot['ratios']['store_vs_peer'])} |"
        )
        rows.append(
            f"| | ns/op, via store vs peer reading its JSON file | {_fmt(r['ours_store']['median_ns'], digits=0)} | "
            f"{_fmt(r['peer_file']['median_ns'], digits=0)} | {_ratio(hot['ratios']['store_vs_peer_file'])} |"
        )
    if hot:
        g = hot["goals"]
        goals.append(
            f"cache hit <= {g['cache_vs_peer_at_most']:.1f}x Authlib: {'met' if g['cache_vs_peer_met'] else 'MISSED'} "
            f"({_ratio(hot['ratios']['cache_vs_peer'])})"
        )
        goals.append(
            f"hook.get_token() <= {g['hook_vs_cache_at_most']:.0f}x the cache hit: "
            f"{'met' if g['hook_vs_cache_met'] else 'MISSED'} ({_ratio(hot['ratios']['hook_vs_cache'])})"
        )
    task = results.get("hotpath_task")
    if task:
        r = task["results"]
        name = "Hot path inside a real Airflow task (peer: Authlib in the same task)"
        rows.append(
            f"| {name} | ns/op, `hook.get_token()` vs the keeper's cache hit | {_fmt(r['in_task_hook'], digits=0)} | "
            f"{_fmt(r['in_task_cache'], digits=0)} | {_ratio(task['ratios']['hook_vs_cache'])} |"
        )
        rows.append(
            f"| | ns/op, the keeper's cache hit vs Authlib | {_fmt(r['in_task_cache'], digits=0)} | "
            f"{_fmt(r['in_task_peer'], digits=0)} | {_ratio(task['ratios']['cache_vs_peer'])} |"
        )
        rows.append(
            f"| | first `get_token()` of the task (ms; Variable store claim settles 6 s) | {r['first_call_ms']:.0f} | — | |"
        )
        g = task["goals"]
        goals.append(
            f"hook.get_token() in a task <= {g['hook_vs_cache_at_most']:.0f}x the cache hit: "
            f"{'met' if g['hook_vs_cache_met'] else 'MISSED'} ({_ratio(task['ratios']['hook_vs_cache'])})"
        )
    imports = results.get("importcost")
    if imports:
        o, p = imports["ours"], imports["peer"]
        name = "Import cost on top of `import airflow.sdk` (peer: HTTP provider operator)"
        rows.append(
            f"| {name} | ms added, same process (`-X importtime`, median of {imports['config']['runs']}) | "
            f"{o['in_process_ms']:.1f} | {p['in_process_ms']:.1f} | {_ratio(imports['ratios']['in_process'])} |"
        )
        rows.append(
            f"| | ms added, two fresh processes subtracted (median; range) | {o['cross_process_ms']:.0f} "
            f"({_span(o['cross_process_range_ms'])}) | {p['cross_process_ms']:.0f} "
            f"({_span(p['cross_process_range_ms'])}) | {_ratio(imports['ratios']['cross_process'])} |"
        )
        goals.append(
            f"import under 30 ms: {'met' if imports['goal_under_30ms'] else 'MISSED'} "
            f"({o['in_process_ms']:.1f} ms same-process; two-process difference median "
            f"{o['cross_process_ms']:.0f} ms, range {_span(o['cross_process_range_ms'])} ms)"
        )
    over = results.get("overhead")
    if over:
        o, b = over["ours"], over["bare"]
        name = "Overhead per refresh (peer: bare `httpx.Client.post`)"
        rows.append(
            f"| {name} | µs per call, median / p99 | {o['median_us']:.0f} / {o['p99_us']:.0f} | "
            f"{b['median_us']:.0f} / {b['p99_us']:.0f} | {_ratio(over['ratios']['median'])} / "
            f"{_ratio(over['ratios']['p99'])} |"
        )
    table = "\n".join(rows)
    if goals:
        table += "\n\nGoals: " + "; ".join(goals) + "."
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and write the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only", default=",".join(ORDER), help="comma-separated subset of " + ", ".join(ORDER)
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--fanout-budget", type=float, default=None, help="seconds before ours' fan-out is stopped"
    )
    args = parser.parse_args(argv)
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(ORDER))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    ensure_repo_on_path()
    import warnings

    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    os.environ["PYTHONWARNINGS"] = "ignore"  # spawned workers: no deprecation noise from authlib
    started = time.perf_counter()
    load_before = os.getloadavg()
    pycache = configure_bytecode_cache()
    warm_s = warm_bytecode()
    print(
        f"bytecode cache warm ({warm_s:.1f} s, {pycache}); load average {load_before[0]:.1f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )

    from benchmarks import fanout, herd, hotpath_task, importcost

    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "herd": herd.run,
        "fanout": (lambda: fanout.run(budget=args.fanout_budget)) if args.fanout_budget else fanout.run,
        "hotpath": lambda: run_in_child("benchmarks.hotpath"),
        "hotpath_task": hotpath_task.run,
        "importcost": importcost.run,
        "overhead": lambda: run_in_child("benchmarks.overhead"),
    }
    benchmarks: dict[str, Any] = {}
    for name in ORDER:
        if name not in selected:
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        benchmarks[name] = runners[name]()
        benchmarks[name]["runtime_s"] = time.perf_counter() - start
        print(f"   {benchmarks[name]['runtime_s']:.1f} s", flush=True)

    table = markdown(benchmarks)
    total = time.perf_counter() - started
    results = {
        "meta": {
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "total_runtime_s": total,
            "bytecode_warmup_s": warm_s,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": _versions(),
            "bytecode_cache": pycache,
            "network": "127.0.0.1 only",
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "benchmarks": benchmarks,
        "table_markdown": table,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    # A subset run does not replace the full run's results (what the README's table quotes).
    stem = "latest" if set(selected) == set(ORDER) else "only-" + "-".join(n for n in ORDER if n in selected)
    tmp = args.out_dir / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    tmp.replace(args.out_dir / f"{stem}.json")

    from benchmarks.chart import render

    render(benchmarks, args.out_dir / f"{stem}.png")
    print()
    print(table)
    print()
    print(
        f"total runtime {total:.0f} s; wrote {args.out_dir / (stem + '.json')} and {args.out_dir / (stem + '.png')}"
    )
    return 0


if __name__ == "__main__":
    import signal

    # SIGTERM runs every benchmark's cleanup (a deployment's components are stopped by PID).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise SystemExit(main())
