"""Who may refresh: one holder per connection key across every process that shares the lock.

A lock is used as ``with lock.hold(key, timeout) as lease:``. Waiting is bounded: when the lock
cannot be taken in ``timeout`` seconds, :class:`~airflow_provider_tokenrefresh.errors.LockTimeout`
is raised and no refresh is attempted. ``lease.fencing`` is a number that grows with every
acquisition where the backend can supply one (Redis), for stores that can check it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


@dataclass(frozen=True)
class Lease:
    """Proof of holding the lock for ``key``."""

    key: str
    fencing: int | None = None


@runtime_checkable
class RefreshLock(Protocol):
    """A per-key mutual exclusion shared by every process that may refresh."""

    #: Short name used in messages and the ``lock`` extra (``file``, ``redis``, ``postgres``).
    name: str

    def hold(self, key: str, timeout: float) -> AbstractContextManager[Lease]:
        """Take the lock for ``key`` within ``timeout`` seconds, release it on exit."""
        ...
