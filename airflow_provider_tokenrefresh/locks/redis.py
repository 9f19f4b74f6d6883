"""A per-connection lock in Redis: any number of machines that reach the same Redis server.

The lock is a key holding a random owner token, set with ``SET key owner NX PX ttl``. It expires
by itself, so a holder that dies (or loses its network) frees it after at most ``ttl`` seconds;
a live holder renews it from a background thread every ``ttl / 3`` so a slow refresh keeps it.

Every acquisition also increments a per-key counter (``<prefix><key>:fence``) and hands the new
value out as ``lease.fencing``. A holder that stalled past its lease (a long GC pause, a stopped
VM) may still believe it holds the lock while a newer holder refreshes; stores that check the
fencing number reject the stale holder's write. The lease also says when renewal found the lock
taken by someone else (:attr:`RedisLease.lease_lost`).

Release and renewal are Lua scripts that compare the owner token first, so a holder whose lease
expired never deletes or extends the lock of the process that took it over.

The counter lives in Redis: a Redis that loses its data (no persistence, failover to a replica
that missed the last writes) restarts it, so fencing numbers are only as durable as Redis is.
Both keys of a lock must be on one node; Redis Cluster is not supported.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_tokenrefresh.errors import LockTimeout
from airflow_provider_tokenrefresh.locks import Lease

if TYPE_CHECKING:
    from collections.abc import Iterator

    from redis import Redis
    from redis.commands.core import Script

log = logging.getLogger(__name__)

# Take the lock and draw a fencing number in one step, so no crash or lost reply can leave a lock
# without a number. The second branch makes a retried call idempotent: when the reply to an earlier
# attempt was lost (redis-py retries on connection errors), the key already holds our token.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return redis.call('incr', KEYS[2])
end
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('pexpire', KEYS[1], ARGV[2])
    return redis.call('incr', KEYS[2])
end
return false
"""

# Extend only our own lease: after an expiry someone else's token may be there.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

# Delete only our own lease, for the same reason.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class RedisLease(Lease):
    """A :class:`~airflow_provider_tokenrefresh.locks.Lease` that knows when it was lost.

    ``lost`` is set when renewal or release found the lock held by another owner (our lease
    expired first), or when renewal could not reach Redis for a whole ``ttl``. From then on
    another process may be refreshing; the ``fencing`` number is what protects the store.
    """

    lost: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    @property
    def lease_lost(self) -> bool:
        """Whether the lock may have passed to another holder while this lease was in use."""
        return self.lost.is_set()


