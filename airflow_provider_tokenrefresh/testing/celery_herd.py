"""The herd-at-expiry scenario on a :class:`~.celery_stack.CeleryStack`, judged at the vendor.

One configuration = one connection (its own token family at the emulator) with one ``lock``
setting. Per window a DAG run is triggered whose uses all fall just after the token's refresh
point, and the api-server's connection Test button is pressed while they run. Afterwards the
vendor is asked, not the keeper: how many refresh requests carried a token of this family
(exactly one per window), how many real tokens it rejected (``invalid_grant`` for a reused,
revoked or expired token: 0), whether the stored refresh token is the family's current one and
still works (``refresh --force`` from a worker's host is accepted).

The Test button on a connection in use probes the endpoint with a made-up refresh token; the vendor
rejects it as ``invalid_grant:unknown``. Those are counted as ``probes``, never as refreshes.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_tokenrefresh.testing.connections import emulator_connection

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.testing.celery_stack import CeleryStack
    from airflow_provider_tokenrefresh.testing.emulator import VendorEmulator


@dataclass
class Window:
    """One expiry window: one DAG run, its uses and what the vendor saw meanwhile."""

    index: int
    run_id: str
    use_at: float
    run_state: str = ""
    refreshes: int = 0
    refresh_ok: int = 0
    invalid_grant: int = 0
    probes: int = 0
    families_revoked: int = 0
    sample_unauthorized: int = 0
    ti_states: dict[str, int] = field(default_factory=dict)
    ti_seconds_p50: float | None = None
    ti_seconds_max: float | None = None
    #: Each use's time to token (ms, measured in the task around ``get_token()``), sorted.
    token_ms: list[float] = field(default_factory=list)
    logs_by_worker: dict[str, int] = field(default_factory=dict)
    #: "Token refreshed" log lines per component (the Test button's refresh is in no task log).
    refreshed_in: dict[str, int] = field(default_factory=dict)
    test_button: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Configuration:
    """One lock setting over several windows."""

    name: str
    extra: dict[str, Any]
    conn_id: str
    windows: list[Window] = field(default_factory=list)
    lock_in_use: str | None = None
    stored_is_current: bool = False
    force_refresh_ok: bool = False
    family_revoked: bool = True
    invalid_grant_total: int = 0
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def chain_alive(self) -> bool:
        return self.stored_is_current and self.force_refresh_ok and not self.family_revoked

    @property
    def ti_totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for window in self.windows:
            total.update(window.ti_states)
        return total

    def summary(self) -> dict[str, Any]:
        """One row of the results table."""
        tis = self.ti_totals
        return {
            "lock": self.name,
            "lock_in_use": self.lock_in_use,
            "windows": len(self.windows),
            "refreshes_per_window": [w.refreshes for w in self.windows],
            "ti_success": tis.get("success", 0),
            "ti_failed": sum(n for state, n in tis.items() if state != "success"),
            "invalid_grant": self.invalid_grant_total,
            "probes": sum(w.probes for w in self.windows),
            "chain_alive": self.chain_alive,
            # At expiry: windows after the first (the first has no access token yet, and pays the
            # workers' cold start).
            "token_ms_p50": percentile(self.at_expiry_token_ms, 50),
            "token_ms_p99": percentile(self.at_expiry_token_ms, 99),
        }

    @property
    def at_expiry_token_ms(self) -> list[float]:
        """Times to token of the windows after the first (sorted)."""
        return sorted(t for w in self.windows[1:] for t in w.token_ms)

    def as_json(self) -> dict[str, Any]:
        return {**self.summary(), "extra": self.extra, "detail": [asdict(w) for w in self.windows]}

    @property
    def ok(self) -> bool:
        s = self.summary()
        return (
            all(n == 1 for n in s["refreshes_per_window"])
            and s["ti_failed"] == 0
            and s["invalid_grant"] == 0
            and bool(s["chain_alive"])
        )


def _press_test_button(stack: CeleryStack, body: dict[str, Any], at: float, out: dict[str, Any]) -> None:
    while time.time() < at:  # the scenario's moment (wall clock)
        time.sleep(0.05)
    try:
        with stack.api() as api:
            response = api.post("/api/v2/connections/test", json=body)
        answer = response.json()
        out.update(http=response.status_code, status=answer.get("status"), message=str(answer.get("message")))
    except Exception as exc:  # noqa: BLE001 - reported in the results, never raised from a thread
        out.update(error=f"{type(exc).__name__}: {exc}")


def _refresh_point(emulator: VendorEmulator, family: str, margin: float) -> float:
    """When the keeper starts refreshing the family's current access token (epoch seconds)."""
    from airflow_provider_tokenrefresh.lease import effective_margin

    snapshot = emulator.current_tokens(family)
    lifetime = max(0, int(emulator.access_ttl) - 1)  # the vendor's expires_in
    return snapshot.access_expires_at - 1 - effective_margin(margin, lifetime)


