"""The chaos rounds: stage a fault, run the processes, recover, and judge the end state at the vendor.

A round picks a (store, lock) pair and a fault class (:mod:`.catalogue`), runs the faulted
process(es) as the class's flow says, then one recovery process without faults (as the next
scheduled run would), and judges:

* every process reported, within its deadline, an outcome its class allows (a crash, a hang or a
  missing report is a violation; ``killed`` only where the round killed it);
* every process that was handed an access token used it at the vendor's protected API and was
  accepted, and the vendor's first-use log shows that use *after* the store acknowledged the
  write of the record holding that token (acknowledgement times come from the writer);
* the record after recovery: ``valid`` with no intent left, whose refresh token the vendor would
  accept now (its family state, read without spending the token) and whose access token the
  vendor honours; or ``reauth_required`` with a reason, whose refresh token the vendor really
  rejects. Its state must be the one the class expects for that store;
* a lease lost before the call sent nothing to the vendor; a torn write left its torn state
  (shown per store: a partial or unrenamed temp file, a staged but unpromoted AWS version, a
  KV v2 version written by a process killed before the acknowledgement, a Variable upsert seen
  in its writer's open transaction and rolled back by the kill, or committed but never read back).

A round that ends in re-authorization re-seeds the pair (a person re-authorizes).
"""

from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalogue import COMBOS, FAULTS, GRACE_WINDOW, SETTLE, FaultClass, torn_variant
from .child import child_main
from .servers import Servers, chaos_servers, wait_for

#: The keepers' stale bound B in the chaos run (the slowest vendor fault answers in 0.8 s).
STALE_AFTER = 5.0
#: How long a process may take before it counts as hung.
DEADLINE = 45.0


@dataclass
class ChaosReport:
    rounds: int = 0
    cells: collections.Counter[str] = field(default_factory=collections.Counter)
    ends: collections.Counter[str] = field(default_factory=collections.Counter)
    evidence: collections.Counter[str] = field(default_factory=collections.Counter)
    checks: collections.Counter[str] = field(default_factory=collections.Counter)
    fault_seconds: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Rounds asked for; ``rounds < requested`` in a report written part-way or after a stop.
    requested: int = 0
    #: Why the run stopped before ``requested`` rounds (a signal), else None.
    stopped: str | None = None

    @property
    def by_fault(self) -> collections.Counter[str]:
        out: collections.Counter[str] = collections.Counter()
        for cell, n in self.cells.items():
            out[cell.split(" x ")[0]] += n
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "requested": self.requested,
            "complete": self.rounds >= self.requested and self.stopped is None,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 1),
            "rounds_per_second": round(self.rounds / self.seconds, 2) if self.seconds else None,
            "violations": self.violations,
            "by_fault_and_store": dict(sorted(self.cells.items())),
            "end_states": dict(sorted(self.ends.items())),
            "torn_state_evidence": dict(sorted(self.evidence.items())),
            "checks": dict(sorted(self.checks.items())),
            "seconds_by_fault": {k: round(v, 1) for k, v in sorted(self.fault_seconds.items())},
        }


