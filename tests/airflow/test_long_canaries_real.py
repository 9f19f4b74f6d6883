"""Long secrets on real Airflow components: no 12-character piece of any of them anywhere.

Refresh tokens of 454 and 2,000 characters, access tokens of 2,000 and client secrets of 454 to
2,000, all with ``+ / =``, held by connections of a vendor that echoes a refused refresh token in
its error ("Invalid refresh token: <token>", oauth2-client-secret-basic.txt). One run of the
``long_canaries`` DAG takes every path a task has: the hook (success and rejection, raised and
caught), the operator, two deferrable sensors refreshing in the real triggerer (one accepted, one
refused there), and the ``airflow-tokenrefresh status`` CLI run from a task. Then every place the
deployment wrote to is read: each file under ``$AIRFLOW_HOME/logs``, the task logs, XComs, rendered
fields and trigger kwargs through the REST API, the event log, the Variables API, every table of
the metadata database, the stored records' ``reason`` and ``last_error``, ``status`` and ``refresh``
run by the test, and the four components' stdout/stderr. Every piece of every encoded form
(``redaction.encoded_forms`` plus Base64 at the three byte alignments and the Basic header) of
every canary is looked for in each.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_tokenrefresh.testing import OAuth2BasicEmulator
from airflow_provider_tokenrefresh.testing.connections import emulator_connection
from airflow_provider_tokenrefresh.testing.stack import COMPONENTS
from airflow_provider_tokenrefresh.testing.vendors import LONG_TOKEN_ALPHABET

from .leakscan import Canaries, Leak

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .conftest import Deployment

pytestmark = pytest.mark.airflow

DAG_ID = "long_canaries"
CONN_IDS = [
    "long_ok",
    "long_bad_raise",
    "long_bad_caught",
    "long_bad_op",
    "long_sensor_ok",
    "long_sensor_bad",
]
EXPECTED_STATES = {
    "wait_long_sensor_ok": "success",
    "wait_long_sensor_bad": "failed",  # refused in the triggerer: the event fails the task
    "use_token": "success",
    "keep_fresh": "success",  # fail_on_error=False: the refused connection is in its XCom
    "reject_raise": "failed",
    "reject_caught": "success",
    "status_cli": "success",
}
LONG_TOKENS = {"rt": 454, "at": 2000}
ECHO = "Invalid refresh token: ***"  # the vendor's words, quoted with the token hidden


def canary(length: int) -> str:
    """A secret of exactly ``length`` characters with ``+``, ``/`` and ``=`` in it."""
    body = "".join(secrets.choice(LONG_TOKEN_ALPHABET) for _ in range(length - 8))
    return "cn+/=" + body[:1] + "/+" + body[1:]


@dataclass
class LongRun:
    """One run of the DAG and everything it left behind."""

    deployment: Deployment
    run_id: str
    emulators: dict[str, OAuth2BasicEmulator]
    canaries: Canaries
    fake_refresh_tokens: dict[str, str]
    states: dict[str, str]
    records: dict[str, Any]
    triggers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _cli(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("airflow-tokenrefresh"))
    return subprocess.run(
        [exe, *args], env=deployment.stack.env(), capture_output=True, text=True, check=False, timeout=360
    )


def _records(deployment: Deployment) -> dict[str, Any]:
    """Each connection's stored record: its non-secret status plus ``reason`` and ``last_error``
    (read in a child process; the tokens never leave it except as a length and a validity check)."""
    code = (
        "import json,sys\n"
        "from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore\n"
        "out={}\n"
        "for conn_id in sys.argv[1:]:\n"
        "    r,_=VariableTokenStore().read('tokenrefresh_token__'+conn_id)\n"
        "    out[conn_id]=None if r is None else {'status': r.status(), 'reason': r.reason,"
        " 'last_error': r.last_error, 'rt_len': len(r.refresh_token.get_secret_value()) if r.refresh_token else 0,"
        " 'rt': r.refresh_token.get_secret_value() if r.refresh_token else None,"
        " 'at': r.access_token.get_secret_value() if r.access_token else None}\n"
        "print(json.dumps(out, default=str))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *CONN_IDS],
        env=deployment.stack.env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=360,
    )
    records: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return records


def _triggers_in_db(home: Path, fernet_key: str) -> list[dict[str, Any]]:
    """The trigger table's rows, kwargs as text (decrypted when Airflow stored them encrypted)."""
    from cryptography.fernet import Fernet, InvalidToken

    db = sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT id, classpath, kwargs FROM trigger").fetchall()
    finally:
        db.close()
    fernet = Fernet(fernet_key.encode())
    found = []
    for row_id, classpath, kwargs in rows:
        text = kwargs.decode() if isinstance(kwargs, bytes) else str(kwargs)
        with contextlib.suppress(InvalidToken):  # else stored as plain JSON
            text = fernet.decrypt(text.encode()).decode()
        found.append({"id": row_id, "classpath": classpath, "kwargs": text})
    return found


