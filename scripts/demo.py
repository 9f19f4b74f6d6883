"""`make demo`: the main job on embedded defaults, with everything on 127.0.0.1.

1. Starts the five emulated vendors and refreshes once per dialect with the core client.
2. Starts real Airflow components (SQLite, LocalExecutor; api-server, scheduler, dag-processor,
   triggerer — never `airflow standalone`), creates one connection per vendor, runs
   `example_token_consumer` (sensors defer; the triggerer refreshes; tasks call each vendor's
   protected API) and then `example_token_keeper` (forced: a second rotation from the persisted
   token), and prints per dialect what happened. Stops everything it started, by PID.

No token is ever printed.

`make up` (``--up``): the same Airflow part, then everything stays up on 127.0.0.1 — the UI with
the demo connections, DAGs and runs — until Ctrl-C; it prints the URL and the demo login.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIALECTS = ["oauth2_basic", "oauth2_post", "query_basic", "appid_json", "bearer_json"]


def table(rows: list[dict[str, object]], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def core_phase(emulators: dict[str, object]) -> bool:
    from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
    from airflow_provider_tokenrefresh.dialects import PRESETS
    from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
    from airflow_provider_tokenrefresh.errors import TokenRefreshError
    from airflow_provider_tokenrefresh.tokens import utcnow

    rows: list[dict[str, object]] = []
    for name, emu in emulators.items():
        seed = emu.issue_tokens()  # type: ignore[attr-defined]
        client = RefreshClient(
            PRESETS[name],
            ClientSettings(
                base_url=emu.base_url,  # type: ignore[attr-defined]
                credentials=ClientCredentials(emu.client_id, emu.client_secret),  # type: ignore[attr-defined]
                allow_insecure_http=True,
            ),
        )
        try:
            tokens = client.refresh(seed.refresh_token, seed.access_token)
        except TokenRefreshError as exc:
            rows.append({"dialect": name, "result": f"FAIL {exc.kind}", "rotated": "-", "expires_in": "-"})
            continue
        rotated = (
            tokens.refresh_token is not None and tokens.refresh_token.get_secret_value() != seed.refresh_token
        )
        ok = emu.is_access_token_valid(tokens.access_token.get_secret_value())  # type: ignore[attr-defined]
        rows.append(
            {
                "dialect": name,
                "result": "OK" if ok else "FAIL (vendor does not accept the token)",
                "rotated": "yes" if rotated else "no",
                "expires_in": f"{(tokens.expires_at - utcnow()).total_seconds():.0f}s",
                "refresh_expires_in": (
                    f"{(tokens.refresh_expires_at - utcnow()).total_seconds():.0f}s"
                    if tokens.refresh_expires_at
                    else "-"
                ),
            }
        )
    print("== 1. Core refresh client, one refresh per dialect ==")
    print(table(rows, ["dialect", "result", "rotated", "expires_in", "refresh_expires_in"]))
    return all(r["result"] == "OK" for r in rows)


def airflow_phase(emulators: dict[str, object], home: Path, *, up: bool = False) -> bool:
    from airflow_provider_tokenrefresh.testing.connections import emulator_connection
    from airflow_provider_tokenrefresh.testing.stack import AirflowStack

    if home.exists():
        shutil.rmtree(home)
    stack = AirflowStack(home=home, dags_folder=ROOT / "dags")
    seeds = {}
    t0 = time.monotonic()
    print("\n== 2. Real Airflow components (SQLite, LocalExecutor) ==")
    stack.migrate()
    try:
        stack.start()
        print(
            f"api-server, scheduler, dag-processor, triggerer up on {stack.base_url} "
            f"({time.monotonic() - t0:.0f}s)"
        )
        for name, emu in emulators.items():
            emu.reset_counters()  # type: ignore[attr-defined]
            seed = emu.issue_tokens()  # type: ignore[attr-defined]
            seeds[name] = seed
            stack.put_connection(
                f"vendor_{name}",
                f"tokenrefresh_{name}",
                **emulator_connection(emu, seed.refresh_token, seed.access_token),
            )
        for dag_id in ("example_token_consumer", "example_token_keeper"):
            stack.wait_for_dag(dag_id)
        consumer = stack.trigger("example_token_consumer")
        consumer_state = stack.wait_run("example_token_consumer", consumer)
        print(f"example_token_consumer: {consumer_state} ({time.monotonic() - t0:.0f}s)")
        keeper = stack.trigger("example_token_keeper", {"force": True})
        keeper_state = stack.wait_run("example_token_keeper", keeper)
        print(f"example_token_keeper:   {keeper_state} ({time.monotonic() - t0:.0f}s)")
        tis = {ti["task_id"]: ti["state"] for ti in stack.task_instances("example_token_consumer", consumer)}
        status = json.loads(stack_cli(stack, "status", "--json"))
        by_conn = {row["conn_id"]: row for row in status}
        records = read_records(stack, [f"vendor_{n}" for n in emulators])
        rows = []
        for name, emu in emulators.items():
            conn_id = f"vendor_{name}"
            counters = emu.counters  # type: ignore[attr-defined]
            record = records.get(conn_id)
            stored_ok = record is not None and emu.is_refresh_token_valid(record)  # type: ignore[attr-defined]
            rows.append(
                {
                    "dialect": name,
                    "refreshes": counters.get("ok", 0),
                    "invalid_grant": counters.get("invalid_grant", 0),
                    "generation": by_conn.get(conn_id, {}).get("generation"),
                    "stored_token_live": "yes" if stored_ok else "NO",
                    "sensor": tis.get(f"wait_{conn_id}"),
                    "api_call": tis.get(f"call_{conn_id}"),
                    "api_calls_ok": counters.get("sample:ok", 0),
                }
            )
        print(
            table(
                rows,
                [
                    "dialect",
                    "refreshes",
                    "invalid_grant",
                    "generation",
                    "stored_token_live",
                    "sensor",
                    "api_call",
                    "api_calls_ok",
                ],
            )
        )
        ok = (consumer_state == keeper_state == "success") and all(
            r["stored_token_live"] == "yes" and r["api_call"] == "success" and r["invalid_grant"] == 0
            for r in rows
        )
        if up:
            stay_up(stack, emulators)
        return ok
    finally:
        stack.stop()
        print(f"stopped every Airflow component ({time.monotonic() - t0:.0f}s total)")


def stay_up(stack: object, emulators: dict[str, object]) -> None:
    """Leave the deployment and the emulators running until Ctrl-C (or SIGTERM)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    passwords = json.loads(stack._passwords_file().read_text())  # type: ignore[attr-defined]
    print(f"\nUI: {stack.base_url}  login: admin / {passwords['admin']}  (demo deployment, 127.0.0.1 only)")  # type: ignore[attr-defined]
    print(f"AIRFLOW_HOME={stack.home}")  # type: ignore[attr-defined]
    print("connections: " + ", ".join(f"vendor_{name}" for name in emulators))
    print("UP: Ctrl-C stops every component and emulator", flush=True)
    stop.wait()