class Round:
    """One round's processes and what they reported."""

    def __init__(self, run: Run, n: int, fault: FaultClass, store: str, lock: str) -> None:
        self.run, self.n, self.fault, self.store, self.lock = run, n, fault, store, lock
        self.key = f"chaos_{store}_{lock}"
        self.results: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []

    def cfg(self, role: str, **more: Any) -> dict[str, Any]:
        run = self.run
        run.step += 1
        cfg = {
            "spec": run.specs[(self.store, self.lock)],
            "key": self.key,
            "seed": run.seeds[(self.store, self.lock)],
            "client_timeout": 5.0,
            "stale_after": STALE_AFTER,
            "settle": SETTLE,
            "clock_offset": run.step * (STALE_AFTER + 1),
            "sample_url": run.emulator.sample_url,
            "result": str(run.workdir / f"r{self.n}-{role}.json"),
            "torn_variant": torn_variant(self.store, self.n),
        }
        cfg.update(more)
        return cfg

    def start(self, role: str, cfg: dict[str, Any], dead: Any = None) -> tuple[Any, Any]:
        ctx = self.run.ctx
        parent, child = ctx.Pipe()
        dead = dead if dead is not None else ctx.Event()
        proc = ctx.Process(target=child_main, args=(cfg, child, dead), daemon=True)
        proc.start()
        child.close()
        proc._chaos_cfg = cfg  # type: ignore[attr-defined]
        proc._chaos_role = role  # type: ignore[attr-defined]
        return proc, parent

    def expect(self, conn: Any, what: str) -> Any:
        """The child's next event, which must be ``what`` (bounded by the deadline)."""
        while True:
            if not conn.poll(DEADLINE):
                raise TimeoutError(f"no {what!r} event within {DEADLINE:g}s")
            event, detail = conn.recv()
            if event == what:
                return detail

    def finish(self, proc: Any, killed_by_us: bool = False) -> None:
        role = proc._chaos_role
        proc.join(DEADLINE)
        if proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
            self.problems.append(f"{role} hung (killed after {DEADLINE:g}s)")
            return
        path = Path(proc._chaos_cfg["result"])
        if proc.exitcode == -signal.SIGKILL:
            self.results[role] = {"outcome": "killed", "self": not killed_by_us}
            if self.lock == "redis":
                # A killed holder's Redis lease blocks everyone until it runs out (its ttl): let it
                # run out now, as the clock jump stands in for the stale bound.
                self.run.servers.expire_redis_lease(self.key)
            return
        if not path.exists():
            self.problems.append(f"{role} left no result (exit code {proc.exitcode})")
            return
        self.results[role] = json.loads(path.read_text())
        path.unlink()


class Run:
    def __init__(
        self, emulator: Any, servers: Servers, workdir: Path, seed: int, stores: set[str] | None = None
    ) -> None:
        self.emulator, self.servers, self.workdir = emulator, servers, workdir
        self.ctx = multiprocessing.get_context("fork")
        self.rng = random.Random(seed)
        self.step = 0
        self.specs: dict[tuple[str, str], dict[str, Any]] = {}
        self.seeds: dict[tuple[str, str], str] = {}
        self.report = ChaosReport()
        self._stores: dict[tuple[str, str], Any] = {}
        unknown = set(stores or ()) - {s for s, _ in COMBOS}
        if unknown:
            raise ValueError(f"unknown stores: {sorted(unknown)}")
        #: The pairs this run plays (``stores`` restricts them; by default every pair).
        self.combos = [(s, lk) for s, lk in COMBOS if stores is None or s in stores]
        base = {"dialect": "oauth2_basic", "base_url": emulator.base_url, "client_id": emulator.client_id,
                "client_secret": emulator.client_secret}  # fmt: skip
        for store, lock in self.combos:
            self.specs[(store, lock)] = {
                **base,
                **servers.backend(store, lock, str(workdir / f"{store}-{lock}")),
            }
            self.seeds[(store, lock)] = emulator.issue_tokens().refresh_token

    def schedule(self, rounds: int) -> list[tuple[FaultClass, str, str]]:
        pairs = [(f, s, lk) for f in FAULTS.values() for s, lk in self.combos if f.applies(lk)]
        out = [pairs[i] for i in range(min(rounds, len(pairs)))]
        out += [self.rng.choice(pairs) for _ in range(rounds - len(out))]
        return out

    def store_of(self, store: str, lock: str) -> Any:
        """The runner's own instance of the pair's store (what a fresh reader sees)."""
        from airflow_provider_tokenrefresh.testing.backends import build_store

        if (store, lock) not in self._stores:
            if store == "variable":
                # Through a child of its own: this process's Airflow is not configured for the run's DB.
                assert self.servers.variable is not None
                self._stores[(store, lock)] = self.servers.variable.new_store()
            else:
                self._stores[(store, lock)] = build_store(self.specs[(store, lock)])
        return self._stores[(store, lock)]


