"""Chaos: refreshes killed with SIGKILL at injected points, plus store and vendor faults.

Each round runs one refresh in a fresh child process with one fault, then (as the next scheduled
run would) one recovery call in another fresh child without faults. The invariant is checked after
the recovery: the stored refresh token is one the vendor still accepts, or the record says
re-authorization is needed and why. It is also checked that no child was handed an access token
whose generation was not already durable in the store. A round that ends in re-authorization
re-seeds the connection (a person re-authorizes) so the next round starts clean.

``python -m tests.concurrency.chaos --rounds 1000`` is ``make chaos``.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAULTS = [
    "none",
    "kill_before_request",
    "kill_after_answer",
    "kill_during_write",
    "store_write_fails_once",
    "store_write_fails_always",
    "vendor_http_500",
    "vendor_http_503_retry_after",
    "vendor_drop_before",
    "vendor_drop_after",
    "vendor_malformed_json",
    "vendor_timeout",
]


@dataclass
class ChaosReport:
    """Counts per fault and end state."""

    rounds: int = 0
    by_fault: collections.Counter[str] = field(default_factory=collections.Counter)
    after_fault: collections.Counter[str] = field(default_factory=collections.Counter)
    after_recovery: collections.Counter[str] = field(default_factory=collections.Counter)
    by_fault_and_end: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "by_fault": dict(self.by_fault),
            "state_after_fault": dict(self.after_fault),
            "state_after_recovery": dict(self.after_recovery),
            "by_fault_and_end_state": dict(sorted(self.by_fault_and_end.items())),
            "violations": self.violations,
        }


#: The chaos keepers' bound on a refresh in flight (the vendor's slowest fault answers in 3 s).
STALE_AFTER = 5.0


def _child(spec: dict[str, Any], fault: str, out: Any) -> None:
    """One refresh attempt in its own process, with ``fault`` injected."""
    from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper
    from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
    from airflow_provider_tokenrefresh.stores import FileTokenStore
    from airflow_provider_tokenrefresh.testing.backends import build_client

    class FaultyStore(FileTokenStore):
        writes = 0

        def write(self, key: str, record: Any, expected_version: Any) -> Any:
            FaultyStore.writes += 1
            rotated = record.refresh_started_at is None and record.generation > 0
            if rotated and fault == "kill_during_write":
                # Half a write: a temp file lands, the rename never happens.
                with open(os.path.join(self.directory, ".tmp-partial"), "wb") as fh:
                    fh.write(record.to_storage_json().encode()[:40])
                os.kill(os.getpid(), signal.SIGKILL)
            if rotated and fault == "store_write_fails_always":
                raise OSError("injected: store unavailable")
            if rotated and fault == "store_write_fails_once" and FaultyStore.writes <= 2:
                raise OSError("injected: store hiccup")
            return super().write(key, record, expected_version)

    from datetime import timedelta

    from airflow_provider_tokenrefresh.tokens import utcnow

    TokenKeeper.clear_cache()
    # Each run is "later" than the one before by more than the stale bound: an intent a killed run
    # left is a crashed refresh to the next one (a young intent would be waited on, not replayed).
    offset = timedelta(seconds=spec["clock_offset"])
    client = build_client(spec, timeout=1.0 if fault == "vendor_timeout" else 10.0, backoff_base=0.01)
    keeper = TokenKeeper(
        "chaos_conn",
        client,
        FaultyStore(spec["store_dir"]),
        FileRefreshLock(spec["lock_dir"]),
        Seed(spec["seed_refresh"]),
        conn_id="chaos",
        write_backoff=0.001,
        lock_timeout=30,
        stale_after=STALE_AFTER,
        clock=lambda: utcnow() + offset,
    )

    def checkpoint(step: str) -> None:
        if (fault, step) in (
            ("kill_before_request", "before_request"),
            ("kill_after_answer", "after_answer"),
        ):
            os.kill(os.getpid(), signal.SIGKILL)

    keeper.checkpoint = checkpoint
    try:
        outcome = keeper.refresh(force=True)
        out.put(("token", outcome.record.generation))
    except Exception as exc:
        out.put(("error", getattr(exc, "kind", type(exc).__name__)))


def _run_child(ctx: Any, spec: dict[str, Any], fault: str) -> tuple[str, Any]:
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(spec, fault, out))
    proc.start()
    proc.join(timeout=120)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return ("hung", None)
    if proc.exitcode == -signal.SIGKILL:
        return ("killed", None)
    return out.get(timeout=10) if not out.empty() else ("no_result", proc.exitcode)


def _state(spec: dict[str, Any], emulator: Any) -> tuple[str, Any]:
    from airflow_provider_tokenrefresh.stores import FileTokenStore

    record, _ = FileTokenStore(spec["store_dir"]).read("chaos_conn")
    if record is not None and record.seed_fingerprint is not None:
        from airflow_provider_tokenrefresh.tokens import fingerprint

        if record.seed_fingerprint != fingerprint(spec["seed_refresh"]):
            record = None  # left from an earlier seed: the keeper would start from the new seed
    if record is not None and record.state == "reauth_required":
        return ("reauth_required" if record.reason else "reauth_without_reason"), record
    token = (
        record.refresh_token.get_secret_value()
        if record is not None and record.refresh_token
        else spec["seed_refresh"]
    )
    if emulator.is_refresh_token_valid(token):
        return ("ok_in_doubt" if record is not None and record.refresh_started_at else "ok"), record
    return ("in_doubt" if record is not None and record.refresh_started_at else "dead_token"), record


def _inject(emulator: Any, fault: str) -> None:
    kinds = {
        "vendor_http_500": ("http_500", {}),
        "vendor_http_503_retry_after": ("http_503", {"retry_after": 0}),
        "vendor_drop_before": ("drop_before", {}),
        "vendor_drop_after": ("drop_after", {}),
        "vendor_malformed_json": ("malformed_json", {}),
        "vendor_timeout": ("slow", {"delay": 3.0}),
    }
    if fault in kinds:
        kind, params = kinds[fault]
        emulator.inject(kind, **params)


def run_chaos(
    rounds: int, workdir: Path, *, seed: int = 20261123, dialect: str = "oauth2_basic"
) -> ChaosReport:
    """Run ``rounds`` rounds; return the report (violations listed, not raised)."""
    # Import everything the children use once, here: forked children inherit it instead of paying
    # for imports every round.
    import httpx  # noqa: F401 - imported lazily by the client; once here for all children

    import airflow_provider_tokenrefresh.client
    import airflow_provider_tokenrefresh.keeper
    import airflow_provider_tokenrefresh.locks.file
    import airflow_provider_tokenrefresh.stores  # noqa: F401
    from airflow_provider_tokenrefresh.client import _default_ssl_context
    from airflow_provider_tokenrefresh.testing import EMULATORS

    _default_ssl_context()

    rng = random.Random(seed)
    ctx = multiprocessing.get_context("fork")
    report = ChaosReport()
    with EMULATORS[dialect](rotation=True, reuse_detection=True) as emulator:
        spec = {
            "dialect": dialect,
            "base_url": emulator.base_url,
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            "seed_refresh": emulator.issue_tokens().refresh_token,
            "store_dir": str(workdir / "store"),
            "lock_dir": str(workdir / "locks"),
        }
        for r in range(rounds):
            fault = FAULTS[r % len(FAULTS)] if r < len(FAULTS) else rng.choice(FAULTS)
            report.rounds += 1
            report.by_fault[fault] += 1
            emulator.clear_faults()
            _inject(emulator, fault)
            spec["clock_offset"] = (2 * r) * (STALE_AFTER + 1)
            result = _run_child(ctx, spec, fault)
            emulator.clear_faults()
            after, _record = _state(spec, emulator)
            report.after_fault[after] += 1
            _check_handed_out(result, spec, report, r, fault)
            spec["clock_offset"] = (2 * r + 1) * (STALE_AFTER + 1)
            recovery = _run_child(ctx, spec, "none")
            end, _record = _state(spec, emulator)
            report.after_recovery[end] += 1
            report.by_fault_and_end[f"{fault} -> {end}"] += 1
            _check_handed_out(recovery, spec, report, r, "recovery")
            if end not in ("ok", "reauth_required"):
                report.violations.append(f"round {r} ({fault}): ended {end}")
            if end == "reauth_required":
                spec["seed_refresh"] = emulator.issue_tokens().refresh_token  # a person re-authorizes
    return report


def _check_handed_out(
    result: tuple[str, Any], spec: dict[str, Any], report: ChaosReport, r: int, what: str
) -> None:
    from airflow_provider_tokenrefresh.stores import FileTokenStore

    if result[0] == "token":
        stored, _ = FileTokenStore(spec["store_dir"]).read("chaos_conn")
        if stored is None or stored.generation < result[1]:
            report.violations.append(f"round {r} ({what}): handed out generation {result[1]} not yet stored")


def main() -> int:
    parser = argparse.ArgumentParser(description="chaos run of crash-safe rotation")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)  # the report is the output; the keeper's warnings are expected
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        report = run_chaos(args.rounds, Path(tmp))
    data = report.as_dict() | {"seconds": round(time.monotonic() - start, 1)}
    text = json.dumps(data, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
