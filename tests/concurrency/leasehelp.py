"""Keeper children for the lease tests (``test_leases.py``), driven by files, judged at the vendor.

A child is a spawned process that builds a real :class:`TokenKeeper` (client, lock and store from
a plain-data ``spec``, see :mod:`airflow_provider_tokenrefresh.testing.backends`) and runs a list of steps. The test
steers it through files only:

* ``block_at`` / ``pause_file`` / ``release_file``: the first keeper checkpoint whose name is in
  ``block_at`` writes ``pause_file`` and blocks until ``release_file`` exists (a frozen process
  that still holds whatever it held);
* a step's ``wait_for``: the step starts once that file exists; ``done_file``: written after it;
* ``ready_file``: written right before the first keeper call;
* ``trace_file``: every read of the (file) store appends a line, so the test can tell that a
  process is polling the store rather than calling the vendor.

What a child did is written as JSON to ``result_file`` (emulator tokens in clear: test data only).
It also says where ``airflow_provider_tokenrefresh`` was imported from, so a run against an
extracted old tree can prove that spawned children use that tree too.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# -- the child ------------------------------------------------------------------------------------


def _write_json(path: str, payload: Any) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def _touch(path: str, text: str = "") -> None:
    _write_json(path, text)


def _wait_file(path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)  # polling a file the test writes: the event, not a timing guess


def _record_view(record: Any) -> dict[str, Any] | None:
    if record is None:
        return None

    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    started = getattr(record, "refresh_started_at", None)
    return {
        "access_token": secret(record.access_token),
        "refresh_token": secret(record.refresh_token),
        "generation": record.generation,
        "state": record.state,
        "reason": record.reason,
        "fence": getattr(record, "fence", None),
        "refresh_started_at": started.isoformat() if started is not None else None,
    }


def _stored(spec: dict[str, Any], key: str) -> dict[str, Any]:
    """The record as a fresh store instance reads it (the store's word, not the keeper's)."""
    from airflow_provider_tokenrefresh.testing.backends import build_store

    try:
        record, _ = build_store(spec).read(key)
    except Exception as exc:
        return {"read_error": f"{type(exc).__name__}: {exc}"}
    return {"record": _record_view(record)}


def _build_store(spec: dict[str, Any], trace_file: str | None) -> Any:
    from airflow_provider_tokenrefresh.testing.backends import build_store

    if not trace_file:
        return build_store(spec)
    assert spec["store"] == "file", "tracing is for the file store"
    from airflow_provider_tokenrefresh.stores import FileTokenStore

    class TracingFileStore(FileTokenStore):
        def read(self, key: str) -> Any:
            with open(trace_file, "a", encoding="utf-8") as fh:
                fh.write("read\n")
            return super().read(key)

    return TracingFileStore(spec["store_dir"])


def child_main(cfg: dict[str, Any]) -> None:
    """Entry point of a spawned child (see the module docstring for ``cfg``)."""
    import inspect

    import airflow_provider_tokenrefresh
    from airflow_provider_tokenrefresh.errors import TokenRefreshError
    from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper
    from airflow_provider_tokenrefresh.testing.backends import build_client, build_lock

    spec: dict[str, Any] = cfg["spec"]
    result: dict[str, Any] = {
        "pid": os.getpid(),
        "module_file": airflow_provider_tokenrefresh.__file__,
        "outcomes": [],
        "checkpoints": [],
    }
    try:
        supported = inspect.signature(TokenKeeper.__init__).parameters
        kwargs: dict[str, Any] = {"lock_timeout": cfg.get("lock_timeout", 30.0), "write_backoff": 0.001}
        if cfg.get("stale_after") is not None and "stale_after" in supported:
            kwargs["stale_after"] = cfg["stale_after"]
        result["keeper_kwargs"] = kwargs
        TokenKeeper.clear_cache()
        keeper = TokenKeeper(
            cfg["key"],
            build_client(spec, timeout=cfg.get("client_timeout", 30.0), backoff_base=0.01),
            _build_store(spec, cfg.get("trace_file")),
            build_lock(spec),
            Seed(cfg["seed_refresh"]),
            conn_id="leases",
            **kwargs,
        )
        block_at = set(cfg.get("block_at") or ())
        blocked: list[str] = []

        def checkpoint(step: str) -> None:
            result["checkpoints"].append(step)
            if step in block_at and not blocked:
                blocked.append(step)
                _touch(cfg["pause_file"], step)
                _wait_file(cfg["release_file"])

        keeper.checkpoint = checkpoint
        if cfg.get("ready_file"):
            _touch(cfg["ready_file"])
        for step in cfg["steps"]:
            if step.get("wait_for"):
                _wait_file(step["wait_for"])
            outcome: dict[str, Any] = {"call": step["call"], "force": step.get("force", False)}
            try:
                if step["call"] == "get_valid_token":
                    record = keeper.get_valid_token(min_ttl=step.get("min_ttl", 300.0))
                else:
                    record = keeper.refresh(force=step.get("force", False)).record
                outcome.update(ok=True, **(_record_view(record) or {}))
            except Exception as exc:
                outcome.update(
                    ok=False,
                    error_type=type(exc).__name__,
                    kind=getattr(exc, "kind", None),
                    provider_error=isinstance(exc, TokenRefreshError),
                    message=str(exc)[:600],
                )
            outcome["stored_after"] = _stored(spec, cfg["key"])
            result["outcomes"].append(outcome)
            if step.get("done_file"):
                _write_json(cfg["result_file"] + ".partial", result)
                _touch(step["done_file"])
    except Exception as exc:  # setup failed: say so instead of dying silently
        result["setup_error"] = f"{type(exc).__name__}: {exc}"
    _write_json(cfg["result_file"], result)


# -- the test side ---------------------------------------------------------------------------------


def spawn(cfg: dict[str, Any]) -> multiprocessing.process.BaseProcess:
    """Start a child in a fresh interpreter (spawn: nothing inherited but sys.path and environ)."""
    proc = multiprocessing.get_context("spawn").Process(target=child_main, args=(cfg,), daemon=True)
    proc.start()
    return proc


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def finish(proc: multiprocessing.process.BaseProcess, timeout: float = 60.0) -> None:
    """Wait for a child; a frozen one is continued first; one still alive is killed by its PID."""
    if proc.pid is None:
        return
    if proc.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
    proc.join(timeout)
    if proc.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)


def read_result(path: str | Path) -> dict[str, Any]:
    """The child's JSON report (``{}`` when it wrote none)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
    except FileNotFoundError:
        return {}
    return data


def presented(emu: Any) -> list[str]:
    """The refresh token of every request the vendor received, in order (form body)."""
    return [(req.form().get("refresh_token") or [""])[0] for req in emu.requests]


def vendor_figures(emu: Any, seed: str) -> dict[str, Any]:
    """What the vendor saw, without a token in it: safe for an assertion message."""
    tokens = presented(emu)
    labels: dict[str, str] = {seed: "seed"}
    for token in tokens:
        labels.setdefault(token, f"rt{len(labels)}")
    return {
        "refresh_requests": emu.refresh_requests,
        "presented": [labels[t] for t in tokens],
        "presented_twice": sorted(labels[t] for t, n in Counter(tokens).items() if n > 1),
        "families_revoked": emu.families_revoked,
        "counters": {k: v for k, v in sorted(emu.counters.items()) if k != "issued"},
    }


def count_lines(path: str | Path) -> int:
    """Lines in a trace file (0 when it does not exist yet)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0
