"""One chaos process: a real keeper on a real store and lock, a fault, the token used at the vendor.

Forked by the runner (the package, httpx, hvac, boto3, redis and psycopg are imported once in
the parent). ``cfg`` is plain data; ``conn`` is this child's end of a pipe to the runner (events
out, "go" in); ``holder_dead`` is set by the runner once a waiter's holder is dead (see
:func:`_clock`). What the child did is written as JSON to ``cfg["result"]``: its outcome, the
digest of the access token it was handed, the sample API's answer to it, and the wall-clock time at
which each rotated record's write was acknowledged by the store (``acks``). Tokens are test data,
but the report holds digests only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
from datetime import timedelta
from typing import Any


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _write_json(path: str, payload: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class WatchedStore:
    """The real store, with the chaos hooks around it: acknowledged writes are timed, store faults
    injected, and a waiter tells the runner when it first reads someone else's intent."""

    def __init__(self, inner: Any, cfg: dict[str, Any], conn: Any, result: dict[str, Any]) -> None:
        self._inner = inner
        self._cfg = cfg
        self._conn = conn
        self._result = result
        self._answer_writes = 0
        self._told = False
        #: Set at the keeper's ``after_answer`` step: only then is a write without an intent the
        #: vendor's answer. Before it, such a write is a claim being withdrawn (the Variable store's
        #: settle found the claim too slow), which store faults must not hit.
        self.answered = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def read(self, key: str) -> Any:
        record, version = self._inner.read(key)
        if self._cfg.get("tell_intent") and not self._told and record is not None and record.intent_id:
            self._told = True
            self._conn.send(("saw_intent", None))
        return record, version

    def write(self, key: str, record: Any, expected_version: Any) -> Any:
        answer = record.intent_id is None and record.refresh_started_at is None
        fault = self._cfg.get("store_fault")
        if answer and self.answered:
            self._answer_writes += 1
            if fault == "fail_always" or (fault == "fail_once" and self._answer_writes == 1):
                raise OSError("injected: store unavailable")
            if fault == "torn":
                return self._torn(key, record, expected_version)
        version = self._inner.write(key, record, expected_version)
        if answer and record.access_token is not None:
            self._result["acks"].append([digest(record.access_token.get_secret_value()), time.time()])
        return version

    def _torn(self, key: str, record: Any, expected_version: Any) -> Any:
        """Run the real write with a SIGKILL inside it (never returns)."""
        store = self._cfg["spec"]["store"]
        if store == "file":
            if self._cfg["torn_variant"] == "partial":
                # The store writes its temporary file with os.write (then fsync, then rename): half
                # of the payload reaches the disk, then the writer dies.
                real_write = os.write

                def half_then_killed(fd: int, data: Any) -> int:
                    real_write(fd, bytes(data)[: len(data) // 2])
                    os.fsync(fd)
                    _die()
                    return 0

                os.write = half_then_killed  # type: ignore[assignment]
            else:
                os.replace = lambda *a, **k: _die()  # type: ignore[assignment]
        elif store == "aws":
            self._inner.client.update_secret_version_stage = lambda **kw: _die()
        elif store == "variable":
            self._torn_variable(key, record)
        elif store == "vault":
            kv = self._inner.client.secrets.kv.v2
            real = kv.create_or_update_secret

            def applied_then_killed(**kw: Any) -> Any:
                real(**kw)
                _die()

            kv.create_or_update_secret = applied_then_killed
        self._inner.write(key, record, expected_version)
        raise AssertionError("the torn write returned")

    def _torn_variable(self, key: str, record: Any) -> None:
        """Arm the Variable store's torn write: ``uncommitted`` kills inside ``Variable.set``'s
        transaction, after its upsert ran and before COMMIT, once the writer's own session has shown
        the new value in the table (written to ``<result>.torn`` before the kill); ``before_echo``
        lets ``Variable.set`` commit and kills before the store reads the value back."""
        inner = self._inner
        evidence_path = f"{self._cfg['result']}.torn"
        if self._cfg["torn_variant"] == "uncommitted":
            import airflow.models.variable as variable_module
            from sqlalchemy import select

            real_session = variable_module.create_session
            Variable = variable_module.Variable
            raw = record.to_storage_json()

            @contextlib.contextmanager
            def killed_before_commit() -> Any:
                with real_session() as session:
                    yield session  # Variable.set runs its upsert here; its COMMIT is on exit
                    row = session.execute(select(Variable).where(Variable.key == key)).scalar_one()
                    _write_json(evidence_path, {"uncommitted_upsert_in_table": row.val == raw})
                    _die()

            variable_module.create_session = killed_before_commit  # type: ignore[assignment]
        else:
            real_set = inner._set_raw

            def committed_then_killed(k: str, value: str) -> None:
                real_set(k, value)
                _write_json(evidence_path, {"committed_before_kill": True})
                _die()

            inner._set_raw = committed_then_killed


def _use(url: str, access: str) -> int:
    """GET the vendor's protected sample API with the access token; its HTTP status. (urllib: an
    httpx client would build a TLS context per process, 0.1-0.2 s each, for a plain-http call.)"""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {access}"})
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy
        with opener.open(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _clock(offset: float, holder_dead: Any, stale_after: float) -> Any:
    """The keeper's wall clock, ``offset`` seconds ahead (each run of a round is later than the one
    before by more than the stale bound). Once the runner has seen a waiter's holder dead, the
    waiter's clock moves past the bound too: the waiting a real waiter would do, without the wait."""
    from airflow_provider_tokenrefresh.tokens import utcnow

    base = timedelta(seconds=offset)
    jump = timedelta(seconds=stale_after + 1)

    def now() -> Any:
        return utcnow() + base + (jump if holder_dead.is_set() else timedelta(0))

    return now


def _install_signal_handlers() -> Any:
    """As in a task process: SIGTERM raises AirflowTaskTerminated (Airflow 2's task runner, most
    operator harnesses), SIGALRM is execution_timeout's own handler (Airflow's TimeoutPosix),
    SIGINT is Python's KeyboardInterrupt (the first step of the supervisor's escalation)."""
    from airflow.sdk.exceptions import AirflowTaskTerminated
    from airflow.sdk.execution_time.timeout import TimeoutPosix

    def on_term(signum: int, frame: Any) -> None:
        raise AirflowTaskTerminated("Task received SIGTERM signal")

    signal.signal(signal.SIGTERM, on_term)
    # Python's own SIGINT handler, even when started in the background (a non-interactive shell
    # starts background jobs with SIGINT ignored, and Python then keeps it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return TimeoutPosix(seconds=600, error_message="execution_timeout")


def _configure_airflow(env: dict[str, str]) -> None:
    """Point this forked process's Airflow at the Variable store's metadata database.

    The parent imported Airflow (and read its configuration) before the run's database existed; the
    ORM engine it set up was disposed in this child at fork (Airflow's at-fork hook). Configuration
    values come from the environment on every lookup: set it, then rebuild the engine and forget
    the cached Fernet."""
    os.environ.update(env)
    from airflow import settings
    from airflow.models.crypto import get_fernet

    settings.configure_vars()
    settings.configure_orm()
    get_fernet.cache_clear()


def child_main(cfg: dict[str, Any], conn: Any, holder_dead: Any) -> None:
    from airflow_provider_tokenrefresh.errors import TokenRefreshError
    from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper
    from airflow_provider_tokenrefresh.testing.backends import build_client, build_lock, build_store

    result: dict[str, Any] = {"pid": os.getpid(), "acks": [], "outcome": None}
    try:
        spec = cfg["spec"]
        TokenKeeper.clear_cache()
        TokenKeeper._unsaved.clear()
        if spec["store"] == "variable":
            _configure_airflow(spec["airflow_env"])
        store = WatchedStore(build_store(spec), cfg, conn, result)
        keeper = TokenKeeper(
            cfg["key"],
            build_client(spec, timeout=cfg["client_timeout"], backoff_base=0.01),
            store,
            build_lock(spec),
            Seed(cfg["seed"]),
            conn_id="chaos",
            write_backoff=0.001,
            lock_timeout=20,
            stale_after=cfg["stale_after"],
            settle=cfg.get("settle"),
            reuse_grace=cfg.get("reuse_grace", 0.0),
            clock=_clock(cfg["clock_offset"], holder_dead, cfg["stale_after"]),
        )

        def checkpoint(step: str) -> None:
            if step == "after_answer":
                store.answered = True
            if step == cfg.get("kill_at"):
                _die()
            if step == cfg.get("pause_at"):
                conn.send(("paused", step))
                conn.recv()

        keeper.checkpoint = checkpoint
        timer = _install_signal_handlers()
        try:
            with timer:
                conn.send(("started", None))
                record = keeper.refresh(force=True).record
        except TokenRefreshError as exc:
            result["outcome"] = f"error:{exc.kind}"
        except (KeyboardInterrupt, Exception) as exc:
            from airflow.sdk.exceptions import AirflowTaskTerminated, AirflowTaskTimeout

            if isinstance(exc, (KeyboardInterrupt, AirflowTaskTerminated, AirflowTaskTimeout)):
                result["outcome"] = "terminated"
                result["terminated_by"] = type(exc).__name__
            else:
                result["outcome"] = f"crash:{type(exc).__name__}"
        except BaseException as exc:  # AirflowTaskTerminated / AirflowTaskTimeout are BaseExceptions
            result["outcome"] = "terminated"
            result["terminated_by"] = type(exc).__name__
        else:
            assert record.access_token is not None
            access = record.access_token.get_secret_value()
            result["outcome"] = "token"
            result["generation"] = record.generation
            result["access"] = digest(access)
            # Use what we were handed, at the vendor's protected API.
            result["sample_status"] = _use(cfg["sample_url"], access)
        keeper.close()
    except BaseException as exc:  # setup failed: say so instead of dying silently
        result["outcome"] = f"crash:{type(exc).__name__}"
        result["detail"] = str(exc)[:300]
    _write_json(cfg["result"], result)
