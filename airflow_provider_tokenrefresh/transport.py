"""The HTTP side of a refresh: what :class:`~.client.RefreshClient`'s drivers exchange with its
sans-I/O flow, and the httpx pieces around them.

* the flow's *actions* (:class:`Send`, :class:`Sleep`) and the drivers' *results*
  (:class:`Answer`, :class:`Failure`);
* :class:`Body`, an answer's body collected up to a bound (sync and async drivers alike);
* :func:`failure_for`: which httpx errors mean "not sent" (safe to retry) and which "unknown";
* :class:`ThreadClients`: one ``httpx.Client`` per thread, what a fan-out lends its keepers;
* :func:`default_ssl_context`: one certifi-backed TLS context per process.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from airflow_provider_tokenrefresh.redaction import redact

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from airflow_provider_tokenrefresh.dialects.wire import WireRequest


@dataclass(frozen=True)
class Send:
    """Send this request (an action of the flow)."""

    request: WireRequest


@dataclass(frozen=True)
class Sleep:
    """Wait this long before the next attempt (an action of the flow)."""

    seconds: float


@dataclass(frozen=True)
class Answer:
    """The vendor answered (a result for the flow)."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Failure:
    """No answer: never sent, unknown whether it reached the vendor, or too large."""

    kind: Literal["not_sent", "unknown", "too_large"]
    detail: str


Action = Send | Sleep
Result = Answer | Failure | None


class ThreadClients:
    """One ``httpx.Client`` per thread, built on first use, closed together (:meth:`close`).

    What a thread-pool fan-out lends its keepers instead of one shared pool: every worker thread
    sends one request at a time, so a client of its own keeps one connection alive and never
    waits on the lock that a shared ``httpcore`` pool takes twice per request (measured in
    ``benchmarks/fanout.py``: with 64 threads on one pool, most of the threads' time was spent
    waiting on it).
    """

    def __init__(self, factory: Callable[[], httpx.Client]) -> None:
        import threading

        self._factory = factory
        self._local = threading.local()
        self._guard = threading.Lock()
        self._all: list[httpx.Client] = []
        self._closed = False

    def for_this_thread(self) -> httpx.Client:
        """The calling thread's client (built now if it has none)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._factory()
            with self._guard:
                if self._closed:
                    client.close()
                    raise RuntimeError("the fan-out's HTTP clients were closed")
                self._all.append(client)
            self._local.client = client
        return client

    def close(self) -> None:
        """Close every thread's client."""
        with self._guard:
            self._closed = True
            clients, self._all = self._all, []
        for client in clients:
            client.close()

    def __enter__(self) -> ThreadClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Body:
    """Collects an answer's body up to a size bound (shared by the sync and async drivers)."""

    too_large = Failure("too_large", "answer too large")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> bool:
        self.data += chunk
        return len(self.data) <= self.limit

    def answer(self, resp: httpx.Response) -> Answer:
        return Answer(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, bytes(self.data))


def failure_for(exc: Exception) -> Failure:
    """Connect-phase errors mean "not sent" (safe to retry); any other httpx error, "unknown"."""
    import httpx

    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Failure("not_sent", describe(exc))
    if isinstance(exc, httpx.HTTPError):
        return Failure("unknown", describe(exc))
    raise exc


def describe(exc: BaseException) -> str:
    # httpx messages may embed the URL; keep the type and a redacted, short text.
    text = redact(str(exc))[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_DEFAULT_CTX: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    global _DEFAULT_CTX
    if _DEFAULT_CTX is None:
        try:
            import certifi

            _DEFAULT_CTX = ssl.create_default_context(cafile=certifi.where())
        except ImportError:  # pragma: no cover - certifi ships with httpx
            _DEFAULT_CTX = ssl.create_default_context()
    return _DEFAULT_CTX
