"""``store: sealed_variable`` on real Airflow components: a record kept by the default store moves
when the connection switches, inside the triggerer; afterwards no token is in any log, XCom,
rendered template or REST answer, and the vendor's chain is intact."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from airflow_provider_tokenrefresh.testing.connections import emulator_connection
from airflow_provider_tokenrefresh.testing.stack import COMPONENTS

from .conftest import Deployment

pytestmark = pytest.mark.airflow

CONN = "vendor_sealed"
DAG_ID = "sealed_store"
# The DAG's careless print, up to the token (Airflow 3.3.2's LocalExecutor echoes task output to
# the scheduler's stdout without masking: there the printed token is cut out).
_CARELESS = re.compile(r"(careless print of the sealed token: )\S+")


def _run(deployment: Deployment) -> str:
    stack = deployment.stack
    run_id = stack.trigger(DAG_ID, {"conn_id": CONN})
    state = stack.wait_run(DAG_ID, run_id, timeout=300)
    assert state == "success", stack.explain(DAG_ID, run_id)
    return run_id


def _put(deployment: Deployment, emu: Any, seed: Any, **extra: Any) -> None:
    deployment.stack.put_connection(
        CONN,
        "tokenrefresh_oauth2_basic",
        **emulator_connection(emu, seed.refresh_token, seed.access_token, **extra),
    )


#: The emulator's access-token lifetime: the margin is half of it (``lease.effective_margin``), so a
#: token from run 1 needs a refresh once ACCESS_TTL / 2 seconds have passed.
ACCESS_TTL = 40.0


def _stored_ttl(deployment: Deployment) -> float:
    """Seconds the stored access token has left (read in a child; only the number comes back)."""
    import subprocess
    import sys

    code = (
        "from airflow_provider_tokenrefresh.stores.sealed_variable import SealedVariableTokenStore\n"
        "from airflow_provider_tokenrefresh.tokens import utcnow\n"
        f"s=SealedVariableTokenStore(sealed_keys={{'tokenrefresh_token__{CONN}': 'trf_record__{CONN}'}})\n"
        f"r,_=s.read('tokenrefresh_token__{CONN}')\n"
        "print(r.access_ttl(utcnow()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=deployment.stack.env(), capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def test_switching_to_sealed_variable_moves_the_record_and_the_triggerer_refreshes_from_it(
    deployment: Deployment,
) -> None:
    import time

    from airflow_provider_tokenrefresh.testing import serve

    stack = deployment.stack
    (emu,) = serve(["oauth2_basic"], client_secret="CANARY-sealed-client-secret-7e21", access_ttl=ACCESS_TTL)
    deployment.emulators["sealed"] = emu  # its tokens join the canaries
    try:
        seed = emu.issue_tokens()
        deployment.seeds["sealed"] = seed
        with stack.api() as api:
            for key in (f"tokenrefresh_token__{CONN}", f"trf_record__{CONN}"):
                assert api.delete(f"/api/v2/variables/{key}").status_code in (204, 404)
        stack.wait_for_dag(DAG_ID)

        # Run 1 on the default store: the record is under the old name.
        _put(deployment, emu, seed)
        first = _run(deployment)
        old_rt = deployment.stored_refresh_token_of(CONN)
        assert old_rt is not None and emu.is_refresh_token_valid(old_rt)
        ok_after_first = emu.counters.get("ok", 0)
        assert ok_after_first >= 1, emu.counters

        # The switch. Run 2 starts once run 1's token needs a refresh (past half its life); the
        # worker's first check meets a 503 (its claim has moved the record by then), so the sensor
        # defers and the triggerer refreshes from the moved record.
        _put(deployment, emu, seed, store="sealed_variable")
        deadline = time.monotonic() + 2 * ACCESS_TTL
        while _stored_ttl(deployment) >= ACCESS_TTL / 2:
            assert time.monotonic() < deadline, "the stored token never came within its margin"
            time.sleep(1)  # a clock condition (the token's age), not a synchronization
        emu.inject("http_503")
        second = _run(deployment)
    finally:
        emu.stop()
    counters = dict(emu.counters)
    assert counters.get("fault:http_503") == 1, counters
    assert counters.get("ok", 0) > ok_after_first and counters.get("invalid_grant", 0) == 0, counters
    assert emu.families_revoked == 0
    trigger_log = "\n".join(
        p.read_text(errors="replace")
        for p in (stack.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={second}").rglob("*.log.trigger.*.log")
    )
    assert re.search(rf"Token refreshed for {CONN}: generation \d+", trigger_log), (
        "no refresh in the triggerer"
    )

    with stack.api() as api:
        sealed_var = api.get(f"/api/v2/variables/trf_record__{CONN}").json()
        old_var = api.get(f"/api/v2/variables/tokenrefresh_token__{CONN}").json()
        rendered = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{second}/taskInstances/show").json()[
            "rendered_fields"
        ]
        answers = json.dumps([sealed_var, old_var, rendered])
        for run_id in (first, second):
            for task_id in ("wait", "take_token", "show"):
                answers += json.dumps(
                    api.get(
                        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries"
                    ).json()
                )
    assert json.loads(sealed_var["value"])["sealed_by"] == "airflow-provider-tokenrefresh"
    assert "sealed_by" in json.dumps(rendered), rendered  # the template rendered the ciphertext envelope
    # var.json parsed the envelope (a dict, rendered as its repr): only the ciphertext and the marker.
    assert "'sealed_by': 'airflow-provider-tokenrefresh'" in json.dumps(rendered), rendered

    # The chain: the sealed record's refresh token is the vendor's live one.
    sealed_rt = _sealed_refresh_token(deployment)
    assert sealed_rt is not None and sealed_rt != old_rt and emu.is_refresh_token_valid(sealed_rt)
    assert deployment.xcom(DAG_ID, second, "take_token") > 0
    assert "careless print of the sealed token: ***" in stack.run_logs(DAG_ID, second)

    everything = answers + "\n".join(
        p.read_text(errors="replace") for p in sorted((stack.home / "logs").rglob("*")) if p.is_file()
    )
    for name in COMPONENTS:
        output = stack.output(name)
        everything += _CARELESS.sub(r"\1<printed>", output) if name == "scheduler" else output
    canaries = deployment.canaries()
    assert seed.refresh_token in canaries and sealed_rt in canaries
    leaked = sum(1 for c in canaries if c in everything)
    assert leaked == 0, f"{leaked} canary value(s) found in logs, XCom, rendered fields or REST answers"


def _sealed_refresh_token(deployment: Deployment) -> str | None:
    """The sealed record's refresh token, read in a child with the deployment's settings (never printed)."""
    import subprocess
    import sys

    code = (
        "from airflow.models.variable import Variable\n"
        "from airflow_provider_tokenrefresh.stores.seal import classify_old\n"
        "from airflow_provider_tokenrefresh.stores.sealed_variable import SealedVariableTokenStore\n"
        f"s=SealedVariableTokenStore(sealed_keys={{'tokenrefresh_token__{CONN}': 'trf_record__{CONN}'}})\n"
        f"r,_=s.read('tokenrefresh_token__{CONN}')\n"
        f"print(classify_old(Variable.get('tokenrefresh_token__{CONN}', default_var=None)).kind)\n"
        "print(r.refresh_token.get_secret_value() if r and r.refresh_token else '')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=deployment.stack.env(), capture_output=True, text=True, check=True
    )
    old_kind, refresh_token = out.stdout.strip().splitlines()[-2:]
    assert old_kind == "moved", (
        f"the old Variable is {old_kind!r}, not a tombstone pointing at the sealed one"
    )
    return refresh_token or None
