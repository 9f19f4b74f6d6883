"""Fifty deferred waits on one real triggerer.

* One slow vendor (10-second answers) must not hold up the other triggers: their blocking work
  (store, lock, vendor call) runs on the provider's own thread pool, not on ``sync_to_async``'s
  one shared thread. Shown with the real ``TokenValidSensor``: 49 default sensors (they wait for a
  keeper) and one that refreshes itself against a vendor answering in 10 s; a keeper process
  refreshes the 49 while that request is open, and all 49 fire before the slow vendor could have
  answered (its request's arrival, recorded by the vendor, plus 10 s).
* Fifty triggers that all refresh through the Variable store (write, settle, read back) in one
  triggerer all fire, each with exactly one refresh at the vendor: their Variable calls share the
  triggerer's one supervisor channel, and the store keeps each claim's window short.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_tokenrefresh.stores import FileTokenStore
from airflow_provider_tokenrefresh.testing import OAuth2BasicEmulator
from airflow_provider_tokenrefresh.testing.connections import emulator_connection
from tests.airflow.conftest import running_deployment

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.airflow.conftest import Deployment

FAST = 49
SLOW_ANSWER = 10.0


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """This module's own deployment (not the session's): a triggerer whose supervisor's secrets
    masker starts empty. Airflow's masker recompiles every value it holds each time it learns one,
    so fifty triggers on a triggerer that already served the other files' triggers pay for those
    files' values too; on its own, the module can also run beside the other group."""
    with running_deployment(tmp_path_factory) as running:
        yield running


def _seed(deployment: Deployment, emu: Any, conn_id: str, **extra: Any) -> Any:
    seed = emu.issue_tokens()
    # No access token: the first use must refresh.
    deployment.stack.put_connection(
        conn_id, "tokenrefresh_oauth2_basic", **emulator_connection(emu, seed.refresh_token, None, **extra)
    )
    return seed


def _states(deployment: Deployment, dag_id: str, run_id: str) -> dict[int, str]:
    return {
        ti["map_index"]: ti["state"]
        for ti in deployment.stack.task_instances(dag_id, run_id)
        if ti["task_id"] == "wait"
    }


def _wait_until(condition: Any, timeout: float, what: str, explain: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout}s" + (f":\n{explain()}" if explain else ""))


def _fired(run_logs: str, triggerer_output: str, run_id: str) -> set[str]:
    """The triggers of ``run_id`` that logged "Trigger fired event" (the runner logs it as it yields).

    Each line normally lands in its task instance's trigger log; now and then the triggerer writes
    one to its own output instead (its log routing, not the trigger: seen in CI for the first
    trigger of 49 to fire), so both are read, and each trigger counts once by its name.
    """
    names = set()
    for line in run_logs.splitlines():
        if '"Trigger fired event"' in line:
            names.add(json.loads(line)["name"])
    for line in triggerer_output.splitlines():
        if "Trigger fired event" in line and f"/{run_id}/" in line:
            match = re.search(r"name='([^']+)'", line)
            if match:
                names.add(match.group(1))
    return names


def _family_alive(emu: Any, family: str, stored_refresh_token: str | None) -> bool:
    return (
        stored_refresh_token is not None
        and emu.current_tokens(family).refresh_token == stored_refresh_token
        and (emu.is_refresh_token_valid(stored_refresh_token))
    )


REFRESHER = """
import json, os, sys
os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "server"  # as the CLI does: connections from the metastore
from concurrent.futures import ThreadPoolExecutor
from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
hooks = [TokenRefreshHook(conn_id) for conn_id in sys.argv[1:]]
with ThreadPoolExecutor(len(hooks)) as pool:
    list(pool.map(lambda hook: hook.keeper, hooks))  # connections read, clients built: only I/O after "go"
    print("RESULT ready", flush=True)
    sys.stdin.readline()
    print("RESULT " + json.dumps(list(pool.map(lambda hook: hook.refresh()["generation"], hooks))), flush=True)
for hook in hooks:
    hook.close()
"""


def _result_line(child: subprocess.Popen[str]) -> str:
    """The child's next ``RESULT`` line (anything else it prints is logging); fail with its stderr."""
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("RESULT "):
            return line[len("RESULT ") :].strip()
    child.wait(timeout=30)
    raise AssertionError(
        f"refresher exited {child.returncode}:\n{child.stderr.read()[-3000:] if child.stderr else ''}"
    )


