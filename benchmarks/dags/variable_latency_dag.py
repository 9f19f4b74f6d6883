"""Variable write-ack and read-to-visible latency from tasks, through the execution API.

Used by ``benchmarks/variable_latency.py``. Two ``plan_*`` tasks read the run's conf; then ``writer``
(mapped, one per writer) and ``reader`` (mapped, one per reader) run side by side:

* writer ``i``, iteration ``n``: the key is its own ``varlat_w{i}``, or every ``shared_every``-th
  iteration the shared ``varlat_shared``. It reads the key (``t_pre``, what the keeper does before
  a claim), then ``t0`` → ``Variable.set(key, value)`` → ``t1`` (acknowledged) → reads back (cache
  invalidated first) → ``t2``. On its own key a read-back that differs is retried until the value
  shows up or ``RETRY_FOR`` seconds pass (then: a silent failure); on the shared key another
  writer may legitimately have written in between, so the one read-back is classified afterwards
  by the benchmark from every writer's timings.
* reader: reads the shared key and every writer's key round-robin and records each observation.

Every timestamp is ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on the
machine), so the benchmark can compare a reader's observation with a writer's write. Raw rows go
to JSON-lines files under ``$VARLAT_OUT`` (too big for XCom); each task returns a small summary.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

SHARED_KEY = "varlat_shared"
#: Seconds a writer keeps re-reading its own key before it calls the write lost.
RETRY_FOR = 5.0
#: Seconds every task waits at the start barrier for the others to start.
BARRIER_S = 180.0
#: Seconds a reader keeps going if the writers never say they finished.
READER_LIMIT_S = 3 * 3600.0
DEFAULTS = {"writers": 4, "iterations": 2500, "readers": 2, "shared_every": 4, "label": "run"}


def _out(conf: dict[str, Any]) -> Path:
    path = Path(os.environ["VARLAT_OUT"]) / str(conf["label"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def _conf(context: dict[str, Any]) -> dict[str, Any]:
    conf = dict(DEFAULTS)
    conf.update((context["dag_run"].conf or {}) if context.get("dag_run") else {})
    return conf


def _barrier(out: Path, name: str, expected: int) -> float:
    """Announce this task and wait (bounded) until ``expected`` tasks did; return seconds waited."""
    (out / f"started-{name}").write_text(str(time.monotonic()))
    start = time.monotonic()
    while len(list(out.glob("started-*"))) < expected and time.monotonic() - start < BARRIER_S:
        time.sleep(0.05)
    return time.monotonic() - start


def _read(key: str) -> tuple[str | None, str | None]:
    """(value, error) of one read through the execution API, never from the secrets cache."""
    from airflow.sdk import Variable

    try:
        from airflow.sdk.execution_time.cache import SecretCache

        SecretCache.invalidate_variable(key)
    except ImportError:
        pass
    try:
        value = Variable.get(key, default=None)
    except Exception as exc:  # counted, the loop goes on
        return None, f"{type(exc).__name__}: {str(exc)[:200]}"
    return (None if value is None else str(value)), None


@task
def plan_writers(**context: Any) -> list[int]:
    return list(range(int(_conf(context)["writers"])))


@task
def plan_readers(**context: Any) -> list[int]:
    return list(range(int(_conf(context)["readers"])))


@task(execution_timeout=timedelta(hours=3))
def writer(index: int, **context: Any) -> dict[str, Any]:
    from airflow.sdk import Variable

    conf = _conf(context)
    out = _out(conf)
    expected = int(conf["writers"]) + int(conf["readers"])
    waited = _barrier(out, f"w{index}", expected)
    own = f"varlat_w{index}"
    shared_every = int(conf["shared_every"])
    counts = {"writes": 0, "lost": 0, "late": 0, "set_errors": 0, "get_errors": 0}
    started = time.monotonic()
    with open(out / f"writer-{index}.jsonl", "w") as fh:
        for n in range(int(conf["iterations"])):
            shared = shared_every > 0 and n % shared_every == shared_every - 1
            key = SHARED_KEY if shared else own
            value = f"w{index}-{n}-{secrets.token_hex(4)}"
            t_pre = time.monotonic()
            pre, pre_error = _read(key)
            t_pre_end = time.monotonic()
            t0 = time.monotonic()
            set_error = None
            try:
                Variable.set(key, value)
            except Exception as exc:  # counted, the loop goes on
                set_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                counts["set_errors"] += 1
            t1 = time.monotonic()
            attempts = 0
            get_errors = []
            while True:
                attempts += 1
                t_read = time.monotonic()
                back, get_error = _read(key)
                t2 = time.monotonic()
                if get_error:
                    get_errors.append(get_error)
                    counts["get_errors"] += 1
                if back == value or shared or t2 - t1 > RETRY_FOR:
                    break
                time.sleep(0.01)
            if not shared:
                if back != value:
                    counts["lost"] += 1
                elif attempts > 1:
                    counts["late"] += 1
            counts["writes"] += 1
            row = {
                "w": index,
                "n": n,
                "key": key,
                "value": value,
                "t_pre": t_pre,
                "t_pre_end": t_pre_end,
                "pre": pre,
                "t0": t0,
                "t1": t1,
                "t_read": t_read,
                "t2": t2,
                "back": back,
                "attempts": attempts,
                "set_error": set_error or pre_error,
                "get_errors": get_errors[:3],
            }
            fh.write(json.dumps(row) + "\n")
    elapsed = time.monotonic() - started
    (out / f"done-w{index}").write_text(str(time.monotonic()))
    return {**counts, "elapsed_s": elapsed, "barrier_wait_s": waited}


@task(execution_timeout=timedelta(hours=3))
def reader(index: int, **context: Any) -> dict[str, Any]:
    conf = _conf(context)
    out = _out(conf)
    writers = int(conf["writers"])
    expected = writers + int(conf["readers"])
    waited = _barrier(out, f"r{index}", expected)
    keys = [SHARED_KEY] + [f"varlat_w{i}" for i in range(writers)]
    reads = errors = 0
    started = time.monotonic()
    with open(out / f"reader-{index}.jsonl", "w") as fh:
        i = index  # readers start on different keys
        while time.monotonic() - started < READER_LIMIT_S:
            if i % 50 == 0 and len(list(out.glob("done-w*"))) >= writers:
                break
            key = keys[i % len(keys)]
            i += 1
            ts = time.monotonic()
            value, error = _read(key)
            te = time.monotonic()
            reads += 1
            errors += bool(error)
            fh.write(json.dumps({"r": index, "key": key, "ts": ts, "te": te, "v": value, "e": error}) + "\n")
    return {
        "reads": reads,
        "errors": errors,
        "elapsed_s": time.monotonic() - started,
        "barrier_wait_s": waited,
    }


with DAG(
    dag_id="variable_latency",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},
    tags=["benchmark"],
):
    writer.expand(index=plan_writers())
    reader.expand(index=plan_readers())