class RedisRefreshLock:
    """``SET NX PX`` lock with owner-checked renewal and release, and a fencing counter.

    :param client: a ``redis.Redis`` client, or a ``redis://`` / ``rediss://`` URL to build one.
    :param ttl: lease length in seconds; a dead holder blocks others for at most this long.
    :param prefix: prepended to every key this lock writes.
    :param poll_interval: how often a waiter retries the ``SET NX``.
    """

    name = "redis"

    def __init__(
        self,
        client: Redis | str,
        *,
        ttl: float = 30.0,
        prefix: str = "tokenrefresh:lock:",
        poll_interval: float = 0.05,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._owns_client = isinstance(client, str)
        if isinstance(client, str):
            import redis

            client = redis.Redis.from_url(client, socket_timeout=10, socket_connect_timeout=10)
        self.client: Redis = client
        self.ttl = ttl
        self.lease_ttl = ttl
        kwargs = client.connection_pool.connection_kwargs
        ssl = "SSL" in getattr(client.connection_pool, "connection_class", object).__name__
        scheme = "rediss" if ssl else "redis"
        self.identity = (
            f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        )
        self.prefix = prefix
        self.poll_interval = poll_interval
        # register_script makes no call to the server; the scripts load on first use (EVALSHA,
        # falling back to EVAL after a server restart emptied the script cache).
        self._acquire: Script = client.register_script(_ACQUIRE)
        self._renew: Script = client.register_script(_RENEW)
        self._release: Script = client.register_script(_RELEASE)

    @classmethod
    def from_connection(
        cls,
        conn: Any,
        *,
        ttl: float = 30.0,
        prefix: str = "tokenrefresh:lock:",
        poll_interval: float = 0.05,
    ) -> RedisRefreshLock:
        """Build the lock from an Airflow Connection (or anything with the same attributes).

        Uses ``host``, ``port`` (default 6379), ``login`` (ACL user name) and ``password``, and
        from the extra: ``db``, ``ssl``, ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``,
        ``ssl_keyfile``, ``ssl_check_hostname``, ``socket_timeout``, ``socket_connect_timeout``
        (both 10 s by default, so a hung server cannot block a refresh forever).
        """
        import redis

        extra: dict[str, Any] = dict(getattr(conn, "extra_dejson", None) or {})
        kwargs: dict[str, Any] = {
            "host": conn.host or "localhost",
            "port": int(conn.port or 6379),
            "db": int(extra.get("db", 0)),
            "username": getattr(conn, "login", None) or None,
            "password": conn.password or None,
            "socket_timeout": float(extra.get("socket_timeout", 10)),
            "socket_connect_timeout": float(extra.get("socket_connect_timeout", 10)),
        }
        if _truthy(extra.get("ssl", False)):
            kwargs["ssl"] = True
            for name in ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                if extra.get(name) is not None:
                    kwargs[name] = extra[name]
            if "ssl_check_hostname" in extra:
                kwargs["ssl_check_hostname"] = _truthy(extra["ssl_check_hostname"])
        lock = cls(redis.Redis(**kwargs), ttl=ttl, prefix=prefix, poll_interval=poll_interval)
        lock._owns_client = True
        return lock

    def close(self) -> None:
        """Close the connection pool, when this lock made the client."""
        if self._owns_client:
            self.client.close()

    def lock_key(self, key: str) -> str:
        """The Redis key holding the owner token of ``key``'s lock."""
        return self.prefix + key

    def fence_key(self, key: str) -> str:
        """The Redis key counting acquisitions of ``key``'s lock."""
        return self.prefix + key + ":fence"

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[RedisLease]:
        """Take the lock within ``timeout`` seconds or raise :class:`LockTimeout`.

        While held, a daemon thread renews the lease every ``ttl / 3``; the yielded
        :class:`RedisLease` reports whether the lease was lost meanwhile.
        """
        import redis

        lock_key, fence_key = self.lock_key(key), self.fence_key(key)
        owner = secrets.token_hex(16)
        ttl_ms = max(1, round(self.ttl * 1000))
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            try:
                fencing = self._acquire(keys=[lock_key, fence_key], args=[owner, ttl_ms])
            except redis.RedisError as exc:
                # An unreachable server is waited out like a busy lock: it may be restarting.
                fencing, last_error = None, exc
            else:
                last_error = None
                if fencing is not None:
                    break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if last_error is not None:
                    raise LockTimeout(
                        f"could not take the redis refresh lock for {key!r} within {timeout:g}s: "
                        f"the lock server could not be reached ({type(last_error).__name__}). "
                        "No refresh was attempted."
                    ) from last_error
                raise LockTimeout(
                    f"could not take the redis refresh lock for {key!r} within {timeout:g}s; "
                    "another process is refreshing. No refresh was attempted."
                )
            time.sleep(min(self.poll_interval, remaining))

        def check() -> bool:
            if lease.lost.is_set():
                return False
            try:
                held = self.client.get(lock_key) == owner.encode()
            except redis.RedisError:
                return False
            if not held:
                lease.lost.set()
            return held

        lease = RedisLease(key, int(fencing), check)
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._keep_renewed,
            args=(lease, lock_key, owner, ttl_ms, stop),
            name=f"tokenrefresh-lock-renew:{key}",
            daemon=True,  # never keep a finished task's process alive
        )
        renewer.start()
        try:
            yield lease
        finally:
            stop.set()
            renewer.join()
            self._give_back(lease, lock_key, owner)

    def _keep_renewed(
        self, lease: RedisLease, lock_key: str, owner: str, ttl_ms: int, stop: threading.Event
    ) -> None:
        import redis

        interval = self.ttl / 3
        # Measured from before the call that confirmed the lease, the conservative end of it.
        confirmed_at = time.monotonic()
        while not stop.wait(interval):
            attempt_at = time.monotonic()
            try:
                renewed = self._renew(keys=[lock_key], args=[owner, ttl_ms])
            except redis.RedisError as exc:
                if time.monotonic() - confirmed_at >= self.ttl:
                    log.warning(
                        "Could not renew the redis refresh lock for %r for %.0fs (%s); it may have "
                        "expired and another process may be refreshing",
                        lease.key,
                        self.ttl,
                        type(exc).__name__,
                    )
                    lease.lost.set()
                    return
                continue
            if not renewed:
                log.warning(
                    "The redis refresh lock for %r expired while this holder was still working and "
                    "may have passed to another one; the fencing number guards the store",
                    lease.key,
                )
                lease.lost.set()
                return
            confirmed_at = attempt_at

    def _give_back(self, lease: RedisLease, lock_key: str, owner: str) -> None:
        import redis

        try:
            released = self._release(keys=[lock_key], args=[owner])
        except redis.RedisError as exc:
            # The lease expires by itself within ttl; failing the finished refresh would be worse.
            log.warning(
                "Could not release the redis refresh lock for %r (%s); it expires within %.0fs",
                lease.key,
                type(exc).__name__,
                self.ttl,
            )
            return
        if not released and not lease.lost.is_set():
            log.warning(
                "The redis refresh lock for %r had already expired or passed to another holder when released",
                lease.key,
            )
            lease.lost.set()


def _truthy(value: object) -> bool:
    # Connection extras arrive as JSON booleans or as strings typed into the UI.
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
