"""One contract for every refresh lock (file, redis, postgres), proven across spawned processes.

Contending processes are started with the ``spawn`` method, so each has its own interpreter, its
own lock object and its own connection to the lock server, as Airflow workers do. Processes
coordinate through multiprocessing Events and Barriers; the only sleeps wait for a lease TTL to
pass or widen a race window inside the lock.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_tokenrefresh.errors import LockTimeout
from airflow_provider_tokenrefresh.locks import RefreshLock

CTX = multiprocessing.get_context("spawn")
KINDS = ["file", "redis", "postgres"]
# Generous: a spawned interpreter on a loaded 2-core machine can take seconds to start.
JOIN_TIMEOUT = 120.0
EVENT_TIMEOUT = 120.0
# Redis leases: a holder renews every ttl / 3, so a renewal may run up to 2/3 ttl late before the
# lease is lost. The contract tests hold locks for as long as the test needs them (10 s, renewal
# slack ~6.7 s); the tests that must see a lease run out use 4 s (slack ~2.7 s), never under a
# second: a spawned process on a loaded 2-core machine can be descheduled that long.
REDIS_TTL = 10.0
REDIS_SHORT_TTL = 4.0


@dataclass(frozen=True)
class LockSpec:
    """Everything a spawned process needs to build its own copy of the lock under test."""

    kind: str
    target: str  # lock directory, Redis URL or libpq conninfo
    options: dict[str, Any] = field(default_factory=dict)

    def with_options(self, **options: Any) -> LockSpec:
        return replace(self, options={**self.options, **options})

    def build(self) -> RefreshLock:
        lock = self._build()
        _BUILT.append(lock)
        return lock

    def _build(self) -> RefreshLock:
        if self.kind == "file":
            from airflow_provider_tokenrefresh.locks.file import FileRefreshLock

            return FileRefreshLock(self.target, **self.options)
        if self.kind == "redis":
            from airflow_provider_tokenrefresh.locks.redis import RedisRefreshLock

            return RedisRefreshLock(self.target, **self.options)
        if self.kind == "postgres":
            from airflow_provider_tokenrefresh.locks.postgres import PostgresRefreshLock

            return PostgresRefreshLock(self.target, **self.options)
        raise AssertionError(self.kind)


#: Locks built in this process, closed after each test (a Redis lock owns its client's sockets).
_BUILT: list[RefreshLock] = []


@pytest.fixture(autouse=True)
def _close_built_locks() -> Iterator[None]:
    yield
    while _BUILT:
        close = getattr(_BUILT.pop(), "close", None)
        if close is not None:
            close()


# -- what the spawned processes run ------------------------------------------------------------------


def count_under_lock(spec: LockSpec, key: str, workdir: str, rounds: int, start: Any) -> None:
    """Increment a shared counter non-atomically under the lock; record any overlap and fencing."""
    lock = spec.build()
    work = Path(workdir)
    start.wait(EVENT_TIMEOUT)
    for _ in range(rounds):
        with lock.hold(key, 60) as lease:
            try:
                fd = os.open(work / "holder", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                with open(work / "overlaps", "a") as f:
                    f.write(f"{os.getpid()}\n")
                fd = -1
            value = int((work / "counter").read_text())
            time.sleep(0.005)  # widen the read-modify-write window a racing holder would hit
            (work / "counter").write_text(str(value + 1))
            with open(work / "fences", "a") as f:
                f.write(f"{lease.fencing}\n")
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(work / "holder")


def hold_until_told(
    spec: LockSpec, key: str, held: Any, release: Any, releasing: Any, fencing: Any, lost: Any
) -> None:
    """Take the lock, say so, keep it until told to let go; report fencing and lease loss."""
    lock = spec.build()
    with lock.hold(key, 60) as lease:
        fencing.value = -1 if lease.fencing is None else lease.fencing
        held.set()
        if not release.wait(EVENT_TIMEOUT):
            raise AssertionError("never told to release")
        releasing.set()
    lost.value = int(bool(getattr(lease, "lease_lost", False)))


def wait_for_lock(
    spec: LockSpec, key: str, waiting: Any, releasing: Any, acquired_after_release: Any
) -> None:
    """Find the lock taken, then wait (bounded) for it; record whether its holder had let go by then."""
    lock = spec.build()
    try:
        with lock.hold(key, 0.2):
            acquired_after_release.value = 2  # it was not taken at all
            waiting.set()
            return
    except LockTimeout:
        pass
    waiting.set()
    with lock.hold(key, 60):
        acquired_after_release.value = int(releasing.is_set())


def take_once(spec: LockSpec, key: str, fencing: Any) -> None:
    """Take and release the lock once, reporting the fencing number."""
    with spec.build().hold(key, 60) as lease:
        fencing.value = -1 if lease.fencing is None else lease.fencing


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> LockSpec:
    """The lock under test; only the server it needs is started."""
    kind: str = request.param
    if kind == "file":
        return LockSpec("file", str(tmp_path / "locks"))
    if kind == "redis":
        return LockSpec(
            "redis", request.getfixturevalue("redis_server"), {"ttl": REDIS_TTL, "poll_interval": 0.01}
        )
    return LockSpec("postgres", request.getfixturevalue("postgres_server"))


@pytest.fixture
def redis_spec(redis_server: str) -> LockSpec:
    return LockSpec("redis", redis_server, {"ttl": REDIS_TTL, "poll_interval": 0.01})


@pytest.fixture
def key() -> str:
    """A key no other test uses (the servers are shared by the session)."""
    return f"conn-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def spawn() -> Iterator[Any]:
    """Start spawned processes; any still alive after the test is continued and killed."""
    started: list[Any] = []

    def start(target: Any, *args: Any) -> Any:
        process = CTX.Process(target=target, args=args, daemon=True)
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
                os.kill(process.pid, signal.SIGKILL)
        process.join(10)


def joined(process: Any) -> int:
    process.join(JOIN_TIMEOUT)
    assert not process.is_alive(), "worker process hung"
    return int(process.exitcode)


class Holder:
    """A spawned process holding the lock until told to release it."""

    def __init__(self, spawn: Any, spec: LockSpec, key: str) -> None:
        self.held, self.release, self.releasing = CTX.Event(), CTX.Event(), CTX.Event()
        self.fencing, self.lost = CTX.Value("q", 0), CTX.Value("i", -1)
        self.process = spawn(
            hold_until_told, spec, key, self.held, self.release, self.releasing, self.fencing, self.lost
        )
        assert self.held.wait(EVENT_TIMEOUT), "holder never took the lock"

    def finish(self) -> None:
        self.release.set()
        assert joined(self.process) == 0


# -- the contract ---------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_mutual_exclusion_across_processes(spec: LockSpec, key: str, tmp_path: Path, spawn: Any) -> None:
    workers, rounds = 4, 6
    work = tmp_path / "work"
    work.mkdir()
    (work / "counter").write_text("0")
    start = CTX.Barrier(workers)
    processes = [spawn(count_under_lock, spec, key, str(work), rounds, start) for _ in range(workers)]
    assert [joined(p) for p in processes] == [0] * workers
    assert not (work / "overlaps").exists(), "two processes held the lock at once"
    assert int((work / "counter").read_text()) == workers * rounds  # no lost update
    fences = (work / "fences").read_text().split()
    assert len(fences) == workers * rounds
    if spec.kind == "redis":
        numbers = [int(f) for f in fences]
        assert numbers == sorted(set(numbers)), "fencing numbers must strictly increase with acquisitions"
    else:
        assert set(fences) == {"None"}


@pytest.mark.timeout(120)
def test_bounded_wait_raises_lock_timeout(spec: LockSpec, key: str, spawn: Any) -> None:
    holder = Holder(spawn, spec, key)
    lock = spec.build()
    timeout = 1.5
    started = time.monotonic()
    with pytest.raises(LockTimeout) as info:
        with lock.hold(key, timeout):
            pytest.fail("took a lock another process holds")
    elapsed = time.monotonic() - started
    assert elapsed >= timeout * 0.9, f"gave up early after {elapsed:.2f}s"
    assert elapsed < timeout + 10, f"waited {elapsed:.2f}s, far past the {timeout}s timeout"
    message = str(info.value)
    assert repr(key) in message
    assert "No refresh was attempted" in message
    assert spec.target not in message  # neither the lock server address nor any credential in it
    assert info.value.kind == "lock_timeout" and info.value.retryable
    # A zero timeout makes exactly one attempt (for postgres: lock_timeout=0 would wait forever).
    started = time.monotonic()
    with pytest.raises(LockTimeout):
        with lock.hold(key, 0):
            pytest.fail("took a lock another process holds")
    assert time.monotonic() - started < 10
    holder.finish()
    with lock.hold(key, 0) as lease:  # free again: one attempt is enough
        assert lease.key == key


@pytest.mark.timeout(120)
def test_release_lets_the_next_waiter_in(spec: LockSpec, key: str, spawn: Any) -> None:
    holder = Holder(spawn, spec, key)
    waiting, acquired_after_release = CTX.Event(), CTX.Value("i", -1)
    waiter = spawn(wait_for_lock, spec, key, waiting, holder.releasing, acquired_after_release)
    assert waiting.wait(EVENT_TIMEOUT)
    assert acquired_after_release.value != 2, "the waiter found the held lock free"
    if spec.kind == "postgres":
        # The server shows the waiter queued behind the holder: release while it really waits.
        wait_until_postgres_has_a_waiter(spec.target)
    holder.finish()
    assert joined(waiter) == 0
    assert acquired_after_release.value == 1, "the waiter got the lock before the holder let go"


@pytest.mark.timeout(120)
def test_killed_holder_does_not_leave_the_lock_stuck(spec: LockSpec, key: str, spawn: Any) -> None:
    if spec.kind == "redis":
        spec = spec.with_options(ttl=REDIS_SHORT_TTL)
    holder = Holder(spawn, spec, key)
    os.kill(holder.process.pid, signal.SIGKILL)
    assert joined(holder.process) == -signal.SIGKILL
    died = time.monotonic()
    lock = spec.build()
    if spec.kind == "redis":
        # Nobody can release a dead holder's lease: right after its death the lock is still taken ...
        with pytest.raises(LockTimeout):
            with lock.hold(key, 0):
                pytest.fail("a dead holder's redis lease vanished before its ttl ran out")
    with lock.hold(key, 60):
        waited = time.monotonic() - died
    if spec.kind == "redis":
        # ... and it runs out by itself within its ttl (plus slack for a loaded machine).
        assert waited < REDIS_SHORT_TTL + 10, f"lock stayed taken {waited:.2f}s after its holder died"
    else:
        # flock and advisory locks die with their holder's file descriptor / session.
        assert waited < 5, f"lock stayed taken {waited:.2f}s after its holder died"


def wait_until_postgres_has_a_waiter(conninfo: str) -> None:
    import psycopg

    deadline = time.monotonic() + EVENT_TIMEOUT
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.01)  # polls observable server state; it does not stand in for it
    raise AssertionError("the waiter never queued for the advisory lock")


# -- what only Redis promises ------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_redis_fencing_strictly_increases(redis_spec: LockSpec, key: str, spawn: Any) -> None:
    lock = redis_spec.build()
    numbers: list[int] = []
    for _ in range(3):
        with lock.hold(key, 10) as lease:
            assert lease.fencing is not None
            numbers.append(lease.fencing)
        fencing = CTX.Value("q", 0)
        assert joined(spawn(take_once, redis_spec, key, fencing)) == 0
        numbers.append(fencing.value)
    assert numbers == sorted(set(numbers)), numbers
    # A different key counts on its own and does not disturb this one.
    with lock.hold(key + "-other", 10) as other:
        assert other.fencing == 1
    with lock.hold(key, 10) as lease:
        assert lease.fencing == numbers[-1] + 1


@pytest.mark.timeout(120)
def test_redis_renewal_keeps_the_lock_past_its_ttl(redis_spec: LockSpec, key: str, spawn: Any) -> None:
    ttl = REDIS_SHORT_TTL
    spec = redis_spec.with_options(ttl=ttl)
    holder = Holder(spawn, spec, key)  # returns once the holder says it took the lock
    lock = spec.build()
    started = time.monotonic()
    with pytest.raises(LockTimeout):
        with lock.hold(key, 2.25 * ttl):  # past two ttls: only renewal keeps the holder's lease alive
            pytest.fail("the held lease expired while its holder was alive")
    assert time.monotonic() - started >= 2 * ttl
    assert lock.client.pttl(lock.lock_key(key)) > 0  # still there, with an expiry (renewed, not made eternal)
    holder.finish()
    assert holder.lost.value == 0, "the holder wrongly believes it lost its lease"
    with lock.hold(key, 10) as lease:
        assert lease.fencing == holder.fencing.value + 1


@pytest.mark.timeout(120)
def test_redis_stale_holder_never_releases_the_new_holders_lock(
    redis_spec: LockSpec, key: str, spawn: Any
) -> None:
    spec = redis_spec.with_options(ttl=REDIS_SHORT_TTL)
    holder = Holder(spawn, spec, key)
    lock = spec.build()
    # Freeze the holder (a GC pause, a stopped VM): its renewal stops and the lease runs out.
    os.kill(holder.process.pid, signal.SIGSTOP)
    try:
        with lock.hold(key, 30) as lease:
            assert lease.fencing is not None and lease.fencing > holder.fencing.value
            # Thaw the stale holder and let it "release": its compare-and-delete must not touch ours.
            os.kill(holder.process.pid, signal.SIGCONT)
            holder.finish()
            assert holder.lost.value == 1, "the stale holder was not told it lost its lease"
            with pytest.raises(LockTimeout):
                with spec.build().hold(key, 0.5):
                    pytest.fail("the stale holder's release deleted the new holder's lock")
            assert not getattr(lease, "lease_lost", True)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder.process.pid, signal.SIGCONT)


def test_redis_lease_lost_when_the_lock_disappears(redis_spec: LockSpec, key: str) -> None:
    from airflow_provider_tokenrefresh.locks.redis import RedisRefreshLock

    lock = redis_spec.with_options(ttl=REDIS_SHORT_TTL).build()
    assert isinstance(lock, RedisRefreshLock)
    with lock.hold(key, 10) as lease:
        assert not lease.lease_lost
        lock.client.delete(lock.lock_key(key))  # an operator, or a Redis failover, drops it
        # The next renewal (within ttl / 3, late on a loaded machine) finds it gone and says so.
        assert lease.lost.wait(EVENT_TIMEOUT), "renewal did not notice the lock was gone"
    assert lease.lease_lost


# -- building locks from Airflow connections -----------------------------------------------------------


def test_redis_from_connection(redis_server: str, key: str) -> None:
    from airflow_provider_tokenrefresh.locks.redis import RedisRefreshLock

    port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    conn = SimpleNamespace(
        host="127.0.0.1", port=port, login=None, password=None, extra_dejson={"db": "3", "ssl": "false"}
    )
    lock = RedisRefreshLock.from_connection(conn, ttl=2.0)
    assert isinstance(lock, RefreshLock) and lock.name == "redis"
    kwargs = lock.client.connection_pool.connection_kwargs
    assert kwargs["db"] == 3 and kwargs["socket_timeout"] == 10
    with lock.hold(key, 5) as lease:
        assert lease.fencing == 1
        assert lock.client.get(lock.lock_key(key)) is not None
    assert lock.client.get(lock.lock_key(key)) is None


def test_postgres_from_connection(postgres_server: str, key: str) -> None:
    from airflow_provider_tokenrefresh.locks.postgres import PostgresRefreshLock

    port = int(postgres_server.split("port=")[1].split()[0])
    conn = SimpleNamespace(
        host="127.0.0.1",
        port=port,
        login="postgres",
        password="",
        schema="postgres",
        extra_dejson={"sslmode": "disable", "connect_timeout": 5, "unrelated": "x"},
    )
    lock = PostgresRefreshLock.from_connection(conn)
    assert isinstance(lock, RefreshLock) and lock.name == "postgres"
    assert lock.connect_timeout == 5
    assert lock.connect_kwargs["sslmode"] == "disable" and "unrelated" not in lock.connect_kwargs
    with lock.hold(key, 5) as lease:
        assert lease.fencing is None
        other = PostgresRefreshLock(postgres_server)
        with pytest.raises(LockTimeout):
            with other.hold(key, 0.2):
                pytest.fail("advisory lock not exclusive")


def test_postgres_lock_id_is_a_stable_signed_64_bit_number() -> None:
    from airflow_provider_tokenrefresh.locks.postgres import PostgresRefreshLock

    lock = PostgresRefreshLock("")
    ids = {lock.lock_id(f"conn-{i}") for i in range(1000)}
    assert len(ids) == 1000
    assert all(-(2**63) <= i < 2**63 for i in ids)
    assert any(i < 0 for i in ids)
    assert lock.lock_id("a") == PostgresRefreshLock("", namespace="tokenrefresh").lock_id("a")
    assert lock.lock_id("a") != PostgresRefreshLock("", namespace="other").lock_id("a")


def test_unreachable_servers_give_lock_timeout(key: str) -> None:
    from airflow_provider_tokenrefresh.locks.postgres import PostgresRefreshLock
    from airflow_provider_tokenrefresh.locks.redis import RedisRefreshLock
    from tests.servers_locks import free_port

    port = free_port()  # nothing listens there
    locks: list[RefreshLock] = [
        RedisRefreshLock(f"redis://:hunter2@127.0.0.1:{port}/0", poll_interval=0.05),
        PostgresRefreshLock(f"postgresql://postgres:hunter2@127.0.0.1:{port}/postgres", poll_interval=0.05),
    ]
    for lock in locks:
        started = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            with lock.hold(key, 1.0):
                pytest.fail("no server, yet the lock was taken")
        assert time.monotonic() - started < 30
        assert "could not be reached" in str(info.value) and "hunter2" not in str(info.value)
