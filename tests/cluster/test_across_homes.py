"""Bugs of a multi-container deployment, judged at the vendor.

Two hosts (two AIRFLOW_HOMEs, like two containers) share one metadata database and one Fernet key
but not the default file lock. A refresh token must still be presented once per rotation, and a
host with an outdated view of the connection must never undo what the other host stored.

No token ever appears in an assertion: every check on a token is computed first, and only counts,
booleans and family labels reach the assert (pytest prints the operands of a failing assert).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.conftest import (
    emulator_secrets,
    leaks,
    presented,
    scrubber,
    vendor_connection,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.cluster.conftest import CliRun, Cluster, StoredRecord
    from tests.conftest import EmulatorFactory


@pytest.fixture(autouse=True)
def _no_records(cluster: Cluster) -> Iterator[None]:
    cluster.forget_records()
    for host in cluster.hosts.values():
        host.connections.clear()
    first = len(cluster.runs)
    yield
    for run in cluster.runs[first:]:  # visible with -s: where the time went, no output text
        print(
            f"[cluster] host {run.host} `{' '.join(run.args)}` exit {run.returncode} in {run.ended - run.started:.1f}s"
        )


def _canary_secret() -> str:
    return "CANARY-client-secret-" + secrets.token_hex(6)


def _vendor_facts(emu: Any, seed_rt: str) -> str:
    counters = emu.counters
    return (
        f"vendor saw the seed refresh token {presented(emu, seed_rt)}x; "
        f"{emu.refresh_requests} token request(s); ok={counters.get('ok', 0)}, "
        f"invalid_grant={counters.get('invalid_grant', 0)}, reuse_detected={counters.get('reuse_detected', 0)}; "
        f"{emu.families_revoked} family(ies) revoked"
    )


def _family_label(emu: Any, token: str, families: dict[str, str]) -> str:
    """Which seed's family a token belongs to ("S1", "S2"...), "none" if unknown to the vendor."""
    family = emu.family_of(token) if token else None
    return next((label for label, fid in families.items() if fid == family), "none")


def _check_report(run: CliRun, stored: StoredRecord, what: str) -> None:
    """A host that exits 0 must tell the truth: its generation is the stored one."""
    reported = (run.report or {}).get("generation")
    stored_generation = stored.generation
    assert reported == stored_generation, (
        f"host {run.host} exited 0 after {what} and reported generation {reported}, "
        f"but the stored record is generation {stored_generation}"
    )


def _no_leaks(runs: list[CliRun], secret_values: set[str]) -> None:
    found = leaks(runs, secret_values)
    assert not found, f"secrets in CLI output: {found}"


CONN_X = "vendor_x"


