"""Import cost: what importing the provider's hook, operator and sensor adds to ``import airflow.sdk``.

Each run starts fresh interpreters with ``python -X importtime -c ...`` for three commands —
``airflow.sdk`` alone, ``airflow.sdk`` + ours, ``airflow.sdk`` + the HTTP provider's operator (the
peer) — in rotating order, and sums the cumulative column of the top-level imports. Reported per
side as the median over runs of:

* ``cross_process_ms`` — (airflow.sdk + X) minus (airflow.sdk alone) of the same run, as asked;
* ``in_process_ms`` — the top-level imports that follow ``airflow.sdk`` in the (airflow.sdk + X)
  process: the same quantity without the run-to-run noise of two processes (the goal is judged
  on this one; the cross-process spread is recorded next to it);
* ``wall_ms`` — the same difference of process wall times (startup included, noisiest).

Children get a temporary ``AIRFLOW_HOME``, ``AIRFLOW__CORE__LOAD_EXAMPLES=False`` and a
bytecode cache outside the repository, and run in a temporary directory.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, child_env, median, ratio

BASE = "airflow.sdk"
OURS = (
    "airflow_provider_tokenrefresh.hooks.tokenrefresh",
    "airflow_provider_tokenrefresh.operators.tokenrefresh",
    "airflow_provider_tokenrefresh.sensors.tokenrefresh",
)
PEER = ("airflow.providers.http.operators.http",)
RUNS = 7
GOAL_MS = 30.0


def parse_importtime(stderr: str, base: str = BASE) -> tuple[float, float]:
    """``(total, after_base)`` in ms: cumulative time of all top-level imports, and of those after ``base``."""
    total = after = 0.0
    seen_base = False
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue  # the header line
        name = fields[2]
        if len(name) - len(name.lstrip(" ")) != 1:
            continue  # nested import: already inside its parent's cumulative time
        cumulative = int(fields[1]) / 1e3
        total += cumulative
        if seen_base:
            after += cumulative
        if name.strip() == base:
            seen_base = True
    return total, after


def _measure(modules: tuple[str, ...], env: dict[str, str], cwd: str) -> dict[str, float]:
    code = "; ".join(f"import {m}" for m in (BASE, *modules))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = (time.perf_counter() - start) * 1e3
    if proc.returncode != 0:
        raise RuntimeError(f"import failed ({code}):\n{proc.stderr[-2000:]}")
    total, after = parse_importtime(proc.stderr)
    return {"total_ms": total, "after_base_ms": after, "wall_ms": wall}


def _pycache_dirs() -> set[str]:
    found: set[str] = set()
    for top in ("airflow_provider_tokenrefresh", "benchmarks", "tests"):
        found.update(str(p) for p in (REPO / top).rglob("__pycache__"))
    return found


def run(runs: int = RUNS) -> dict[str, Any]:
    """Warm once, then ``runs`` rounds of the three commands in rotating order."""
    commands: dict[str, tuple[str, ...]] = {"base": (), "ours": OURS, "peer": PEER}
    before = _pycache_dirs()
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        home = Path(tmp) / "airflow-home"
        home.mkdir()
        env = child_env(str(home))
        for modules in commands.values():  # warm: bytecode cache, filesystem cache
            _measure(modules, env, tmp)
        names = list(commands)
        for i in range(runs):
            for name in names[i % 3 :] + names[: i % 3]:
                samples[name].append(_measure(commands[name], env, tmp))
        airflow_home_files = sorted(p.name for p in home.iterdir())
    wrote_into_repo = sorted(_pycache_dirs() - before)

    def side(name: str) -> dict[str, Any]:
        pairs = list(zip(samples[name], samples["base"], strict=True))
        cross = [s["total_ms"] - b["total_ms"] for s, b in pairs]
        return {
            "cross_process_ms": median(cross),
            "cross_process_range_ms": [min(cross), max(cross)],
            "in_process_ms": median([s["after_base_ms"] for s in samples[name]]),
            "wall_ms": median([s["wall_ms"] - b["wall_ms"] for s, b in pairs]),
            "cross_process_samples_ms": [round(s["total_ms"] - b["total_ms"], 1) for s, b in pairs],
            "in_process_samples_ms": [round(s["after_base_ms"], 1) for s in samples[name]],
        }

    ours, peer = side("ours"), side("peer")
    return {
        "config": {
            "runs": runs,
            "base": BASE,
            "ours": list(OURS),
            "peer": list(PEER),
            "method": "python -X importtime -c 'import airflow.sdk; import ...' in fresh processes; "
            "sum of the cumulative column of top-level imports",
            "env": {"AIRFLOW_HOME": "<temporary>", "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
            "goal_ms": GOAL_MS,
        },
        "base_import_ms": median([b["total_ms"] for b in samples["base"]]),
        "ours": ours,
        "peer": peer,
        # Judged on the same-process figure: the difference of two processes' totals swings by
        # hundreds of ms on a busy 2-core machine (see cross_process_range_ms), far above the goal.
        "goal_under_30ms": ours["in_process_ms"] < GOAL_MS,
        "goal_judged_on": "in_process_ms",
        "ratios": {
            "cross_process": ratio(ours["cross_process_ms"], peer["cross_process_ms"]),
            "in_process": ratio(ours["in_process_ms"], peer["in_process_ms"]),
        },
        "airflow_home_files": airflow_home_files,
        "pycache_written_into_repo": wrote_into_repo,
    }
