"""The Test button on a connection in use spends nothing (Airflow 3.3 tests under a transient conn_id)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_tokenrefresh.testing.connections import emulator_connection

from .conftest import Deployment

pytestmark = pytest.mark.airflow


def _presented(emu, token: str) -> int:  # type: ignore[no-untyped-def]
    """How many refresh requests the vendor received that carried ``token``."""
    return sum(1 for r in emu.requests if token in (r.body.decode(errors="replace") + r.query))


def test_test_button_on_a_connection_in_use_presents_no_stored_or_spent_token(deployment: Deployment) -> None:
    emu = deployment.emulators["oauth2_post"]
    conn_id = "ui_in_use_post"
    seed = emu.issue_tokens()
    fields = emulator_connection(emu, seed.refresh_token, seed.access_token)
    deployment.stack.put_connection(conn_id, "tokenrefresh_oauth2_post", **fields)
    exe = str(Path(sys.executable).with_name("airflow-tokenrefresh"))
    first = subprocess.run(
        [exe, "refresh", conn_id], env=deployment.stack.env(), capture_output=True, text=True, check=False
    )
    assert first.returncode == 0, first.stderr[-2000:]
    generation = json.loads(first.stdout)["generation"]
    stored_before = deployment.stored_refresh_token_of(conn_id)
    assert stored_before is not None and stored_before != seed.refresh_token
    revoked_before = emu.families_revoked
    seed_sent, stored_sent = _presented(emu, seed.refresh_token), _presented(emu, stored_before)

    extra = fields["extra"] if isinstance(fields["extra"], str) else json.dumps(fields["extra"])
    body = {"connection_id": conn_id, "conn_type": "tokenrefresh_oauth2_post", **fields, "extra": extra}
    with deployment.stack.api() as api:
        answers = [api.post("/api/v2/connections/test", json=body).json() for _ in range(2)]  # two clicks

    # At the vendor: neither the spent seed nor the live stored token was presented again, no family died.
    assert _presented(emu, seed.refresh_token) == seed_sent
    assert _presented(emu, stored_before) == stored_sent
    assert emu.families_revoked == revoked_before
    # In the store: the record is untouched and its refresh token still works.
    assert deployment.stored_refresh_token_of(conn_id) == stored_before
    assert emu.is_refresh_token_valid(stored_before)
    for answer in answers:
        assert answer["status"] is True, answer
        assert f"generation {generation}" in answer["message"]
        assert (
            "in use" in answer["message"] and "No stored or spent refresh token was sent" in answer["message"]
        )
        assert "Probe" in answer["message"]
        for canary in deployment.canaries() | {stored_before}:
            assert canary not in answer["message"]