@pytest.mark.parametrize("b_starts", ["right_after_a_starts", "while_a_is_in_flight"])
def test_refresh_started_on_b_while_a_is_in_flight_sends_the_token_once(
    cluster: Cluster, emulator_factory: EmulatorFactory, b_starts: str
) -> None:
    emu = emulator_factory("oauth2_basic", client_secret=_canary_secret())
    seed = emu.issue_tokens()
    families = {"seed": seed.family_id}
    cluster.a.connections[CONN_X] = vendor_connection(emu, seed.refresh_token, seed.access_token)
    cluster.b.connections[CONN_X] = vendor_connection(emu, seed.refresh_token, seed.access_token)
    first_run = len(cluster.runs)
    # The vendor processes the first refresh at once (the token rotates) and holds its answer back:
    # ~3 s when both CLIs start together, else long enough for B's CLI to start up meanwhile.
    hold = 3.0 if b_starts == "right_after_a_starts" else cluster.in_flight_seconds
    emu.inject("slow", delay=hold)

    a = cluster.a.start("refresh", CONN_X)
    if b_starts == "while_a_is_in_flight":
        arrived = wait_until(lambda: emu.refresh_requests >= 1 or a.poll() is not None, timeout=60)
        reached = arrived and emu.refresh_requests >= 1
        assert reached, (
            f"harness: host A's request never reached the vendor: {a.finish().describe(scrubber(emulator_secrets(emu)))}"
        )
    b = cluster.b.start("refresh", CONN_X)
    b_offset = b.started - a.started
    run_a, run_b = a.finish(), b.finish()
    emu.clear_faults()

    scrub = scrubber(emulator_secrets(emu, seed.refresh_token, seed.access_token))
    seed_seen = presented(emu, seed.refresh_token)
    revoked = emu.families_revoked
    invalid_grant = emu.counters.get("invalid_grant", 0)
    reuse = emu.counters.get("reuse_detected", 0)
    facts = (
        f"[{b_starts}: B started {b_offset:.1f}s after A; vendor held answers {hold:.1f}s] "
        f"{_vendor_facts(emu, seed.refresh_token)}\n  {run_a.describe(scrub)}\n  {run_b.describe(scrub)}"
    )
    assert seed_seen == 1, facts
    assert revoked == 0, facts
    assert invalid_grant == 0, facts
    assert reuse == 0, facts

    stored = cluster.stored(CONN_X)
    stored_valid = emu.is_refresh_token_valid(stored.rt)
    stored_family = _family_label(emu, stored.rt, families)
    record = f"stored {stored}, family {stored_family}, valid at vendor={stored_valid}; {facts}"
    assert stored.found, record
    assert stored_valid, record
    assert stored_family == "seed", record

    # Who may fail: only a host that did not reach the vendor, saying a refresh of the connection
    # is in flight. A host that exits 0 reports what is stored.
    senders = [run_a] if b_starts == "while_a_is_in_flight" else []
    succeeded = [run.host for run in (run_a, run_b) if run.returncode == 0]
    assert succeeded, f"neither host succeeded; {facts}"
    for run in (run_a, run_b):
        if run.returncode == 0:
            _check_report(run, stored, "the concurrent refresh")
            continue
        assert run not in senders, f"host {run.host}'s refresh reached the vendor but failed; {facts}"
        message = run.error
        says_in_flight = "in flight" in message.lower() and CONN_X in message
        assert says_in_flight, (
            f"host {run.host} failed without saying a refresh of {CONN_X} is in flight; {facts}"
        )

    # Both hosts can go on refreshing.
    for host in (cluster.a, cluster.b):
        run = host.run("refresh", "--force", CONN_X)
        after = cluster.stored(CONN_X)
        after_valid = emu.is_refresh_token_valid(after.rt)
        revoked = emu.families_revoked
        invalid_grant = emu.counters.get("invalid_grant", 0)
        later = f"{_vendor_facts(emu, seed.refresh_token)}; stored {after}\n  {run.describe(scrub)}"
        assert run.returncode == 0, f"`refresh --force` on host {host.name} failed; {later}"
        _check_report(run, after, "refresh --force")
        assert after_valid, later
        assert revoked == 0, later
        assert invalid_grant == 0, later

    # Both homes wrote under their own file lock: status names the misconfiguration and the fix.
    status = cluster.b.run("status", "--json", CONN_X)
    assert status.returncode == 0, status.describe(scrub)
    warnings = json.loads(status.stdout)[0]["warnings"]
    assert any("file locks of 2 hosts or homes" in w and "'redis' or 'postgres'" in w for w in warnings), (
        warnings
    )

    _no_leaks(cluster.runs[first_run:], emulator_secrets(emu, seed.refresh_token, seed.access_token))


CONN_Y = "vendor_y"
_STALE = re.compile(r"stale|older|outdated|superseded", re.IGNORECASE)


