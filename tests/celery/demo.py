"""``make cluster-demo``: the full herd-at-expiry proof on a real CeleryExecutor deployment.

64 mapped tasks + 8 deferrable sensors per window, the api-server's Test button during each, 3
windows, for each lock setting (default = ``auto`` -> the Celery broker's Redis, ``redis``,
``postgres``, ``file`` forced). Prints the table and writes the JSON (default
``benchmarks/results/celery.json``). Exit status 1 if any configuration fails the check.

    python -m tests.celery.demo [--windows 3] [--locks default,redis,postgres,file] [--small]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

from airflow_provider_tokenrefresh.testing.celery_herd import (
    PeerWindow,
    percentile,
    run_configuration,
    run_peer_window,
)
from tests.celery.deploy import CONFIGURATIONS, deployment

ROOT = Path(__file__).resolve().parents[2]


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| lock setting | lock in use | windows | refreshes per window | task instances (success / failed) | invalid_grant | Test-button probes | chain alive |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['lock']} | {r['lock_in_use']} | {r['windows']} | {', '.join(map(str, r['refreshes_per_window']))} "  # type: ignore[call-overload]
            f"| {r['ti_success']} / {r['ti_failed']} | {r['invalid_grant']} | {r['probes']} | {'yes' if r['chain_alive'] else 'NO'} |"
        )
    return "\n".join(lines)


def _peer_json(window: PeerWindow | None) -> dict[str, object] | None:
    if window is None:
        return None
    p50, p99 = percentile(window.token_ms, 50), percentile(window.token_ms, 99)
    return {**asdict(window), "token_ms_p50": p50, "token_ms_p99": p99}


def time_to_token_table(
    rows: list[dict[str, object]], peer: dict[str, object] | None, floor: dict[str, object] | None = None
) -> str:
    """Time to token at expiry (64 mapped tasks) and refreshes per window: ours vs the peer
    pattern, and the peer reading a still-valid token (the floor)."""
    lines = [
        "| who | time to token p50 (ms) | p99 (ms) | refreshes per window | invalid_grant | chain alive |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| ours, lock {r['lock']} | {r['token_ms_p50']} | {r['token_ms_p99']} | "
            f"{', '.join(map(str, r['refreshes_per_window'][1:]))} | {r['invalid_grant']} | "  # type: ignore[index]
            f"{'yes' if r['chain_alive'] else 'NO'} |"
        )
    if peer is not None:
        lines.append(
            f"| peer: Variable JSON + refresh + Variable.set | {peer['token_ms_p50']} | {peer['token_ms_p99']} | "
            f"{peer['refreshes']} | {peer['invalid_grant']} | "
            f"{'yes' if peer['stored_refresh_token_works'] and not peer['family_revoked'] else 'NO'} |"
        )
    if floor is not None:
        lines.append(
            f"| floor: the peer reading a still-valid token (no refresh) | {floor['token_ms_p50']} | "
            f"{floor['token_ms_p99']} | {floor['refreshes']} | {floor['invalid_grant']} | — |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--locks", default=",".join(CONFIGURATIONS))
    parser.add_argument("--small", action="store_true", help="12 tasks + 4 sensors (the make-test variant)")
    parser.add_argument("--access-ttl", type=float, default=None, help="vendor access-token lifetime (s)")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also one window of the peer pattern (Variable JSON + Variable.set)",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "celery.json")
    args = parser.parse_args(argv)
    dag_id = "celery_token_herd_small" if args.small else "celery_token_herd"
    # A window lasts half the token's lifetime: long enough for every use of one run to fit in it.
    access_ttl = args.access_ttl or (81.0 if args.small else 241.0)
    t0 = time.monotonic()
    configurations = []
    with deployment(access_ttl=access_ttl) as deployed:
        print(
            f"[demo] deployment healthy in {deployed.started_in:.0f}s (2 workers, own homes; PostgreSQL; Redis)"
        )
        for name in args.locks.split(","):
            configurations.append(
                run_configuration(
                    deployed.stack,
                    deployed.emulator,
                    name,
                    CONFIGURATIONS[name],
                    dag_id=dag_id,
                    windows=args.windows,
                )
            )
            peer = run_peer_window(deployed.stack, deployed.emulator) if args.peer else None
            floor = run_peer_window(deployed.stack, deployed.emulator, expires_in=3600) if args.peer else None
    rows = [c.summary() for c in configurations]
    report = {
        "command": "make cluster-demo" if not args.small else "python -m tests.celery.demo --small",
        "dag_id": dag_id,
        "access_ttl": access_ttl,
        "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "seconds": round(time.monotonic() - t0, 1),
        "configurations": [c.as_json() for c in configurations],
        "peer": _peer_json(peer),
        "peer_read_only": _peer_json(floor),
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table(rows))
    print(time_to_token_table(rows, report["peer"], report["peer_read_only"]))
    print(f"[demo] {report['seconds']}s; results in {args.json}")
    return 0 if all(c.ok for c in configurations) else 1


if __name__ == "__main__":
    sys.exit(main())