def stack_cli(stack: object, *args: str) -> str:
    import subprocess

    exe = str(Path(sys.executable).with_name("airflow-tokenrefresh"))
    result = subprocess.run([exe, *args], env=stack.env(), capture_output=True, text=True, check=False)  # type: ignore[attr-defined]
    # status exits 1 for a warning (a refresh token expiring within its horizon): still an answer.
    if result.returncode not in (0, 1) or (result.returncode == 1 and args[:1] != ("status",)):
        raise RuntimeError(f"airflow-tokenrefresh {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result.stdout


def read_records(stack: object, conn_ids: list[str]) -> dict[str, str]:
    """The stored refresh tokens, read in a child process (never printed; compared with the vendor's)."""
    import subprocess

    code = (
        "import json,sys\n"
        "from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore\n"
        "s=VariableTokenStore(); out={}\n"
        "for c in sys.argv[1:]:\n"
        "    r,_=s.read('tokenrefresh_token__'+c)\n"
        "    out[c]=r.refresh_token.get_secret_value() if r and r.refresh_token else None\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *conn_ids],
        env=stack.env(),  # type: ignore[attr-defined]
        capture_output=True,
        text=True,
        check=True,
    )
    records: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core-only", action="store_true", help="skip the Airflow part")
    parser.add_argument(
        "--up", action="store_true", help="skip the core part; leave Airflow and the emulators up until Ctrl-C"
    )
    parser.add_argument("--home", default=str(ROOT / ".demo" / "airflow"), help="AIRFLOW_HOME for the demo")
    args = parser.parse_args()
    os.environ.pop("AIRFLOW_HOME", None)
    from airflow_provider_tokenrefresh.testing import serve

    started = serve(DIALECTS)
    emulators = dict(zip(DIALECTS, started, strict=True))
    try:
        ok = True if args.up else core_phase(emulators)
        if not args.core_only:
            ok = airflow_phase(emulators, Path(args.home), up=args.up) and ok
    finally:
        for emu in started:
            emu.stop()
    print("\nDEMO OK" if ok else "\nDEMO FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