def test_stale_seed_on_one_host_never_undoes_a_reseed(
    cluster: Cluster, emulator_factory: EmulatorFactory
) -> None:
    emu = emulator_factory("oauth2_basic", client_secret=_canary_secret())
    s1 = emu.issue_tokens()
    families = {"S1": s1.family_id}
    cluster.a.connections[CONN_Y] = vendor_connection(emu, s1.refresh_token, s1.access_token)
    cluster.b.connections[CONN_Y] = vendor_connection(emu, s1.refresh_token, s1.access_token)
    first_run = len(cluster.runs)

    def scrub(text: str) -> str:
        return scrubber(emulator_secrets(emu, s1.refresh_token, s1.access_token))(text)

    first = cluster.a.run("refresh", CONN_Y)
    s1_seen = presented(emu, s1.refresh_token)
    assert first.returncode == 0, first.describe(scrub)
    assert s1_seen == 1, _vendor_facts(emu, s1.refresh_token)

    # A person re-seeds the connection; only host A's environment carries the new seed.
    s2 = emu.issue_tokens()
    families["S2"] = s2.family_id
    cluster.a.connections[CONN_Y] = vendor_connection(emu, s2.refresh_token, s2.access_token)
    reseeded = cluster.a.run("refresh", CONN_Y)
    assert reseeded.returncode == 0, reseeded.describe(scrub)
    record = cluster.stored(CONN_Y)
    adopted = _family_label(emu, record.rt, families)
    rotated = record.rt != s2.refresh_token
    assert adopted == "S2", f"harness: host A did not adopt the new seed (stored {record}, family {adopted})"
    assert rotated, "harness: host A did not refresh from the new seed"
    mark = len(emu.requests)

    # Host B still has S1 in its environment.
    results: list[tuple[CliRun, StoredRecord]] = []
    for args in (("refresh", CONN_Y), ("refresh", "--force", CONN_Y)):
        run = cluster.b.run(*args)
        results.append((run, cluster.stored(CONN_Y)))

    stored = results[-1][1]
    s1_again = presented(emu, s1.refresh_token, since=mark)
    s1_family_again = sum(
        1
        for request in emu.requests[mark:]
        for token in request.form().get("refresh_token", [])
        if emu.family_of(token) == s1.family_id
    )
    s2_revoked = emu.current_tokens(s2.family_id).revoked
    stored_valid = emu.is_refresh_token_valid(stored.rt)
    stored_family = _family_label(emu, stored.rt, families)
    facts = (
        f"after the re-seed: vendor saw S1 {s1_again}x (tokens of S1's family {s1_family_again}x), "
        f"S2 family revoked={s2_revoked}; overall {_vendor_facts(emu, s1.refresh_token)}; "
        f"stored {stored}, family {stored_family}, valid at vendor={stored_valid}\n  "
        + "\n  ".join(run.describe(scrub) for run, _ in results)
    )
    assert s1_again == 0, facts
    assert s1_family_again == 0, facts
    assert not s2_revoked, facts
    assert stored_valid, facts
    assert stored_family == "S2", facts

    for run, after in results:
        if run.returncode == 0:
            _check_report(run, after, " ".join(run.args))
        else:
            message = run.error
            says_stale = CONN_Y in message and _STALE.search(message) is not None
            assert says_stale, f"host B failed without saying its seed for {CONN_Y} is stale; {facts}"

    _no_leaks(
        cluster.runs[first_run:],
        emulator_secrets(emu, s1.refresh_token, s1.access_token, s2.refresh_token, s2.access_token),
    )


CONN_Z = "vendor_z"


