"""The fan-out inside a real Airflow task (``benchmarks/fanout_task.py``).

One task, two phases against fresh token families of the same emulated vendor (50 ms latency):

* ours: 1,000 ``TokenKeeper`` s on the default Variable store (every read and write through the
  Task SDK and the execution API; or ``store: sealed_variable``) and the file lock,
  ``fanout.refresh_all(force=True, max_workers=64)``;
* peer: what users write today, one connection after another: ``httpx.post`` the refresh, then
  ``Variable.set`` the answer as JSON.

The seeds come in a private file (never in ``conf``); the task returns numbers only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task


@task
def fan_out(job_path: str) -> dict[str, Any]:
    import json
    import tempfile
    import time
    from collections import Counter

    import httpx
    from airflow.sdk import Variable
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    from airflow_provider_tokenrefresh.fanout import refresh_all
    from airflow_provider_tokenrefresh.hooks.tokenrefresh import _mask
    from airflow_provider_tokenrefresh.keeper import RefreshOutcome
    from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
    from airflow_provider_tokenrefresh.stores.sealed_variable import SealedVariableTokenStore
    from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore
    from airflow_provider_tokenrefresh.testing.peer import peer_refresh
    from benchmarks.common import basic_keepers

    with open(job_path) as fh:
        job = json.load(fh)
    prefix = job.get("key_prefix", "tokenrefresh_token__")
    store: VariableTokenStore = VariableTokenStore()
    if job.get("store") == "sealed_variable":  # as store_for() builds it for each connection
        store = SealedVariableTokenStore(
            sealed_keys={f"{prefix}fan_{i:04d}": f"trf_record__fan_{i:04d}" for i in range(len(job["ours"]))}
        )
    with tempfile.TemporaryDirectory(prefix="fanout-locks-") as lock_dir:  # removed after ours
        keepers = basic_keepers(
            job,
            job["ours"],
            store,
            FileRefreshLock(lock_dir),
            lambda i: f"fan_{i:04d}",
            lambda conn_id: f"{prefix}{conn_id}",
            on_secret=_mask,  # as TokenRefreshOperator's hooks do: every token goes to Airflow's masker
        )
        started = time.perf_counter()
        outcomes = refresh_all(keepers, force=True, max_workers=job["max_workers"])
        ours_s = time.perf_counter() - started
        masker = _secrets_masker()
        masker_after_ours = (len(masker.patterns), sum(len(p) for p in masker.patterns))
        ours_ok = sum(1 for o in outcomes.values() if isinstance(o, RefreshOutcome) and o.refreshed)
        ours_errors = Counter(
            type(o).__name__ for o in outcomes.values() if not isinstance(o, RefreshOutcome)
        )
        for keeper in keepers.values():
            keeper.client.close()

    started = time.perf_counter()
    peer_ok = 0
    with httpx.Client(trust_env=False, timeout=30) as http:
        for i, seed in enumerate(job["peer"]):
            token = peer_refresh(
                http, job["token_url"], seed["refresh_token"], job["client_id"], job["client_secret"]
            )
            Variable.set(f"peer_token__fan_{i:04d}", json.dumps(token))
            peer_ok += 1
    peer_s = time.perf_counter() - started
    return {
        "ours_s": round(ours_s, 2),
        "ours_refreshed": ours_ok,
        "ours_errors": dict(ours_errors),
        "peer_s": round(peer_s, 2),
        "peer_refreshed": peer_ok,
        # Airflow's masker in this task process after ours: patterns, their characters. It compiles
        # one regex of all of them each time it learns a value (so does the supervisor's).
        "masker_patterns_after_ours": masker_after_ours[0],
        "masker_chars_after_ours": masker_after_ours[1],
    }


with DAG(dag_id="fanout_task", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    fan_out("{{ dag_run.conf['job'] }}")
