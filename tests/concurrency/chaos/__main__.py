"""``python -m tests.concurrency.chaos --rounds N [--only CLASSES] [--stores STORES] [--json PATH] [--table PATH]``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from . import run_chaos
from .table import markdown_table


def _progress(report: object, seconds: float) -> None:
    rounds = getattr(report, "rounds", 0)
    violations = len(getattr(report, "violations", []))
    print(f"chaos: {rounds} rounds, {violations} violations, {seconds:.0f}s", file=sys.stderr, flush=True)


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
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.CRITICAL
    )  # the report is the output; the keepers' warnings are expected
    with tempfile.TemporaryDirectory(prefix="tokenrefresh-chaos-") as tmp:
        only = set(args.only.split(",")) if args.only else None
        stores = set(args.stores.split(",")) if args.stores else None
        report = run_chaos(
            args.rounds, Path(tmp), seed=args.seed, only=only, stores=stores, progress=_progress
        )
    data = report.as_dict()
    text = json.dumps(data, indent=2)
    table = markdown_table(report)
    print(text)
    print(table)
    if args.json:
        Path(args.json).write_text(text)
    if args.table:
        Path(args.table).write_text(table)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
