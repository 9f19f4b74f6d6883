"""Who may refresh: one holder per connection key across every process that shares the lock.

A lock is used as ``with lock.hold(key, timeout) as lease:``. Waiting is bounded: when the lock
cannot be taken in ``timeout`` seconds, :class:`~airflow_provider_tokenrefresh.errors.LockTimeout`
is raised and no refresh is attempted. ``lease.fencing`` is a number that grows with every
acquisition where the backend can supply one (Redis), for stores that can check it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager


@dataclass(frozen=True)
class Lease:
    """Proof of holding the lock for ``key``.

    :param check: asks the lock server whether this lease is still held (``None``: a lock that
        cannot be lost while its holder lives, like ``flock``).
    """

    key: str
    fencing: int | None = None
    check: Callable[[], bool] | None = field(default=None, compare=False, repr=False)

    def still_held(self) -> bool:
        """Whether the lock server still knows this lease (asked now, not remembered)."""
        return True if self.check is None else self.check()


@runtime_checkable
class RefreshLock(Protocol):
    """A per-key mutual exclusion shared by every process that may refresh."""

    #: Short name used in messages and the ``lock`` extra (``file``, ``redis``, ``postgres``).
    name: str
    #: Which lock domain this is, without credentials (``file:host:/dir``, ``redis://h:p/db``): a
    #: record remembers it, so components that would coordinate through different locks are noticed.
    identity: str
    #: Seconds a holder that stops renewing keeps the lock (0: held until its process or session ends).
    lease_ttl: float

    def hold(self, key: str, timeout: float) -> AbstractContextManager[Lease]:
        """Take the lock for ``key`` within ``timeout`` seconds, release it on exit."""
        ...
