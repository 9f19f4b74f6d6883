"""Chaos that asks the vendor, shortened (the full 10,000 rounds: ``make chaos``).

Real OpenBao, moto, Redis and PostgreSQL servers on 127.0.0.1 (and an Airflow metadata database
on that PostgreSQL for the Variable store); every fault class on every store and lock it applies
to; each round judged at the vendor (see ``tests/concurrency/chaos``).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from .chaos import COMBOS, FAULTS, STORES, run_chaos
from .chaos.child import digest
from .chaos.table import markdown_table

#: Every (fault class, store, lock) once (175 pairs: 43 of them on the Variable store, whose claims
#: settle 0.5 s each), then 25 at random: a few hundred rounds, about 2.5 minutes on two loaded cores.
ROUNDS = int(os.environ.get("CHAOS_TEST_ROUNDS", "200"))


@pytest.mark.slow
def test_chaos_judged_at_the_vendor(tmp_path: Path) -> None:
    report = run_chaos(ROUNDS, tmp_path)
    print(markdown_table(report))
    print({k: v for k, v in report.as_dict().items() if k != "by_fault_and_store"})
    assert report.rounds == ROUNDS
    assert report.violations == []
    # Every fault class ran on every store (and every lock) it applies to.
    cells = {f"{f.name} x {s}" for f in FAULTS.values() for s, lk in COMBOS if f.applies(lk)}
    assert cells <= set(report.cells), cells - set(report.cells)
    assert set(STORES) == {s for s, _ in COMBOS}
    # The judge really judged: tokens used after their commit, both end states seen at the vendor,
    # every torn state shown, every lost lease checked.
    assert report.checks["token used after its commit"] >= ROUNDS // 2
    assert report.checks["valid: vendor accepts its refresh token"] >= ROUNDS // 2
    assert report.checks["reauth_required: vendor rejects its refresh token"] >= 10
    # file partial + unrenamed, aws staged, vault applied, variable rolled back + committed unread
    assert len(report.evidence) == 6, report.evidence
    assert report.checks["no call after a lost lease"] >= 2
    # Both Variable-store torn writes, each with its own end: rolled back -> reauth, committed -> valid.
    assert report.ends["torn_write x variable -> reauth_required"] >= 1, report.ends
    assert report.ends["torn_write x variable -> valid"] >= 1, report.ends
    def ends_of(name: str) -> set[str]:
        return {key.rsplit(" -> ", 1)[1] for key in report.ends if key.startswith(f"{name} x ")}

    # The signal classes end valid: the vendor's answer was stored before the process exited.
    for name in ("sigterm_mid_refresh", "sigint_mid_refresh", "sigalrm_mid_refresh"):
        assert ends_of(name) == {"valid"}, name
    # A lost answer: re-authorization on a strict vendor, recovered inside a vendor's reuse window.
    for name in ("vendor_drop_after", "vendor_timeout"):
        assert ends_of(name) == {"reauth_required"}, name
    for name in ("grace_drop_after_new_pair", "grace_drop_after_previous_only", "grace_timeout_same_pair"):
        assert ends_of(name) == {"valid"}, name


def _fake_round(results: dict[str, Any], uses: dict[str, float]) -> Any:
    from airflow_provider_tokenrefresh.testing.state import AccessUse

    from .chaos.runner import ChaosReport

    emulator = SimpleNamespace(first_use_by_digest=lambda d: AccessUse(uses[d], True) if d in uses else None)
    return SimpleNamespace(
        run=SimpleNamespace(emulator=emulator, report=ChaosReport()), results=results, problems=[]
    )


def test_the_first_use_judge_catches_a_token_used_before_its_commit() -> None:
    """Negative controls of the durability check (a keeper that hands out before storing)."""
    from .chaos.judge import check_first_use

    handed = {"outcome": "token", "access": "a" * 64, "sample_status": 200}
    early = _fake_round({"holder": {**handed, "acks": [["a" * 64, 100.5]]}}, {"a" * 64: 100.0})
    check_first_use(early)
    assert early.problems and "before its record was durable" in early.problems[0]
    never = _fake_round({"holder": {**handed, "acks": []}}, {"a" * 64: 100.0})
    check_first_use(never)
    assert never.problems == ["holder was handed a token no write of which was acknowledged"]
    unused = _fake_round({"holder": {**handed, "acks": [["a" * 64, 99.0]]}}, {})
    check_first_use(unused)
    assert unused.problems == ["holder was handed a token the vendor never saw used"]
    fine = _fake_round({"holder": {**handed, "acks": [["a" * 64, 99.0]]}}, {"a" * 64: 100.0})
    check_first_use(fine)
    assert fine.problems == []
    assert fine.run.report.checks["token used after its commit"] == 1


def test_the_emulator_logs_each_access_tokens_first_use(emulator_factory: Any) -> None:
    """The vendor side of the durability check: the first presentation at the sample API is kept."""
    import time

    import httpx

    emu = emulator_factory("oauth2_basic")
    tokens = emu.issue_tokens()
    assert emu.first_use(tokens.access_token) is None
    before = time.time()
    for _ in range(2):
        answer = httpx.get(emu.sample_url, headers={"Authorization": f"Bearer {tokens.access_token}"})
        assert answer.status_code == 200
    first = emu.first_use(tokens.access_token)
    assert first is not None and first.accepted and before <= first.at <= time.time()
    assert emu.first_use_by_digest(digest(tokens.access_token)) == first
    httpx.get(emu.sample_url, headers={"Authorization": "Bearer not-a-token"})
    refused = emu.first_use("not-a-token")
    assert refused is not None and not refused.accepted