def test_one_slow_vendor_does_not_hold_up_the_other_sensors(deployment: Deployment) -> None:
    """49 default sensors (they wait for a keeper) and one that refreshes itself, on a slow vendor."""
    stack = deployment.stack
    stack.wait_for_dag("token_sensor_crowd")
    with (
        OAuth2BasicEmulator(rotation=True, reuse_detection=True) as fast,
        OAuth2BasicEmulator(rotation=True, reuse_detection=True) as slow,
    ):
        fast_ids = [f"crowd_fast_{i}" for i in range(FAST)]
        seeds = {conn_id: _seed(deployment, fast, conn_id, store="file") for conn_id in fast_ids}
        # The client waits as long as the vendor holds (timeout 300 s): the request stays open on both ends.
        slow_seed = _seed(deployment, slow, "crowd_slow", store="file", timeout=300)
        # The slow vendor is down for the worker's first check, then holds its answer to the
        # triggerer's request until this test releases it (at least 10 s).
        slow.inject("http_503")
        release = threading.Event()
        slow.inject("hold", release=release, at_least=SLOW_ANSWER, timeout=300)
        # A keeper process for the 49 (the real hook, outside any task), started now, refreshing on "go".
        with (stack.home / "refresher.err").open("w") as errors:  # the child keeps its own descriptor
            refresher = subprocess.Popen(
                [sys.executable, "-c", REFRESHER, *fast_ids],
                env=stack.env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        try:
            assert refresher.stdout is not None and refresher.stdin is not None
            assert _result_line(refresher) == "ready"
            fast_run = stack.trigger("token_sensor_crowd", {"conn_ids": fast_ids})
            _wait_until(
                lambda: (
                    list(_states(deployment, "token_sensor_crowd", fast_run).values()).count("deferred")
                    == FAST
                ),
                240,
                "49 sensors deferred",
                lambda: _states(deployment, "token_sensor_crowd", fast_run),
            )
            slow_run = stack.trigger("token_sensor_crowd", {"conn_ids": ["crowd_slow"], "refresh": True})

            def slow_request_open() -> bool:
                return slow.refresh_requests == 2 and len(slow.answers) == 1

            _wait_until(slow_request_open, 120, "the triggerer's request to the slow vendor")
            opened = time.monotonic()
            refresher.stdin.write("go\n")
            refresher.stdin.flush()
            generations = json.loads(_result_line(refresher))
            assert generations == [1] * FAST

            def fired() -> set[str]:
                return _fired(
                    stack.run_logs("token_sensor_crowd", fast_run), stack.output("triggerer"), fast_run
                )

            # With one shared thread for every trigger's blocking work, none of the 49 could fire
            # while the slow call holds it: this wait would run out.
            _wait_until(
                lambda: len(fired()) == FAST,
                180,
                "49 'Trigger fired event' lines while the slow request is open",
            )
            fired_after = time.monotonic() - opened
            assert slow_request_open(), "the slow vendor answered before the test released it"
        finally:
            release.set()
            refresher.kill()
            refresher.wait(timeout=30)
            for pipe in (refresher.stdin, refresher.stdout):
                if pipe is not None:
                    pipe.close()

        assert stack.wait_run("token_sensor_crowd", fast_run, timeout=180) == "success", stack.explain(
            "token_sensor_crowd", fast_run
        )
        assert stack.wait_run("token_sensor_crowd", slow_run, timeout=180) == "success", stack.explain(
            "token_sensor_crowd", slow_run
        )

        # At the vendors: one successful refresh per family, nothing rejected, every stored token live.
        assert fast.counters.get("ok", 0) == FAST, fast.counters
        assert slow.counters.get("ok", 0) == 1, slow.counters
        assert fast.counters.get("invalid_grant", 0) == 0 and slow.counters.get("invalid_grant", 0) == 0
        store = FileTokenStore(str(stack.home / "tokenrefresh-store"))
        for conn_id, seed in [*seeds.items(), ("crowd_slow", slow_seed)]:
            emu = slow if conn_id == "crowd_slow" else fast
            record, _ = store.read(f"tokenrefresh_token__{conn_id}")
            stored = record.refresh_token.get_secret_value() if record and record.refresh_token else None
            assert _family_alive(emu, emu.family_of(seed.refresh_token), stored), conn_id
        print(f"49 sensors fired {fired_after:.1f}s after the slow request opened, while it was still open")


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("store", ["sealed_variable", "variable"])
def test_fifty_triggers_refreshing_through_the_variable_store_all_fire(
    deployment: Deployment, store: str
) -> None:
    """Fifty triggers on one triggerer, each refreshing its own connection through the Variable store
    (the default one, and ``sealed_variable``).

    Slow by nature, not by a sleep: with the default store the triggerer's supervisor hands every
    record value its triggers read to Airflow's masker, which recompiles all it holds each time
    (README "Benchmarks"), and the claims settle 6 s each. 87-99 s on a quiet machine on this
    module's own deployment; 305-421 s in loaded CI runs on 2 cores on the shared one, so the wait
    allows 900 s. ``sealed_variable`` records are under names the masker ignores.
    """
    stack = deployment.stack
    stack.wait_for_dag("token_trigger_crowd")
    with OAuth2BasicEmulator(rotation=True, reuse_detection=True) as emu:
        ids = [f"crowd_{'sealed' if store == 'sealed_variable' else 'var'}_{i}" for i in range(50)]
        extra = {"store": store} if store != "variable" else {}
        seeds = {conn_id: _seed(deployment, emu, conn_id, **extra) for conn_id in ids}
        started = time.monotonic()
        run = stack.trigger("token_trigger_crowd", {"conn_ids": ids})
        state = stack.wait_run("token_trigger_crowd", run, timeout=900)
        took = time.monotonic() - started
        logs = stack.run_logs("token_trigger_crowd", run)
        withdrawn = logs.count("withdrawing")
        assert state == "success", f"{withdrawn} withdrawn claims\n" + stack.explain(
            "token_trigger_crowd", run
        )
        assert list(_states(deployment, "token_trigger_crowd", run).values()) == ["success"] * 50
        assert emu.counters.get("ok", 0) == 50, emu.counters  # one refresh per connection, at the vendor
        assert emu.counters.get("invalid_grant", 0) == 0, emu.counters
        stored = deployment.stored_refresh_tokens_of(ids, sealed=store == "sealed_variable")
        for conn_id, seed in seeds.items():
            assert _family_alive(emu, emu.family_of(seed.refresh_token), stored[conn_id]), conn_id
        print(f"50 {store} triggers fired in {took:.1f}s; {withdrawn} claims withdrawn on the way")