def stage(rnd: Round) -> None:
    """Run the round's faulted process(es) as the class's flow says."""
    fault, emu, servers = rnd.fault, rnd.run.emulator, rnd.run.servers
    emu.clear_faults()
    if fault.vendor_fault is not None:
        kind, params = fault.vendor_fault
        emu.inject(kind, **params)
    extra: dict[str, Any] = {"kill_at": fault.kill_at, "store_fault": fault.store_fault}
    if fault.client_timeout is not None:
        extra["client_timeout"] = fault.client_timeout
    if fault.grace is not None:  # this round's vendor has a reuse window, and the keeper knows it
        emu.reuse_grace, emu.grace_mode = GRACE_WINDOW, fault.grace
        extra["reuse_grace"] = GRACE_WINDOW
    if fault.flow == "plain":
        proc, _ = rnd.start("holder", rnd.cfg("holder", **extra))
        rnd.finish(proc)
    elif fault.flow == "signal":
        emu.inject("slow", delay=0.3)  # the answer is held at the vendor while the signal lands
        before = emu.refresh_requests
        proc, conn = rnd.start("holder", rnd.cfg("holder", **extra))
        rnd.expect(conn, "started")
        wait_for(lambda: emu.refresh_requests > before, "the refresh request reached the vendor", DEADLINE)
        os.kill(proc.pid, getattr(signal, fault.signal_name or "SIGTERM"))
        rnd.finish(proc)
    elif fault.flow == "pause":
        proc, conn = rnd.start("holder", rnd.cfg("holder", pause_at=fault.pause_at, **extra))
        rnd.expect(conn, "paused")
        before = emu.refresh_requests
        if fault.action == "lose_lease":
            servers.lose_lease(rnd.lock, rnd.key)
        else:
            servers.restart(rnd.lock)
        conn.send("go")
        rnd.finish(proc)
        if fault.pause_at == "intent_written" and emu.refresh_requests != before:
            rnd.problems.append("a holder whose lease was lost before the call called the vendor")
        else:
            rnd.run.report.checks["no call after a lost lease" if fault.pause_at == "intent_written"
                                   else "lease lost mid-call, answer stored"] += 1  # fmt: skip
    elif fault.flow == "waiter":
        proc, conn = rnd.start("holder", rnd.cfg("holder", pause_at=fault.pause_at))
        rnd.expect(conn, "paused")
        dead = rnd.run.ctx.Event()
        cfg = rnd.cfg("waiter", tell_intent=True)
        cfg["clock_offset"] = rnd.run.step * (STALE_AFTER + 1) - (STALE_AFTER + 1)  # the holder's "now"
        waiter, wconn = rnd.start("waiter", cfg, dead)
        rnd.expect(wconn, "saw_intent")  # the waiter met the holder's young intent
        os.kill(proc.pid, signal.SIGKILL)
        rnd.finish(proc, killed_by_us=True)  # its Redis lease is made to run out there
        dead.set()
        rnd.finish(waiter)
    else:
        raise ValueError(fault.flow)


