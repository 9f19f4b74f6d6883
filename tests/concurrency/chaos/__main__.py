"""``python -m tests.concurrency.chaos --rounds N [--jobs J] [--only CLASSES] [--stores STORES] [--json PATH] [--table PATH]``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from . import ChaosReport, run_chaos
from .runner import ChaosStopped
from .table import markdown_table


def _write(report: ChaosReport, json_path: str | None, table_path: str | None) -> tuple[str, str]:
    text = json.dumps(report.as_dict(), indent=2)
    table = markdown_table(report)
    if json_path:
        Path(json_path).write_text(text)
    if table_path:
        Path(table_path).write_text(table)
    return text, table


def _stop_on_signals() -> None:
    """SIGTERM/SIGINT in the runner stop the run cleanly (servers stopped by PID, partial report
    written). The forked children inherit the handler: there it restores the default and
    re-raises the signal, unless the child installed its own (the signal rounds do)."""
    runner = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> Any:
        if os.getpid() != runner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise ChaosStopped(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main() -> int:
    parser = argparse.ArgumentParser(description="chaos run of crash-safe rotation, judged at the vendor")
    parser.add_argument("--rounds", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--table", default=None, help="also write the Markdown table here")
    parser.add_argument("--only", default=None, help="comma-separated fault classes")
    parser.add_argument(
        "--stores", default=None, help="comma-separated stores (file, vault, aws, variable): only their pairs"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="independent runners side by side (own servers, seeds SEED, SEED+1, ...), rounds split among them",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.CRITICAL
    )  # the report is the output; the keepers' warnings are expected

    def progress(report: ChaosReport, seconds: float) -> None:
        # Every 250 rounds: a line, and the report so far (``"complete": false``) on disk.
        _write(report, args.json, args.table)
        print(
            f"chaos: {report.rounds} rounds, {len(report.violations)} violations, {seconds:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    if args.jobs > 1:
        from .parallel import run_parallel

        workdir = Path(args.json).parent if args.json else Path(tempfile.mkdtemp(prefix="tokenrefresh-chaos-"))
        return _finish(run_parallel(args, workdir), args)

    _stop_on_signals()
    with tempfile.TemporaryDirectory(prefix="tokenrefresh-chaos-") as tmp:
        only = set(args.only.split(",")) if args.only else None
        stores = set(args.stores.split(",")) if args.stores else None
        report = run_chaos(args.rounds, Path(tmp), seed=args.seed, only=only, stores=stores, progress=progress)
    return _finish(report, args)


def _finish(report: ChaosReport, args: argparse.Namespace) -> int:
    """Write and print the report; exit 3 if stopped, 1 with violations, else 0."""
    text, table = _write(report, args.json, args.table)
    print(text)
    print(table)
    if report.stopped:
        print(f"chaos: {report.stopped} after {report.rounds} judged rounds", file=sys.stderr)
        return 3
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
