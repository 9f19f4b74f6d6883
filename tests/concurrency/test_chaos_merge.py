"""``make chaos --jobs N`` merges independent runners' reports: counts add up, violations keep
their runner, a stopped runner makes the merged run stopped (pure; the runners themselves are
exercised by test_chaos.py and `make chaos`)."""

from __future__ import annotations

import collections

from .chaos.parallel import merge, report_from_dict, split
from .chaos.runner import ChaosReport


def _report(rounds: int, cell: str, end: str, violations: list[str], stopped: str | None = None) -> ChaosReport:
    report = ChaosReport(rounds=rounds, requested=rounds, violations=violations, seconds=1.0, stopped=stopped)
    report.cells = collections.Counter({cell: rounds})
    report.ends = collections.Counter({f"{cell} -> {end}": rounds})
    return report


def test_split_covers_every_round_once() -> None:
    assert split(10_000, 3) == [3334, 3333, 3333]
    assert sum(split(7, 4)) == 7 and max(split(7, 4)) - min(split(7, 4)) <= 1


def test_merge_adds_counts_and_keeps_each_violation_with_its_runner() -> None:
    a = _report(3, "none x file", "valid", [])
    b = _report(2, "none x file", "valid", ["round 1 (none, file+file): ended reauth_required"])
    c = report_from_dict(_report(4, "torn_write x aws", "reauth_required", [], stopped="stopped by SIGTERM").as_dict())
    merged = merge([a, b, c], requested=12, seconds=9.0)
    assert merged.rounds == 9 and merged.requested == 12
    assert merged.cells == collections.Counter({"none x file": 5, "torn_write x aws": 4})
    assert merged.ends["none x file -> valid"] == 5
    assert merged.violations == ["job 1: round 1 (none, file+file): ended reauth_required"]
    assert merged.stopped == "job 2 stopped by SIGTERM"
    assert merged.as_dict()["complete"] is False
    assert merge([a], requested=3, seconds=1.0).as_dict()["complete"] is True
