"""What the person on call sees when a token can never become valid, or the store is shadowed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_tokenrefresh.tokens import TokenRecord

from .conftest import Deployment

pytestmark = pytest.mark.airflow


def _cli(
    deployment: Deployment, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("airflow-tokenrefresh"))
    return subprocess.run(
        [exe, *args],
        env={**deployment.stack.env(), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_sensor_fails_fast_with_the_fix_when_reauthorization_is_needed(deployment: Deployment) -> None:
    stack = deployment.stack
    emu = deployment.emulators["oauth2_post"]
    seed = emu.issue_tokens()
    emu.revoke_family(emu.family_of(seed.refresh_token) or "", "user removed the app")
    from airflow_provider_tokenrefresh.testing.connections import emulator_connection

    stack.put_connection(
        "revoked_conn", "tokenrefresh_oauth2_post", **emulator_connection(emu, seed.refresh_token, None)
    )
    run_id = stack.trigger("sensor_on_revoked_token", {"conn_id": "revoked_conn"})
    state = stack.wait_run("sensor_on_revoked_token", run_id, timeout=300)
    assert state == "failed", stack.explain("sensor_on_revoked_token", run_id)
    (ti,) = stack.task_instances("sensor_on_revoked_token", run_id)
    assert ti["state"] == "failed"
    assert ti["try_number"] == 1  # AirflowFailException: no retries burned on something only a person can fix
    log = stack.run_logs("sensor_on_revoked_token", run_id)
    assert "revoked_conn" in log
    assert "re-authorize" in log
    assert seed.refresh_token not in log
    status = json.loads(_cli(deployment, "status", "--json", "revoked_conn").stdout)[0]
    assert status["state"] == "reauth_required"
    assert "invalid_grant" in status["reason"]


def test_environment_variable_shadowing_the_record_is_refused(deployment: Deployment) -> None:
    conn_id = deployment.conn_id("oauth2_basic")
    deployment.seed_connection("oauth2_basic")
    result = _cli(
        deployment,
        "refresh",
        conn_id,
        "--force",
        env={f"AIRFLOW_VAR_TOKENREFRESH_TOKEN__{conn_id.upper()}": "{}"},
    )
    assert result.returncode == 2
    assert "shadowed by environment variable" in result.stderr
    assert f"AIRFLOW_VAR_TOKENREFRESH_TOKEN__{conn_id.upper()}" in result.stderr
    unknown = _cli(deployment, "refresh", "no_such_conn")
    assert unknown.returncode == 2
    assert "no_such_conn" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_secrets_backend_shadowing_the_record_is_detected_after_the_write(
    deployment: Deployment, tmp_path: Path
) -> None:
    emu = deployment.emulators["appid_json"]
    seed = emu.issue_tokens()
    from airflow_provider_tokenrefresh.testing.connections import emulator_connection

    deployment.stack.put_connection(
        "shadowed_conn", "tokenrefresh_appid_json", **emulator_connection(emu, seed.refresh_token, None)
    )
    stale = TokenRecord.seeded(seed.refresh_token).to_storage_json()  # an old copy in a secrets backend
    variables = tmp_path / "variables.json"
    variables.write_text(json.dumps({"tokenrefresh_token__shadowed_conn": stale}))
    result = _cli(
        deployment,
        "refresh",
        "shadowed_conn",
        env={
            "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"variables_file_path": str(variables)}),
        },
    )
    assert result.returncode == 2, result.stdout
    assert "secrets backend shadows it" in result.stderr
    # Caught on the refresh intent, before the vendor was called: the seed is not burned.
    assert "the vendor was not called" in result.stderr
    assert emu.is_refresh_token_valid(seed.refresh_token)
    for secret in (seed.refresh_token, emu.client_secret):
        assert secret not in result.stderr + result.stdout
