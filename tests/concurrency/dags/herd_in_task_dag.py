"""The herd in real task processes: mapped task instances that need one token at the same moment.

Used by ``tests/concurrency/test_herd_in_task.py`` through
:func:`airflow_provider_tokenrefresh.testing.herd.run_task_herd`. ``plan`` reads the run's conf;
``member`` (mapped, one per herd member) runs ``rounds`` rounds. In each round it builds a fresh
hook on the connection (default settings: ``lock: auto``, ``store: variable``), announces itself
(``ready-<round>-<index>``), polls until the test process writes ``go-<round>`` (bounded by
``GO_TIMEOUT``), asks the hook for a token — every store read the keeper makes goes through the
execution API and is timed — calls the vendor's protected API with exactly that token and writes
``result-<round>-<index>.json`` (timestamps are ``time.time()``, the clock the emulator stamps its
requests with). No token is written anywhere: only a SHA-256 prefix of it. A member whose token
was refused or who got none fails its task instance after the last round.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

#: Seconds a member waits for the test's ``go`` file before it gives up on the round.
GO_TIMEOUT = 300.0


def _conf(context: dict[str, Any]) -> dict[str, Any]:
    return dict((context["dag_run"].conf or {}) if context.get("dag_run") else {})


def _write(path: Path, payload: dict[str, Any]) -> None:
    """Atomically (temp file + rename): the test process never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)


def _wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _one_round(conf: dict[str, Any], index: int, round_no: int, out: Path) -> dict[str, Any]:
    import httpx

    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
    from airflow_provider_tokenrefresh.stores.variable import in_execution_context

    row: dict[str, Any] = {"index": index, "round": round_no, "pid": os.getpid(), "error": None}
    with TokenRefreshHook(conf["conn_id"]) as hook:
        keeper = hook.keeper  # reads the connection (execution API) before the round starts
        store = keeper.store
        reads: list[dict[str, Any]] = []
        original_read = store.read

        def timed_read(key: str) -> Any:
            started = time.time()
            record, version = original_read(key)
            reads.append(
                {
                    "t0": started,
                    "t1": time.time(),
                    "generation": None if record is None else record.generation,
                    "intent": None if record is None else record.intent_id is not None,
                    "expires_at": None if record is None else _ts(record.expires_at),
                }
            )
            return record, version

        store.read = timed_read  # type: ignore[method-assign]
        row.update(
            store=store.name,
            lock=keeper.lock.name,
            execution_context=in_execution_context(),
            min_ttl=hook.min_ttl,
        )
        _write(out / f"ready-{round_no}-{index}", {"t": time.time()})
        if not _wait_for(out / f"go-{round_no}", GO_TIMEOUT):
            row["error"] = f"no go-{round_no} within {GO_TIMEOUT:.0f}s"
            return row
        row["t_go_seen"] = time.time()
        try:
            row["t_ask"] = time.time()
            record = hook.get_record()
            row["t_got"] = time.time()
        except Exception as exc:  # the test counts it; the task fails after the last round
            row["t_got"] = time.time()
            row["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
            row["reads"] = reads
            return row
        assert record.access_token is not None
        token = record.access_token.get_secret_value()
        row.update(
            reads=reads,
            generation=record.generation,
            fingerprint=hashlib.sha256(token.encode()).hexdigest()[:16],
            access_ttl=record.access_ttl(),
            access_lifetime=record.access_lifetime(),
            expires_at=_ts(record.expires_at),
        )
        response = httpx.get(conf["sample_url"], headers={"Authorization": f"Bearer {token}"}, timeout=30)
        row["status"] = response.status_code
        row["t_api"] = time.time()
    return row


@task
def plan(**context: Any) -> list[int]:
    return list(range(int(_conf(context)["tasks"])))


@task(execution_timeout=timedelta(minutes=15))
def member(index: int, **context: Any) -> dict[str, Any]:
    conf = _conf(context)
    out = Path(conf["out"])
    failures = []
    for round_no in range(int(conf["rounds"])):
        row = _one_round(conf, index, round_no, out)
        _write(out / f"result-{round_no}-{index}.json", row)
        if row["error"] or row.get("status") != 200:
            failures.append(f"round {round_no}: {row['error'] or 'HTTP ' + str(row.get('status'))}")
    if failures:
        raise RuntimeError(f"herd member {index}: " + "; ".join(failures))
    return {"index": index, "rounds": int(conf["rounds"])}


with DAG(
    dag_id="herd_in_task",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},
    tags=["test"],
):
    member.expand(index=plan())