def _wait_watching_triggers(
    deployment: Deployment, run_id: str, timeout: float
) -> dict[str, list[dict[str, Any]]]:
    """Wait for the run to finish; meanwhile keep each deferred sensor's trigger (REST) and the
    trigger table's rows (decrypted kwargs) as seen."""
    stack = deployment.stack
    seen: dict[str, list[dict[str, Any]]] = {"__table__": []}
    deadline = time.monotonic() + timeout
    with stack.api() as api:
        while time.monotonic() < deadline:
            run = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()
            tis = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
            for ti in tis:
                if ti.get("trigger"):
                    seen.setdefault(ti["task_id"], []).append(ti["trigger"])
            seen["__table__"] += _triggers_in_db(stack.home, stack.env()["AIRFLOW__CORE__FERNET_KEY"])
            if run["state"] in ("success", "failed"):
                return seen
            time.sleep(0.5)
    raise AssertionError(f"run {run_id} not finished within {timeout}s:\n{stack.explain(DAG_ID, run_id)}")


def _rest_texts(deployment: Deployment, run_id: str) -> dict[str, str]:
    """Task logs, XComs, rendered fields, task instances, event log and Variables, via REST."""
    texts: dict[str, str] = {}
    base = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
    with deployment.stack.api() as api:
        tis = api.get(base).json()["task_instances"]
        texts["rest: task instances (rendered fields)"] = json.dumps(tis)
        for ti in tis:
            task_id = ti["task_id"]
            one = api.get(f"{base}/{task_id}").json()
            texts[f"rest: task instance {task_id}"] = json.dumps(one)
            for try_number in range(1, max(1, ti["try_number"]) + 1):
                for accept in ("application/json", "application/x-ndjson"):
                    response = api.get(
                        f"{base}/{task_id}/logs/{try_number}",
                        params={"full_content": True},
                        headers={"Accept": accept},
                    )
                    assert response.status_code == 200, (task_id, try_number, response.status_code)
                    texts[f"rest: log {task_id} try {try_number} ({accept})"] = response.text
            for deserialize in ("true", "false"):
                response = api.get(
                    f"{base}/{task_id}/xcomEntries/return_value", params={"deserialize": deserialize}
                )
                if response.status_code == 200:
                    texts[f"rest: xcom {task_id} (deserialize={deserialize})"] = response.text
        texts["rest: xcom list"] = api.get(
            f"{base}/~/xcomEntries", params={"deserialize": True, "limit": 1000}
        ).text
        texts["rest: event log"] = api.get("/api/v2/eventLogs", params={"limit": 1000}).text
        for conn_id in CONN_IDS:
            texts[f"rest: variable of {conn_id}"] = api.get(
                f"/api/v2/variables/tokenrefresh_token__{conn_id}"
            ).text
            texts[f"rest: connection {conn_id}"] = api.get(f"/api/v2/connections/{conn_id}").text
        texts["rest: variables"] = api.get("/api/v2/variables", params={"limit": 1000}).text
    return texts


def _database_text(home: Path) -> str:
    """Every row of every table of the metadata database, as text (read-only)."""
    db = sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True, timeout=30)
    try:
        parts = []
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                parts.append(
                    table
                    + ": "
                    + " | ".join(
                        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row
                    )
                )
        return "\n".join(parts)
    finally:
        db.close()


