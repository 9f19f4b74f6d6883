"""Judging a chaos round: outcomes, first use after commit, the torn state, the end state at the vendor."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .child import digest

if TYPE_CHECKING:
    from .runner import Round


def allowed(outcome: str, allowed_set: frozenset[str]) -> bool:
    if outcome in allowed_set:
        return True
    return outcome.startswith("error:") and "error:*" in allowed_set


def check_outcomes(rnd: Round) -> None:
    """Each process ended as its class allows (a crash, a hang, no report: violations)."""
    fault = rnd.fault
    want = {"holder": fault.holder, "waiter": fault.waiter}
    for role, allowed_set in want.items():
        if role == "waiter" and fault.flow != "waiter":
            continue
        result = rnd.results.get(role)
        if result is None:
            continue  # already a problem (hung / no result)
        outcome = result["outcome"]
        if outcome == "killed" and result.get("self") and not (fault.kill_at or fault.store_fault == "torn"):
            rnd.problems.append(f"{role} died of SIGKILL nobody sent")
        elif not allowed(outcome, allowed_set):
            rnd.problems.append(f"{role} ended {outcome!r}, expected one of {sorted(allowed_set)}")


def check_first_use(rnd: Round) -> None:
    """Every token handed out was used at the vendor, accepted, and first used after its commit."""
    emu = rnd.run.emulator
    acks: dict[str, float] = {}
    for result in rnd.results.values():
        for access, at in result.get("acks", []):
            acks.setdefault(access, at)
    for role, result in rnd.results.items():
        if result.get("outcome") != "token":
            continue
        access = result["access"]
        if result.get("sample_status") != 200:
            rnd.problems.append(
                f"{role}'s access token was refused by the vendor ({result.get('sample_status')})"
            )
        use = emu.first_use_by_digest(access)
        if use is None:
            rnd.problems.append(f"{role} was handed a token the vendor never saw used")
            continue
        committed = acks.get(access)
        if committed is None:
            rnd.problems.append(f"{role} was handed a token no write of which was acknowledged")
        elif not committed < use.at:
            rnd.problems.append(
                f"{role}'s token was used {committed - use.at:.6f}s before its record was durable"
            )
        else:
            rnd.run.report.checks["token used after its commit"] += 1


def torn_evidence(rnd: Round) -> None:
    """The torn write really left a torn state (checked right after the kill, before recovery)."""
    if rnd.fault.store_fault != "torn":
        return
    store = rnd.run.store_of(rnd.store, rnd.lock)
    record, _ = store.read(rnd.key)
    label = None
    if rnd.store == "file":
        directory = Path(store.directory)
        temps = sorted(directory.glob("*.json.tmp"))  # the store's one temporary name per record
        if record is not None and record.intent_id and len(temps) == 1:
            payload = temps[0].read_bytes()
            whole = _parses(payload)
            variant = "partial" if rnd.n % 2 else "before_rename"
            if (variant == "partial") == (not whole):
                label = (
                    f"file: {'half-written temp file' if not whole else 'complete temp file, never renamed'}"
                )
        for temp in temps:
            os.unlink(temp)  # the next write would truncate and reuse it; the next round starts clean
    elif rnd.store == "aws":
        client = store.client
        name = store.secret_name(rnd.key)
        versions = client.list_secret_version_ids(SecretId=name)["Versions"]
        staged = [v for v in versions if v.get("VersionStages") == ["AWSPENDING"]]
        if record is not None and record.intent_id and staged:
            label = "aws: new version staged AWSPENDING, never promoted"
    elif rnd.store == "variable":
        label = _variable_torn(rnd, record)
    elif (
        rnd.store == "vault"
        and record is not None
        and record.intent_id is None
        and not record.refresh_started_at
    ):
        label = "vault: KV v2 write applied, writer killed before the acknowledgement"
    if label is None:
        rnd.problems.append("the torn write left no torn state")
    else:
        rnd.run.report.evidence[label] += 1


def _variable_torn(rnd: Round, record: Any) -> str | None:
    """What the killed writer saw (``<result>.torn``, written just before its SIGKILL) against what
    a fresh reader sees now."""
    from .catalogue import torn_variant

    path = Path(f"{rnd.run.workdir / f'r{rnd.n}-holder.json'}.torn")
    seen = json.loads(path.read_text()) if path.exists() else {}
    path.unlink(missing_ok=True)
    if torn_variant("variable", rnd.n) == "uncommitted":
        # The new value was in the table inside the writer's transaction; the kill rolled it back.
        if seen.get("uncommitted_upsert_in_table") and record is not None and record.intent_id:
            return "variable: upsert in the writer's open transaction, killed before COMMIT (rolled back)"
        return None
    committed = seen.get("committed_before_kill") and record is not None
    if committed and record.intent_id is None and not record.refresh_started_at:
        return "variable: Variable.set committed, writer killed before its read-back"
    return None


def _parses(payload: bytes) -> bool:
    from airflow_provider_tokenrefresh.tokens import TokenRecord

    try:
        TokenRecord.from_storage_json(payload)
    except ValueError:
        return False
    return True


def end_state(rnd: Round) -> str:
    """The record after recovery, judged at the vendor."""
    from airflow_provider_tokenrefresh.tokens import fingerprint

    emu = rnd.run.emulator
    record, _ = rnd.run.store_of(rnd.store, rnd.lock).read(rnd.key)
    if record is None:
        return "no_record"
    if record.seed_fingerprint != fingerprint(rnd.run.seeds[(rnd.store, rnd.lock)]):
        return "record_of_an_old_seed"
    refresh = record.refresh_token.get_secret_value() if record.refresh_token else ""
    if record.state == "valid":
        if record.intent_id is not None:
            return "valid_with_intent_left"
        if not emu.is_refresh_token_valid(refresh):
            return "valid_but_vendor_rejects_refresh_token"
        access = record.access_token.get_secret_value() if record.access_token else ""
        if not emu.is_access_token_valid(access):
            return "valid_but_vendor_rejects_access_token"
        rnd.run.report.checks["valid: vendor accepts its refresh token"] += 1
        return "valid"
    if record.state == "reauth_required":
        if not record.reason:
            return "reauth_without_reason"
        if emu.is_refresh_token_valid(refresh):
            return "reauth_but_vendor_accepts_refresh_token"
        rnd.run.report.checks["reauth_required: vendor rejects its refresh token"] += 1
        return "reauth_required"
    return f"state_{record.state}"


def recovery_consistent(rnd: Round, end: str) -> None:
    result = rnd.results.get("recovery")
    if result is None:
        return
    want = "token" if end == "valid" else "error:reauth_required"
    if end in ("valid", "reauth_required") and result["outcome"] != want:
        rnd.problems.append(f"recovery ended {result['outcome']!r} on a {end} record")


def token_digest(token: str) -> str:
    return digest(token)
