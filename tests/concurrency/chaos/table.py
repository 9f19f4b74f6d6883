"""The chaos report as a Markdown table: fault class x store, rounds and end states."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from .catalogue import FAULTS, STORES

if TYPE_CHECKING:
    from .runner import ChaosReport


def markdown_table(report: ChaosReport) -> str:
    ends: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for key, n in report.ends.items():
        cell, _, end = key.partition(" -> ")
        ends[cell][end] += n
    bad: collections.Counter[str] = collections.Counter()
    for v in report.violations:
        inside = v.split("(", 1)[1].split(")", 1)[0]  # "fault, store+lock"
        fault, _, pair = inside.partition(", ")
        bad[f"{fault} x {pair.split('+')[0]}"] += 1
    short = {"valid": "valid", "reauth_required": "reauth"}
    lines = [
        "| fault class | " + " | ".join(STORES) + " | violations |",
        "|---|" + "---|" * len(STORES) + "---|",
    ]
    for name in FAULTS:
        cells = []
        total_bad = 0
        for store in STORES:
            cell = f"{name} x {store}"
            n = report.cells.get(cell, 0)
            total_bad += bad.get(cell, 0)
            if not n:
                cells.append("—")
                continue
            parts = ", ".join(f"{c} {short.get(e, e)}" for e, c in sorted(ends[cell].items()))
            cells.append(f"{n} ({parts})")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {total_bad} |")
    lines.append(
        "| **all** | " + " | ".join(
            str(sum(n for c, n in report.cells.items() if c.endswith(f" x {s}"))) for s in STORES
        ) + f" | {len(report.violations)} |"
    )  # fmt: skip
    return "\n".join(lines) + "\n"
