"""The 1,000-connection fan-out inside a real Airflow task, beside the peer pattern users write.

A throwaway deployment (``AirflowStack``: LocalExecutor, SQLite, 127.0.0.1) runs
``benchmarks/dags/fanout_task_dag.py``: in one task, ours (``fanout.refresh_all`` over 1,000
keepers on the default Variable store, i.e. the execution API) and then the peer (a loop of
``httpx.post`` + ``Variable.set`` per connection), each on fresh token families of one emulated
vendor with 50 ms latency. Reported: both wall times and the vendor's count of accepted refreshes.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ratio, task_stack, vendor, write_private_json

DAG_ID = "fanout_task"
DAG_FILE = Path(__file__).resolve().parent / "dags" / "fanout_task_dag.py"
CONNECTIONS = 1000
LATENCY = 0.05
MAX_WORKERS = 64


#: Our records' Variable keys: the default's, which carries a sensitive word (so the supervisor
#: hands every value it reads to Airflow's masker). ``tr_record__`` shows the cost of that.
KEY_PREFIX = "tokenrefresh_token__"


def run(
    connections: int = CONNECTIONS,
    latency: float = LATENCY,
    key_prefix: str = KEY_PREFIX,
    store: str = "variable",
) -> dict[str, Any]:
    """Start the deployment, run the task once, stop everything; both sides' figures."""

    import os
    from datetime import UTC, datetime

    load_at_start = os.getloadavg()[0]
    started = time.monotonic()
    tmp, stack = task_stack("bench-fanout-task-", DAG_FILE)
    try:
        with vendor(rotation=True, reuse_detection=True, latency=latency) as emulator:

            def seeds() -> list[dict[str, str]]:
                issued = [emulator.issue_tokens() for _ in range(connections)]
                return [{"refresh_token": s.refresh_token, "access_token": s.access_token} for s in issued]

            job = {
                "base_url": emulator.base_url,
                "token_url": emulator.token_url,
                "client_id": emulator.client_id,
                "client_secret": emulator.client_secret,
                "max_workers": MAX_WORKERS,
                "key_prefix": key_prefix,
                "store": store,
                "ours": seeds(),
                "peer": seeds(),
            }
            write_private_json(tmp / "job.json", job)
            stack.migrate()
            stack.start()
            stack.wait_for_dag(DAG_ID)
            run_id = stack.trigger(DAG_ID, {"job": str(tmp / "job.json")})
            state = stack.wait_run(DAG_ID, run_id, timeout=1800)
            if state != "success":
                raise RuntimeError(stack.explain(DAG_ID, run_id))
            figures: dict[str, Any] = stack.xcom(DAG_ID, run_id, "fan_out")
            figures["vendor_ok"] = emulator.counters.get("ok", 0)
            figures["vendor_invalid_grant"] = emulator.counters.get("invalid_grant", 0)
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "config": {
            "deployment": f"AirflowStack (LocalExecutor, SQLite, 127.0.0.1); store {store}, file lock",
            "connections": connections,
            "latency_s": latency,
            "max_workers": MAX_WORKERS,
            "key_prefix": key_prefix,
            "store": store,
            "ours": f"fanout.refresh_all(force=True) over TokenKeeper x N on the {store} store, in one task",
            "peer": "for each connection: httpx.post(refresh) then Variable.set(JSON), in the same task",
        },
        "results": figures,
        "ratios": {"wall_s": ratio(figures["ours_s"], figures["peer_s"])},
        "seconds": round(time.monotonic() - started, 1),
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average_at_start": round(load_at_start, 2),
    }


if __name__ == "__main__":
    import json
    import signal
    import sys

    # SIGTERM (a Ctrl-C'd make, a timeout) runs the finally above: every component stopped by PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # python -m benchmarks.fanout_task [CONNECTIONS [KEY_PREFIX]] [--store sealed_variable]
    args = [a for a in sys.argv[1:] if not a.startswith("--store")]
    chosen = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--store=")), "variable")
    result = run(
        int(args[0]) if args else CONNECTIONS,
        key_prefix=args[1] if len(args) > 1 else KEY_PREFIX,
        store=chosen,
    )
    print(json.dumps(result, indent=2))