@pytest.fixture(scope="module")
def long_run(deployment: Deployment) -> Iterator[LongRun]:
    t0 = time.monotonic()
    stack = deployment.stack
    secret_lengths = {"main": 2000, "sensor_ok": 454, "sensor_bad": 1000}
    emulators = {
        name: OAuth2BasicEmulator(
            client_id=f"long-client-{name}",
            client_secret=canary(length),
            token_lengths=LONG_TOKENS,
        ).start()
        for name, length in secret_lengths.items()
    }
    try:
        fakes = {
            "long_bad_raise": canary(454),
            "long_bad_caught": canary(2000),
            "long_bad_op": canary(454),
            "long_sensor_bad": canary(2000),
        }
        fake_access = {conn_id: canary(2000) for conn_id in fakes}
        on = {
            "long_ok": "main",
            "long_bad_raise": "main",
            "long_bad_caught": "main",
            "long_bad_op": "main",
            "long_sensor_ok": "sensor_ok",
            "long_sensor_bad": "sensor_bad",
        }
        with stack.api() as api:
            for conn_id in CONN_IDS:
                response = api.delete(f"/api/v2/variables/tokenrefresh_token__{conn_id}")
                assert response.status_code in (204, 404), response.status_code
        seeds = {}
        for conn_id, name in on.items():
            emu = emulators[name]
            if conn_id in fakes:
                refresh_token, access_token = fakes[conn_id], fake_access[conn_id]
            else:
                seed = emu.issue_tokens()
                seeds[conn_id] = seed
                refresh_token, access_token = seed.refresh_token, seed.access_token
            stack.put_connection(
                conn_id, "tokenrefresh_oauth2_basic", **emulator_connection(emu, refresh_token, access_token)
            )
        # Each sensor's first check, in the worker, meets a 503: both defer, and the refresh (and
        # the refusal of the made-up token) happens in the triggerer.
        emulators["sensor_ok"].inject("http_503")
        emulators["sensor_bad"].inject("http_503")
        stack.wait_for_dag(DAG_ID)
        run_started = time.monotonic()
        run_id = stack.trigger(DAG_ID, {"metadata_db": stack.env()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]})
        triggers = _wait_watching_triggers(deployment, run_id, timeout=480)
        states = {ti["task_id"]: ti["state"] for ti in stack.task_instances(DAG_ID, run_id)}
        run_seconds = time.monotonic() - run_started

        # The CLI from outside any task: status (table, JSON) and a forced refresh of a refused one.
        cli = {
            "status table": _cli(deployment, "status", *CONN_IDS),
            "status --json": _cli(deployment, "status", "--json", *CONN_IDS),
            "refresh --force long_bad_op": _cli(deployment, "refresh", "long_bad_op", "--force"),
        }
        records = _records(deployment)

        found = Canaries()
        for name, emu in emulators.items():
            found.add(
                f"client secret of {name} ({len(emu.client_secret)} chars)", emu.client_secret, emu.client_id
            )
            for answer in emu.answers:
                try:
                    body = json.loads(answer.body)
                except ValueError:
                    continue
                for key in ("access_token", "refresh_token"):
                    if isinstance(body.get(key), str):
                        found.add(f"{key} issued by {name} ({len(body[key])} chars)", body[key])
            for family in emu.families():
                snap = emu.current_tokens(family)
                found.add(f"access token of {family} ({len(snap.access_token)} chars)", snap.access_token)
                found.add(f"refresh token of {family} ({len(snap.refresh_token)} chars)", snap.refresh_token)
        for conn_id, seed in seeds.items():
            found.add(f"seed refresh token of {conn_id}", seed.refresh_token)
            found.add(f"seed access token of {conn_id}", seed.access_token)
        for conn_id, token in fakes.items():
            found.add(f"refused refresh token of {conn_id} ({len(token)} chars)", token)
            found.add(f"access token of {conn_id} ({len(fake_access[conn_id])} chars)", fake_access[conn_id])

        texts: dict[str, str] = {}
        for path in sorted((stack.home / "logs").rglob("*")):
            if path.is_file():
                texts[f"log file {path.relative_to(stack.home)}"] = path.read_text(errors="replace")
        for name in COMPONENTS:
            texts[f"component output: {name}"] = stack.output(name)
        for name, result in cli.items():
            texts[f"cli {name}: stdout"] = result.stdout
            texts[f"cli {name}: stderr"] = result.stderr
        texts["stored records (status, reason, last_error)"] = json.dumps(
            {cid: r and {k: r[k] for k in ("status", "reason", "last_error")} for cid, r in records.items()},
            default=str,
        )
        texts["rest: triggers seen while deferred"] = json.dumps(triggers)
        texts.update(_rest_texts(deployment, run_id))
        texts["metadata database (every table)"] = _database_text(stack.home)
        result = LongRun(
            deployment=deployment,
            run_id=run_id,
            emulators=emulators,
            canaries=found,
            fake_refresh_tokens=fakes,
            states=states,
            records=records,
            triggers=triggers,
            texts=texts,
            seconds=time.monotonic() - t0,
        )
        print(
            f"\nlong_canaries: run {run_seconds:.1f}s, fixture {result.seconds:.1f}s, {len(found)} canaries, "
            f"{found.forms_indexed} forms, {found.piece_count} pieces, {len(texts)} locations, "
            f"{sum(len(t) for t in texts.values()) / 1e6:.1f} MB"
        )
        yield result
    finally:
        for emu in emulators.values():
            emu.stop()


