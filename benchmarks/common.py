"""Small helpers shared by the benchmark modules: statistics, paths, child-process environment."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def ensure_repo_on_path() -> None:
    """Make ``airflow_provider_tokenrefresh.testing.herd`` and ``benchmarks`` importable (spawned children inherit it)."""
    root = str(REPO)
    if root not in sys.path:
        sys.path.insert(0, root)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    """Median of ``values``; NaN when empty."""
    return statistics.median(values) if values else math.nan


def interleaved_ns_per_op(
    variants: dict[str, tuple[Callable[[], object], int]], repeat: int = 7
) -> dict[str, dict[str, Any]]:
    """ns per call of each variant: ``repeat`` rounds, each timing every variant once in turn (so a
    change of load hits all of them alike); the median and the minimum of the rounds.

    :param variants: name -> (function, calls per round).
    """
    import timeit

    for fn, _ in variants.values():
        fn()  # warm
    per_op: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, (fn, number) in variants.items():
            per_op[name].append(timeit.Timer(fn).timeit(number) / number * 1e9)
    return {
        name: {"median_ns": median(v), "min_ns": min(v), "number": variants[name][1], "repeat": repeat}
        for name, v in per_op.items()
    }


def ratio(ours: float, peer: float) -> float | None:
    """``ours / peer``; ``None`` when undefined (peer zero or either side NaN)."""
    if peer == 0 or math.isnan(ours) or math.isnan(peer):
        return None
    return ours / peer


def child_env(airflow_home: str | None = None) -> dict[str, str]:
    """Environment for benchmark child processes: no Airflow DB, nothing written into the repo.

    Bytecode goes to a throw-away ``PYTHONPYCACHEPREFIX`` so that a child never writes a
    ``__pycache__`` next to the sources. A home made here is removed when this process exits.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    home = airflow_home
    if home is None:
        import atexit
        import shutil

        home = tempfile.mkdtemp(prefix="bench-airflow-home-")
        atexit.register(shutil.rmtree, home, ignore_errors=True)  # when the benchmark run exits
    env.update(
        {
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONPATH": str(REPO),
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    env.setdefault("PYTHONPYCACHEPREFIX", os.path.join(home, "pycache"))
    return env


def write_private_json(path: Path, payload: Any) -> None:
    """Write JSON readable by this user only (it may hold emulator tokens)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh)


def atomic_write_json(path: str, payload: Any) -> None:
    """Replace ``path`` with ``payload`` as JSON (temporary file + rename, like a careful app)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def maxrss_bytes() -> int:
    """Peak resident set size of this process in bytes (``ru_maxrss`` is KiB on Linux)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


#: Listen backlog for the emulated vendor. ``socketserver`` defaults to 5: a herd of simultaneous
#: connects then overflows the accept queue, the kernel drops SYNs and clients stall for the 1 s
#: SYN retransmit, which measures the emulator rather than either client. Real vendors queue more.
LISTEN_BACKLOG = 1024


def vendor(**options: Any) -> Any:
    """An ``OAuth2BasicEmulator`` (not started) whose listen backlog is :data:`LISTEN_BACKLOG`."""
    from airflow_provider_tokenrefresh.testing import OAuth2BasicEmulator, emulator

    emulator._Server.request_queue_size = LISTEN_BACKLOG
    return OAuth2BasicEmulator(**options)


def bytecode_cache_dir() -> str:
    """Where benchmark processes keep bytecode: outside the repo, kept between runs."""
    return os.path.join(tempfile.gettempdir(), f"tokenrefresh-bench-pycache-{os.getuid()}")


def configure_bytecode_cache() -> str:
    """Let this process and every child cache bytecode under :func:`bytecode_cache_dir`.

    With ``PYTHONDONTWRITEBYTECODE`` and no ``__pycache__`` every process would compile every
    module it imports (``import airflow.sdk`` then takes seconds), which no deployment does.
    """
    prefix = bytecode_cache_dir()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    sys.pycache_prefix = prefix
    sys.dont_write_bytecode = False
    return prefix


def run_in_child(module: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``python -m <module> OUT.json`` in a fresh interpreter and return what it wrote.

    In-process benchmarks run this way so that nothing one leaves behind in process-wide state
    (token caches, the provider's secret redactor, ``re``'s cache) affects another.
    """
    import subprocess

    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        out = Path(tmp) / "out.json"
        proc = subprocess.run(
            [sys.executable, "-W", "ignore", "-m", module, str(out)],
            env=child_env(),
            cwd=tmp,
            timeout=timeout,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{module} failed:\n{proc.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def child_main(run: Callable[[], dict[str, Any]]) -> None:
    """``if __name__ == "__main__"`` body of an in-process benchmark: ``run()`` to ``argv[1]``."""
    Path(sys.argv[1]).write_text(json.dumps(run(), default=str))


def authlib_oauth2_client() -> Any:
    """Authlib's httpx ``OAuth2Client``, without its deprecation warning.

    Authlib prefers the ``httpx2`` package and warns when it falls back to ``httpx``, and it
    installs an ``always`` filter for that warning when imported; an ``ignore`` filter added after
    it takes precedence.
    """
    import warnings

    from authlib.deprecate import AuthlibDeprecationWarning  # type: ignore[import-untyped]

    warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client  # type: ignore[import-untyped]

    return OAuth2Client


def basic_keepers(
    job: dict[str, Any], seeds: list[dict[str, str]], store: Any, lock: Any, name: Callable[[int], str],
    store_key: Callable[[str], str] = lambda conn_id: conn_id,
    on_secret: Callable[[str], object] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One ``TokenKeeper`` per seed against the job's ``oauth2_basic`` emulator, as the hook builds
    them (own ``RefreshClient`` each), sharing ``store`` and ``lock``; keyed by ``name(i)``.
    ``on_secret``: what the hook passes in a task (Airflow's ``mask_secret``, once per value)."""
    from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
    from airflow_provider_tokenrefresh.dialects import PRESETS
    from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
    from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper

    credentials = ClientCredentials(job["client_id"], job["client_secret"])
    keepers: dict[str, Any] = {}
    for i, seed in enumerate(seeds):
        conn_id = name(i)
        client = RefreshClient(
            PRESETS["oauth2_basic"],
            ClientSettings(
                base_url=job["base_url"], credentials=credentials, allow_insecure_http=True, conn_id=conn_id
            ),
        )
        keepers[conn_id] = TokenKeeper(
            store_key(conn_id),
            client,
            store,
            lock,
            Seed(seed["refresh_token"], seed["access_token"]),
            conn_id=conn_id,
            on_secret=on_secret,
        )
    return keepers


def task_stack(prefix: str, dag_file: Path) -> tuple[Path, Any]:
    """A scratch directory with ``dag_file`` in its DAG folder and an ``AirflowStack`` (not yet
    started) whose tasks can import ``benchmarks``; the caller stops it and removes the directory."""
    import shutil

    from airflow_provider_tokenrefresh.testing.stack import AirflowStack

    configure_bytecode_cache()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    (tmp / "dags").mkdir()
    shutil.copy(dag_file, tmp / "dags" / dag_file.name)
    return tmp, AirflowStack(home=tmp / "home", dags_folder=tmp / "dags", extra_env={"PYTHONPATH": str(REPO)})