def run_configuration(
    stack: CeleryStack,
    emulator: VendorEmulator,
    name: str,
    extra: dict[str, Any],
    *,
    dag_id: str,
    windows: int,
    lead: float = 20.0,
    first_lead: float | None = None,
    after_refresh_point: float = 2.0,
    run_timeout: float = 600.0,
    log: Any = print,
) -> Configuration:
    """Seed a fresh connection with ``extra`` and run ``windows`` expiry windows against it."""
    conn_id = f"herd_{name}"
    seed = emulator.issue_tokens()
    family = seed.family_id
    fields = emulator_connection(emulator, seed.refresh_token, None, **extra)
    stack.put_connection(conn_id, f"tokenrefresh_{emulator.name}", **fields)
    test_body = {
        "connection_id": conn_id,
        "conn_type": f"tokenrefresh_{emulator.name}",
        **fields,
        "extra": json.dumps(fields["extra"]),
    }
    result = Configuration(name=name, extra=extra, conn_id=conn_id)
    margin = float(extra.get("refresh_margin", 300.0))
    # Windows are contiguous at the vendor: a request between two runs counts in the later window.
    n_requests, refreshed_before = len(emulator.requests), emulator.current_tokens(family).refreshes
    for index in range(windows):
        # Window 0: no access token yet, the first use refreshes. Later: just after the refresh point.
        # The first run also pays the workers' cold start: by default it gets twice the lead.
        ahead = (2 * lead if first_lead is None else first_lead) if index == 0 else lead
        use_at = time.time() + ahead
        if index > 0:
            use_at = max(use_at, _refresh_point(emulator, family, margin) + after_refresh_point)
        # Trigger `ahead` seconds before the moment so the tasks have their slots when it comes.
        while time.time() < use_at - ahead:
            time.sleep(0.2)
        revoked_before = emulator.current_tokens(family).revoked
        unauthorized_before = emulator.counters.get("sample:unauthorized", 0)
        t0 = time.monotonic()
        run_id = stack.trigger(dag_id, {"conn_id": conn_id, "use_at": use_at})
        window = Window(index=index, run_id=run_id, use_at=use_at)
        button = threading.Thread(
            target=_press_test_button, args=(stack, test_body, use_at + 1.0, window.test_button), daemon=True
        )
        button.start()
        window.run_state = stack.wait_run(dag_id, run_id, timeout=run_timeout)
        button.join(timeout=60)
        window.seconds = round(time.monotonic() - t0, 1)
        # Per family (other configurations may run at the same time): every request that presented
        # a refresh token of this family, and how many of them the vendor accepted.
        window.refreshes = _presented(emulator, family, n_requests)
        snapshot = emulator.current_tokens(family)
        window.refresh_ok = snapshot.refreshes - refreshed_before
        n_requests, refreshed_before = len(emulator.requests), snapshot.refreshes
        window.invalid_grant = window.refreshes - window.refresh_ok
        window.families_revoked = int(snapshot.revoked and not revoked_before)
        window.probes = int("Probe: the endpoint answered" in str(window.test_button.get("message")))
        window.sample_unauthorized = emulator.counters.get("sample:unauthorized", 0) - unauthorized_before
        tis = stack.task_instances(dag_id, run_id)
        window.ti_states = dict(Counter(str(ti["state"]) for ti in tis))
        durations = sorted(float(ti["duration"]) for ti in tis if ti.get("duration") is not None)
        if durations:
            window.ti_seconds_p50 = round(durations[len(durations) // 2], 1)
            window.ti_seconds_max = round(durations[-1], 1)
        window.token_ms = times_to_token(stack.run_logs(dag_id, run_id))
        window.logs_by_worker = stack.task_logs_by_worker(dag_id, run_id)
        window.refreshed_in = stack.lines_in_run_logs(dag_id, run_id, "Token refreshed for")
        result.windows.append(window)
        log(
            f"[{name}] window {index}: run {window.run_state} in {window.seconds}s, refreshes {window.refreshes}, "
            f"invalid_grant {window.invalid_grant}, probes {window.probes}, TIs {window.ti_states}, "
            f"TI seconds p50/max {window.ti_seconds_p50}/{window.ti_seconds_max}, "
            f"time to token p50/p99 {percentile(window.token_ms, 50)}/{percentile(window.token_ms, 99)} ms, "
            f"logs by worker {window.logs_by_worker}, refreshed in {window.refreshed_in}, "
            f"test button {str(window.test_button.get('message'))[:40]!r}"
        )
    result.invalid_grant_total = sum(w.invalid_grant for w in result.windows)
    _judge_chain(stack, emulator, family, result)
    log(f"[{name}] {result.summary()}")
    return result


def times_to_token(logs: str) -> list[float]:
    """Every ``time_to_token_ms=`` a run's tasks printed, sorted (pure)."""
    import re

    return sorted(float(m) for m in re.findall(r"time_to_token_ms=([0-9.]+)", logs))


def percentile(values: list[float], pct: float) -> float | None:
    """The nearest-rank percentile of sorted ``values`` (``None`` when empty; pure)."""
    if not values:
        return None
    import math

    return values[max(0, math.ceil(pct / 100 * len(values)) - 1)]


@dataclass
class PeerWindow:
    """The peer pattern's window: what its tasks took and what the vendor saw."""

    run_id: str
    run_state: str = ""
    refreshes: int = 0
    refresh_ok: int = 0
    invalid_grant: int = 0
    family_revoked: bool = False
    sample_unauthorized: int = 0
    ti_states: dict[str, int] = field(default_factory=dict)
    token_ms: list[float] = field(default_factory=list)
    stored_refresh_token_works: bool = False


def run_peer_window(
    stack: CeleryStack,
    emulator: VendorEmulator,
    *,
    dag_id: str = "celery_token_herd_peer",
    expires_in: float = 30.0,
    lead: float = 20.0,
    run_timeout: float = 600.0,
    log: Any = print,
) -> PeerWindow:
    """One expiry window of the peer pattern (``peer_use_token``: Variable JSON, refresh when it
    expires within 300 s (our default margin), ``Variable.set``) on a fresh token family, judged at the vendor.

    :param expires_in: what the Variable says is left of the access token at the uses' moment:
        under 300 s every use refreshes (at expiry); say 3600 and no use does (the read-only floor:
        what getting a still-valid token from a Variable costs a task on this deployment).
    """
    import httpx

    seed = emulator.issue_tokens()
    family = seed.family_id
    conn_id, variable = "peer_herd", "peer_token__herd"
    stack.put_connection(
        conn_id, "http", host=emulator.base_url, login=emulator.client_id, password=emulator.client_secret
    )
    use_at = time.time() + 2 * lead
    value = {
        "access_token": seed.access_token,
        "refresh_token": seed.refresh_token,
        "expires_at": use_at + expires_in,
    }
    with stack.api() as api:
        api.delete(f"/api/v2/variables/{variable}")
        api.post("/api/v2/variables", json={"key": variable, "value": json.dumps(value)}).raise_for_status()
    n_requests, refreshed_before = len(emulator.requests), emulator.current_tokens(family).refreshes
    unauthorized_before = emulator.counters.get("sample:unauthorized", 0)
    run_id = stack.trigger(dag_id, {"conn_id": conn_id, "variable": variable, "use_at": use_at})
    window = PeerWindow(run_id=run_id)
    window.run_state = stack.wait_run(dag_id, run_id, timeout=run_timeout)
    window.refreshes = _presented(emulator, family, n_requests)
    snapshot = emulator.current_tokens(family)
    window.refresh_ok = snapshot.refreshes - refreshed_before
    window.invalid_grant = window.refreshes - window.refresh_ok
    window.family_revoked = bool(snapshot.revoked)
    window.sample_unauthorized = emulator.counters.get("sample:unauthorized", 0) - unauthorized_before
    window.ti_states = dict(Counter(str(ti["state"]) for ti in stack.task_instances(dag_id, run_id)))
    window.token_ms = times_to_token(stack.run_logs(dag_id, run_id))
    # The CLI, not the REST API: the API masks a Variable whose key says "token" (as it should).
    stored = json.loads(stack.airflow("variables", "get", variable).stdout.strip().splitlines()[-1])
    probe = httpx.post(
        emulator.token_url,
        data={"grant_type": "refresh_token", "refresh_token": stored["refresh_token"]},
        auth=(emulator.client_id, emulator.client_secret),
        timeout=30,
    )
    window.stored_refresh_token_works = probe.status_code == 200
    log(
        f"[peer, {expires_in:g} s left] run {window.run_state}, refreshes {window.refreshes} ({window.refresh_ok} accepted, "
        f"{window.invalid_grant} invalid_grant), family revoked {window.family_revoked}, TIs {window.ti_states}, "
        f"time to token p50/p99 {percentile(window.token_ms, 50)}/{percentile(window.token_ms, 99)} ms "
        f"({len(window.token_ms)} uses got one), stored refresh token works {window.stored_refresh_token_works}"
    )
    return window


def _presented(emulator: VendorEmulator, family: str, since: int) -> int:
    return sum(
        1
        for request in emulator.requests[since:]
        if any(emulator.family_of(t) == family for t in request.form().get("refresh_token", []))
    )


def _judge_chain(stack: CeleryStack, emulator: VendorEmulator, family: str, result: Configuration) -> None:
    """At the vendor: the stored refresh token is the family's current one (a forced refresh from a
    worker's host presents it and the vendor accepts it) and the token stored after it is current."""
    current = emulator.current_tokens(family)
    n_requests = len(emulator.requests)
    forced = stack.cli("worker2", "refresh", "--force", result.conn_id)
    presented = [
        t for r in emulator.requests[n_requests:] for t in r.form().get("refresh_token", [])
        if emulator.family_of(t) == family
    ]  # fmt: skip
    after = emulator.current_tokens(family)
    result.stored_is_current = presented == [current.refresh_token] and not current.revoked
    accepted = after.refreshes - current.refreshes
    result.invalid_grant_total += len(presented) - accepted
    stored = stack.stored_record(result.conn_id, component="worker1")
    result.lock_in_use = stored.get("lock_in_use")
    result.status = {k: stored.get(k) for k in ("state", "generation", "lock_in_use")}
    result.force_refresh_ok = (
        forced.returncode == 0
        and accepted == 1
        and stored.get("rt") == after.refresh_token
        and emulator.is_refresh_token_valid(after.refresh_token)
    )
    result.family_revoked = after.revoked


def run_configurations(
    stack: CeleryStack,
    emulator: VendorEmulator,
    configurations: dict[str, dict[str, Any]],
    *,
    parallel: bool = False,
    **options: Any,
) -> list[Configuration]:
    """:func:`run_configuration` for each (name, extra); side by side in threads when ``parallel``
    (each its own connection and token family, judged per family)."""
    if not parallel:
        return [run_configuration(stack, emulator, n, e, **options) for n, e in configurations.items()]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(configurations)) as pool:
        futures = [
            pool.submit(run_configuration, stack, emulator, n, e, **options)
            for n, e in configurations.items()
        ]
        return [f.result() for f in futures]
