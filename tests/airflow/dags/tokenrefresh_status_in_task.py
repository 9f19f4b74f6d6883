"""``airflow-tokenrefresh status`` inside a task: in the task's own process (named connections are
read through the execution API) and from a process the task starts (no database, no execution API)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task


@task
def status_in_task() -> dict[str, object]:
    """Run the status command three ways; return exit codes and non-secret output."""
    import contextlib
    import io
    import json
    import subprocess
    import sys
    from pathlib import Path

    from airflow.sdk import get_current_context

    from airflow_provider_tokenrefresh.cli import main

    conn_ids: list[str] = list(get_current_context()["dag_run"].conf["conn_ids"])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        named = main(["status", "--json", *conn_ids])
    rows = json.loads(out.getvalue())
    everything_err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(everything_err):
        everything = main(["status"])
    exe = str(Path(sys.executable).with_name("airflow-tokenrefresh"))
    child = subprocess.run(
        [exe, "status", conn_ids[0]], capture_output=True, text=True, check=False, timeout=120
    )
    return {
        "named": {
            "code": named,
            "rows": [{k: r.get(k) for k in ("conn_id", "state", "check")} for r in rows],
        },
        "named_stderr": err.getvalue()[-2000:],
        "everything": {"code": everything, "stderr": everything_err.getvalue()[-2000:]},
        "child": {"code": child.returncode, "stdout": child.stdout[-2000:], "stderr": child.stderr[-2000:]},
    }


with DAG(dag_id="tokenrefresh_status_in_task", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    status_in_task()
