"""A real CeleryExecutor deployment, judged at the vendor: one refresh per expiry window.

PostgreSQL metadata DB, Redis broker, api-server, scheduler, dag-processor, triggerer and two
``airflow celery worker``s, each with its own ``AIRFLOW_HOME``, on 127.0.0.1. Per window 12 mapped
tasks (on the workers) and 4 deferrable sensors (refreshing in the triggerer) need the token just
after its refresh point while the api-server's Test button is pressed; the vendor rotates refresh
tokens and revokes the family on reuse. One deployment for the module; each lock setting is a new
connection (its own token family, judged per family), and the two settings run side by side to keep
the module short. ``make cluster-demo`` runs the full variant (64 + 8, 3 windows, four lock
settings, one after the other).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_tokenrefresh.testing.celery_herd import Configuration, run_configurations
from tests.celery.deploy import CONFIGURATIONS, Deployment, deployment

pytestmark = pytest.mark.airflow

USES = 16  # 12 mapped tasks + 4 sensors
WINDOWS = 2
ACCESS_TTL = 111.0  # the keeper refreshes at half of it: 55 s windows (a run's uses spread <= 49 s under load)


@pytest.fixture(scope="module")
def celery() -> Iterator[Deployment]:
    """The deployment; a server that cannot start fails the module (never a skip)."""
    with deployment(access_ttl=ACCESS_TTL) as deployed:
        print(f"\n[celery] deployment healthy in {deployed.started_in:.0f}s")
        yield deployed


@pytest.fixture(scope="module")
def results(celery: Deployment) -> dict[str, Configuration]:
    """Default settings and ``lock: file``, side by side, two windows each."""
    names = ("default", "file")
    done = run_configurations(
        celery.stack, celery.emulator, {n: CONFIGURATIONS[n] for n in names},
        parallel=True, dag_id="celery_token_herd_small", windows=WINDOWS, lead=12,
    )  # fmt: skip
    return dict(zip(names, done, strict=True))


def _check(result: Configuration, celery: Deployment) -> None:
    detail = "\n".join(
        f"window {w.index}: {w.run_state}, refreshes {w.refreshes}, TIs {w.ti_states}, "
        f"rejections {w.invalid_grant}, test button {w.test_button}"
        for w in result.windows
    )
    failed = [w for w in result.windows if w.run_state != "success"]
    logs = celery.stack.run_logs("celery_token_herd_small", failed[0].run_id)[-4000:] if failed else ""
    assert [w.refreshes for w in result.windows] == [1] * WINDOWS, f"{detail}\n{logs}"
    assert [w.refresh_ok for w in result.windows] == [1] * WINDOWS, detail
    assert result.ti_totals == {"success": USES * WINDOWS}, f"{detail}\n{logs}"
    assert result.invalid_grant_total == 0, detail
    assert all(w.families_revoked == 0 and w.sample_unauthorized == 0 for w in result.windows), detail
    assert result.chain_alive, (result.stored_is_current, result.force_refresh_ok, result.family_revoked)
    # Both workers ran tasks (two homes, two hosts as far as the provider can tell).
    assert all(n > 0 for w in result.windows for n in w.logs_by_worker.values()), detail
    # The Test button answered during every window without spending a token of the family.
    assert all(w.test_button.get("status") is True for w in result.windows), detail
    assert result.windows[-1].probes == 1, detail  # in use by then: probed, spent nothing
    assert result.ok


def test_default_settings_take_the_broker_redis_and_refresh_once_per_window(
    celery: Deployment, results: dict[str, Configuration]
) -> None:
    result = results["default"]
    _check(result, celery)
    assert result.lock_in_use is not None and result.lock_in_use.startswith(celery.redis.url.rsplit("/", 1)[0])


def test_file_lock_forced_across_worker_homes_still_refreshes_once_per_window(
    celery: Deployment, results: dict[str, Configuration]
) -> None:
    """Separate file-lock domains per home: only the Variable store's claim keeps the refresh single."""
    result = results["file"]
    _check(result, celery)
    assert result.lock_in_use == "file"