def play(run: Run, n: int, fault: FaultClass, store: str, lock: str) -> str:
    from . import judge

    rnd = Round(run, n, fault, store, lock)
    began = time.monotonic()
    try:
        try:
            stage(rnd)
        finally:
            run.emulator.reuse_grace = 0.0  # strict again: the recovery run and later rounds
        judge.torn_evidence(rnd)
        run.emulator.clear_faults()
        proc, _ = rnd.start("recovery", rnd.cfg("recovery"))
        rnd.finish(proc)
        judge.check_outcomes(rnd)
        judge.check_first_use(rnd)
        end = judge.end_state(rnd)
        judge.recovery_consistent(rnd, end)
    except Exception as exc:  # the staging itself failed (a child never reached its checkpoint...)
        rnd.problems.append(f"staging failed: {type(exc).__name__}: {exc}")
        end = "staging_failed"
    expected = fault.expected_end(store, n)
    if end not in expected:
        rnd.problems.append(f"ended {end}, expected {sorted(expected)}")
    cell = f"{fault.name} x {store}"
    run.report.fault_seconds[f"{fault.name} x {store}+{lock}"] += time.monotonic() - began
    run.report.cells[cell] += 1
    run.report.ends[f"{cell} -> {end}"] += 1
    for problem in rnd.problems:
        run.report.violations.append(f"round {n} ({fault.name}, {store}+{lock}): {problem}")
    if end != "valid":
        run.seeds[(store, lock)] = run.emulator.issue_tokens().refresh_token  # a person re-authorizes
    return end


def warm_up() -> None:
    """Import and warm everything the children use once, here: forked children inherit it."""
    import airflow.models
    import boto3
    import httpx  # noqa: F401
    import hvac  # noqa: F401
    import psycopg  # noqa: F401
    import psycopg2  # noqa: F401
    import redis  # noqa: F401
    import sqlalchemy.dialects.postgresql.psycopg2  # noqa: F401
    from airflow.sdk.exceptions import AirflowTaskTerminated  # noqa: F401
    from airflow.sdk.execution_time.timeout import TimeoutPosix  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    import airflow_provider_tokenrefresh.keeper
    import airflow_provider_tokenrefresh.locks.file
    import airflow_provider_tokenrefresh.locks.postgres
    import airflow_provider_tokenrefresh.locks.redis
    import airflow_provider_tokenrefresh.stores.aws
    import airflow_provider_tokenrefresh.stores.variable
    import airflow_provider_tokenrefresh.stores.vault  # noqa: F401
    from airflow_provider_tokenrefresh.transport import default_ssl_context

    default_ssl_context()
    # The Variable store's core path: Airflow's models mapped once (3 s on a child's first query
    # otherwise), and the PostgreSQL driver loaded; no database is touched here.
    airflow.models.import_all_models()
    configure_mappers()
    # botocore loads its service model once per session: the default session's, inherited.
    boto3.client("secretsmanager", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def run_chaos(
    rounds: int,
    workdir: Path,
    *,
    seed: int = 20261123,
    only: set[str] | None = None,
    stores: set[str] | None = None,
    progress: Any = None,
) -> ChaosReport:
    """Run ``rounds`` rounds against real servers and an emulated vendor; violations listed, not raised.

    :param only: play only these fault classes.
    :param stores: play only the pairs of these stores (the Variable store's metadata database is
        migrated only when it plays).
    """
    from airflow_provider_tokenrefresh.testing import EMULATORS

    warm_up()
    started = time.monotonic()
    report = ChaosReport(requested=rounds)
    variable = stores is None or "variable" in stores
    with (
        chaos_servers(workdir=workdir, variable=variable) as servers,
        EMULATORS["oauth2_basic"](rotation=True, reuse_detection=True) as emu,
    ):
        run = Run(emu, servers, workdir, seed, stores)
        run.report = report
        schedule = run.schedule(rounds) if only is None else [
            p for p in run.schedule(rounds * 50) if p[0].name in only
        ][:rounds]  # fmt: skip
        try:
            for n, (fault, store, lock) in enumerate(schedule):
                play(run, n, fault, store, lock)
                report.rounds += 1  # counted once judged: a round cut short by a stop is not
                if progress is not None and report.rounds % 250 == 0:
                    report.seconds = time.monotonic() - started
                    progress(report, report.seconds)
        except ChaosStopped as stop:
            # The servers and the emulator are stopped by the ``with`` on the way out; the caller
            # writes what was judged so far.
            report.stopped = str(stop)
    report.seconds = time.monotonic() - started
    return report


class ChaosStopped(BaseException):
    """Raised in the runner by SIGTERM/SIGINT (see ``__main__``): stop after cleaning up."""