def test_the_run_took_every_path_with_long_tokens(long_run: LongRun) -> None:
    stack = long_run.deployment.stack
    assert long_run.states == EXPECTED_STATES, stack.explain(DAG_ID, long_run.run_id)
    main, sensor_ok, sensor_bad = (long_run.emulators[n] for n in ("main", "sensor_ok", "sensor_bad"))
    # The vendor really echoed each made-up token whole in its answer (there was something to hide).
    echoed = [answer.body.decode() for answer in main.answers + sensor_bad.answers if answer.status == 400]
    for conn_id, token in long_run.fake_refresh_tokens.items():
        assert any(json.dumps(f"Invalid refresh token: {token}")[1:-1] in body for body in echoed), conn_id
    counters = main.counters
    assert counters.get("ok", 0) >= 2, counters  # use_token's refresh, keep_fresh's forced one
    assert counters.get("invalid_grant", 0) >= 4, counters  # raise, caught, operator, the CLI
    assert counters.get("sample:ok") == 1, counters  # use_token's call with the 2,000-char token
    assert sensor_ok.counters.get("fault:http_503") == 1, sensor_ok.counters
    assert sensor_ok.counters.get("ok") == 1, sensor_ok.counters  # refreshed in the triggerer
    assert sensor_bad.counters.get("fault:http_503") == 1, sensor_bad.counters
    assert sensor_bad.counters.get("invalid_grant", 0) >= 1, sensor_bad.counters  # refused there
    in_table = {json.loads(row["kwargs"])["conn_id"] for row in long_run.triggers["__table__"]}
    for task_id in ("wait_long_sensor_ok", "wait_long_sensor_bad"):
        assert long_run.triggers.get(task_id), f"{task_id} never seen deferred (REST)"
        assert task_id.removeprefix("wait_") in in_table  # the trigger row's kwargs
    records = long_run.records
    ok = records["long_ok"]
    assert ok["rt_len"] == LONG_TOKENS["rt"] and ok["status"]["generation"] >= 2
    assert main.is_refresh_token_valid(ok["rt"]) and main.is_access_token_valid(ok["at"])
    assert records["long_sensor_ok"]["status"]["generation"] == 1
    assert sensor_ok.is_refresh_token_valid(records["long_sensor_ok"]["rt"])
    for conn_id in long_run.fake_refresh_tokens:
        assert records[conn_id]["status"]["state"] == "reauth_required", conn_id
        assert ECHO in records[conn_id]["reason"], conn_id


def test_the_vendors_words_reach_each_place_with_the_token_hidden(long_run: LongRun) -> None:
    """Positive controls: the places scanned really hold the rejection messages (masked)."""
    texts = long_run.texts
    logs = {k: v for k, v in texts.items() if k.startswith("log file ") and f"dag_id={DAG_ID}" in k}
    run_logs = {k: v for k, v in logs.items() if f"run_id={long_run.run_id}" in k}
    for task_id in ("reject_raise", "reject_caught", "keep_fresh", "wait_long_sensor_bad", "status_cli"):
        text = "\n".join(v for k, v in run_logs.items() if f"task_id={task_id}/" in k)
        assert ECHO in text, f"{task_id}: the echoed error is not in its log"
    raised = "\n".join(v for k, v in run_logs.items() if "task_id=reject_raise/" in k)
    assert (
        '"exc_type":"RefreshTokenRejected"' in raised and '"name":"reject_raise"' in raised
    )  # the traceback
    assert ECHO in texts["rest: xcom reject_caught (deserialize=true)"]
    assert ECHO in texts["rest: xcom keep_fresh (deserialize=true)"]
    assert ECHO in texts["rest: xcom status_cli (deserialize=true)"]
    assert any(ECHO in v for k, v in texts.items() if k.startswith("rest: log reject_caught"))
    assert ECHO in texts["cli status --json: stdout"]
    assert ECHO in texts["cli refresh --force long_bad_op: stderr"]
    assert ECHO in texts["metadata database (every table)"]  # the sensor's event (next_kwargs), XComs
    assert '"conn_ids"' in texts["rest: task instance keep_fresh"]  # rendered fields are there
    assert "Token refreshed for long_sensor_ok" in "\n".join(
        v for k, v in run_logs.items() if "task_id=wait_long_sensor_ok/" in k and ".trigger." in k
    )


def test_no_piece_of_any_long_canary_anywhere(long_run: LongRun) -> None:
    texts = long_run.texts
    canaries = long_run.canaries
    # 3 client secrets, 4 refused refresh tokens and their 4 access tokens, and every token issued.
    assert len(canaries) >= 3 + 8 + 2 * 4, sorted(canaries.labels.values())
    assert len(texts) >= 40
    t0 = time.monotonic()
    leaks: list[Leak] = canaries.scan_all(texts)
    print(
        f"\nscanned {len(texts)} locations ({sum(len(t) for t in texts.values()) / 1e6:.1f} MB) for "
        f"{canaries.piece_count} pieces of {canaries.forms_indexed} forms of {len(canaries)} canaries "
        f"in {time.monotonic() - t0:.1f}s"
    )
    assert not leaks, "\n".join(str(leak) for leak in leaks[:40])