@pytest.fixture(scope="module")
def release_0_2_0(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.releases import RELEASE_0_2_0, extract_release

    return str(extract_release(RELEASE_0_2_0, tmp_path_factory.mktemp("release-0.2.0")))


def test_moving_to_sealed_variable_beside_a_0_2_0_host_keeps_one_chain(
    cluster: Cluster, emulator_factory: EmulatorFactory, release_0_2_0: str
) -> None:
    """A rollout: host A still runs 0.2.0 and sees the connection as it was (``store`` default);
    host B runs this release and sees ``store: sealed_variable``. B moves the record; from then on
    A stops loudly and sends nothing, and the chain B keeps is the vendor's live one."""
    import subprocess
    import sys

    emu = emulator_factory("oauth2_basic", client_secret=_canary_secret())
    seed = emu.issue_tokens()
    families = {"seed": seed.family_id}
    plain = vendor_connection(emu, seed.refresh_token, seed.access_token)
    cluster.a.connections[CONN_Z] = plain
    cluster.b.connections[CONN_Z] = {**plain, "extra": {**plain["extra"], "store": "sealed_variable"}}
    cluster.a.pythonpath = release_0_2_0
    first_run = len(cluster.runs)
    try:
        probe = cluster.a.popen(
            [sys.executable, "-c", "import airflow_provider_tokenrefresh as p; print(p.__file__)"],
            stdout=subprocess.PIPE,
        )
        a_package = probe.communicate(timeout=60)[0].strip()
        assert a_package.startswith(release_0_2_0), f"harness: host A imports {a_package}"

        def scrub(text: str) -> str:
            return scrubber(emulator_secrets(emu, seed.refresh_token, seed.access_token))(text)

        # 1. The 0.2.0 host refreshes: the record is under the old, masked name.
        a1 = cluster.a.run("refresh", "--force", CONN_Z)
        assert a1.returncode == 0, a1.describe(scrub)
        before = cluster.stored(CONN_Z)
        assert before.found and before.generation == 1, before
        rt_a1 = before.rt

        # 2. Host B (sealed) refreshes: the record moves.
        b1 = cluster.b.run("refresh", "--force", CONN_Z)
        assert b1.returncode == 0, b1.describe(scrub)
        moved = cluster.stored(CONN_Z, sealed=True)
        _check_report(b1, moved, "the move")
        raw_old = cluster.raw_variable(f"tokenrefresh_token__{CONN_Z}") or ""
        raw_sealed = cluster.raw_variable(f"trf_record__{CONN_Z}") or ""
        tokens = emulator_secrets(emu, seed.refresh_token, seed.access_token)
        in_clear = [
            name for name, raw in (("old", raw_old), ("sealed", raw_sealed)) if any(t in raw for t in tokens)
        ]
        assert json.loads(raw_old)["state"] == "moved" and "sealed" not in json.loads(raw_old)
        assert json.loads(raw_sealed)["sealed_by"] == "airflow-provider-tokenrefresh"
        assert in_clear == [], f"tokens in clear in the {in_clear} Variable(s)"
        requests_after_move = emu.refresh_requests

        # 3. The 0.2.0 host, with its outdated view, stops loudly and sends nothing.
        for args in (("refresh", CONN_Z), ("refresh", "--force", CONN_Z)):
            run = cluster.a.run(*args)
            message = run.error
            assert run.returncode != 0, f"0.2.0 host went on after the move: {run.describe(scrub)}"
            assert f"tokenrefresh_token__{CONN_Z}" in message and "Do not delete" in message, scrub(message)
        assert emu.refresh_requests == requests_after_move, _vendor_facts(emu, seed.refresh_token)

        # 4. This release with the plain view says where the record went.
        cluster.a.pythonpath = None
        plain_view = cluster.a.run("refresh", "--force", CONN_Z)
        assert plain_view.returncode != 0
        assert "sealed_variable" in plain_view.error and f"trf_record__{CONN_Z}" in plain_view.error, scrub(
            plain_view.error
        )
        assert emu.refresh_requests == requests_after_move, _vendor_facts(emu, seed.refresh_token)

        # 5. B goes on; every rotated token was presented once; the stored one is live.
        b2 = cluster.b.run("refresh", "--force", CONN_Z)
        assert b2.returncode == 0, b2.describe(scrub)
        after = cluster.stored(CONN_Z, sealed=True)
        _check_report(b2, after, "refresh --force after the move")
        facts = f"{_vendor_facts(emu, seed.refresh_token)}; stored {after}"
        assert after.generation == 3, facts
        assert presented(emu, seed.refresh_token) == 1, facts
        assert presented(emu, rt_a1) == 1, facts
        assert emu.refresh_requests == 3, facts
        assert emu.counters.get("invalid_grant", 0) == 0 and emu.families_revoked == 0, facts
        assert emu.is_refresh_token_valid(after.rt), facts
        assert _family_label(emu, after.rt, families) == "seed", facts

        # 6. Fernet keys. A host with another key stops, naming it, and sends nothing.
        from cryptography.fernet import Fernet

        shared_key = cluster.shared_env["AIRFLOW__CORE__FERNET_KEY"]
        new_key = Fernet.generate_key().decode()
        cluster.a.connections[CONN_Z] = cluster.b.connections[CONN_Z]
        cluster.a.overrides["AIRFLOW__CORE__FERNET_KEY"] = Fernet.generate_key().decode()
        stranger = cluster.a.run("refresh", "--force", CONN_Z)
        assert stranger.returncode != 0 and "[core] fernet_key" in stranger.error, scrub(stranger.error)
        assert f"trf_record__{CONN_Z}" in stranger.error and "Do not delete" in stranger.error
        assert emu.refresh_requests == 3, _vendor_facts(emu, seed.refresh_token)
        # Rotation: "new,old" reads the record and warns until it is re-sealed by a write.
        cluster.a.overrides["AIRFLOW__CORE__FERNET_KEY"] = f"{new_key},{shared_key}"
        warned = cluster.a.run("status", "--json", CONN_Z)
        assert warned.returncode in (0, 1), warned.describe(scrub)
        warnings = json.loads(warned.stdout)[0]["warnings"]
        assert any("other than the first one" in w for w in warnings), warnings
        resealed = cluster.a.run("refresh", "--force", CONN_Z)
        assert resealed.returncode == 0, resealed.describe(scrub)
        cluster.a.overrides["AIRFLOW__CORE__FERNET_KEY"] = new_key  # the old key dropped
        after_rotation = cluster.a.run("status", "--json", CONN_Z)
        assert after_rotation.returncode in (0, 1), after_rotation.describe(scrub)
        row = json.loads(after_rotation.stdout)[0]
        assert row["generation"] == 4 and not any("other than the first one" in w for w in row["warnings"]), (
            row
        )
        facts = _vendor_facts(emu, seed.refresh_token)
        assert emu.refresh_requests == 4 and emu.counters.get("invalid_grant", 0) == 0, facts
        _no_leaks(cluster.runs[first_run:], emulator_secrets(emu, seed.refresh_token, seed.access_token))
    finally:
        cluster.a.pythonpath = None
        cluster.a.overrides.clear()
