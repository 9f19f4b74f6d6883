"""Metrics through Airflow's own Stats: what a token's health looks like in StatsD or OpenTelemetry.

Two halves:

* **pure functions** (``*_points``) that turn what happened — a vendor call, a lock wait, a failed
  operation, a record — into :class:`Point` values (name, value, tags). They import nothing from
  Airflow and are unit-tested as such;
* a thin **emitter** (:func:`emit`) that hands points to Airflow's Stats, imported on first use:
  ``airflow.sdk.observability.stats`` (Airflow 3.3: the task SDK's Stats, initialised by the task
  runner and, on import of ``airflow.sdk.serde``, in the triggerer), else the deprecated
  ``airflow.stats.Stats`` shim. Whatever Airflow's ``[metrics]`` section chose (StatsD, Datadog,
  OpenTelemetry, nothing) receives them; an emitter failure is logged at debug level and never
  reaches the caller.

Names and tags (docs/metrics.md has the full table)::

    tokenrefresh.refresh.count      counter  conn_id, dialect, outcome   one per request to the vendor
    tokenrefresh.refresh.duration   timer    conn_id, dialect, outcome   that request's duration
    tokenrefresh.failure.count      counter  conn_id, dialect, kind      one per failed token operation
    tokenrefresh.lock.wait          timer    conn_id, dialect, outcome   time to take the refresh lock
    tokenrefresh.access_token.ttl   gauge    conn_id, dialect            seconds left (0: expired)
    tokenrefresh.refresh_token.ttl  gauge    conn_id, dialect            seconds left, when known
    tokenrefresh.reauth_required    gauge    conn_id, dialect            1: needs re-authorization

Tag values are connection ids, dialect names and fixed words (``success``, an error ``kind``...),
reduced to ``[A-Za-z0-9_.-]``: never a token, secret or message.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from datetime import datetime

    from airflow_provider_tokenrefresh.tokens import TokenRecord

log = logging.getLogger(__name__)

REFRESH_COUNT = "tokenrefresh.refresh.count"
REFRESH_DURATION = "tokenrefresh.refresh.duration"
FAILURE_COUNT = "tokenrefresh.failure.count"
LOCK_WAIT = "tokenrefresh.lock.wait"
ACCESS_TTL = "tokenrefresh.access_token.ttl"
REFRESH_TTL = "tokenrefresh.refresh_token.ttl"
REAUTH_REQUIRED = "tokenrefresh.reauth_required"

#: Every metric name this module emits.
NAMES = (REFRESH_COUNT, REFRESH_DURATION, FAILURE_COUNT, LOCK_WAIT, ACCESS_TTL, REFRESH_TTL, REAUTH_REQUIRED)

#: The ``outcome`` of a vendor call that returned tokens.
SUCCESS = "success"
#: The ``kind`` of a failure that is not one of the provider's errors (a bug, a library's error).
UNEXPECTED = "unexpected"
#: The same record's gauges are sent again at most this often (seconds): a process that uses a
#: cached token many times a second sends them a few times a minute, not per call.
RECORD_GAUGES_EVERY = 10.0

_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_TAG_MAX = 100

Kind = Literal["incr", "gauge", "timing"]


@dataclass(frozen=True)
class Point:
    """One value to hand to Stats.

    :param kind: ``incr`` (counter), ``gauge`` or ``timing`` (``value`` in seconds; Stats gets a
        ``timedelta``, which StatsD sends as milliseconds and OpenTelemetry records in a histogram).
    """

    kind: Kind
    name: str
    value: float
    tags: dict[str, str] = field(default_factory=dict)


def tag_value(value: object) -> str:
    """A tag value every backend accepts: ``[A-Za-z0-9_.-]``, at most 100 characters.

    InfluxDB-style StatsD tags drop a value with ``,`` or ``=``, Datadog splits on ``:``, and
    Airflow's name validator refuses anything outside letters, digits, ``_.-/``; a connection id
    (Airflow allows letters, digits, ``_.-``) passes unchanged.
    """
    text = _TAG_UNSAFE.sub("_", str(value))[:_TAG_MAX]
    return text or "unknown"


def base_tags(conn_id: str, dialect: str | None) -> dict[str, str]:
    """The tags every point of a connection carries."""
    return {"conn_id": tag_value(conn_id), "dialect": tag_value(dialect or "unknown")}


def error_kind(exc: BaseException) -> str:
    """The error's stable ``kind`` (errors.py), or ``unexpected`` for anything else."""
    from airflow_provider_tokenrefresh.errors import TokenRefreshError

    return tag_value(exc.kind) if isinstance(exc, TokenRefreshError) else UNEXPECTED


def vendor_call_points(
    conn_id: str, dialect: str | None, seconds: float, error: BaseException | None
) -> list[Point]:
    """One request to the vendor's token endpoint: counted and timed, by outcome
    (``success`` or the error's kind: ``reauth_required``, ``transient``, ``outcome_unknown``...)."""
    tags = {**base_tags(conn_id, dialect), "outcome": SUCCESS if error is None else error_kind(error)}
    return [
        Point("incr", REFRESH_COUNT, 1, tags),
        Point("timing", REFRESH_DURATION, max(0.0, seconds), dict(tags)),
    ]


def lock_wait_points(conn_id: str, dialect: str | None, seconds: float, outcome: str) -> list[Point]:
    """Time spent taking the refresh lock (``acquired``, ``timeout`` or ``error``)."""
    tags = {**base_tags(conn_id, dialect), "outcome": tag_value(outcome)}
    return [Point("timing", LOCK_WAIT, max(0.0, seconds), tags)]


def failure_points(conn_id: str, dialect: str | None, exc: BaseException) -> list[Point]:
    """A token operation (get a token, refresh, read status) that ended in ``exc``.

    A rejected refresh token also sets the re-authorization gauge.
    """
    kind = error_kind(exc)
    points = [Point("incr", FAILURE_COUNT, 1, {**base_tags(conn_id, dialect), "kind": kind})]
    if kind == "reauth_required":
        points.append(Point("gauge", REAUTH_REQUIRED, 1, base_tags(conn_id, dialect)))
    return points


def _seconds_left(ttl: float) -> float | None:
    """A gauge value for a time-to-live: whole seconds, 0 once expired, ``None`` when unknown."""
    if math.isnan(ttl) or math.isinf(ttl):
        return None
    return float(max(0, math.floor(ttl)))


def record_points(
    conn_id: str, dialect: str | None, record: TokenRecord, now: datetime | None = None
) -> list[Point]:
    """Gauges of a connection's record: seconds left on both tokens, re-authorization needed.

    A time nobody knows (an access token never obtained, a refresh token whose vendor states no
    expiry) is left out rather than sent as a made-up number.
    """
    from airflow_provider_tokenrefresh.tokens import utcnow

    now = now or utcnow()
    tags = base_tags(conn_id, dialect)
    points = []
    access = _seconds_left(record.access_ttl(now))
    if access is not None:
        points.append(Point("gauge", ACCESS_TTL, access, dict(tags)))
    refresh = _seconds_left(record.refresh_ttl(now))
    if refresh is not None:
        points.append(Point("gauge", REFRESH_TTL, refresh, dict(tags)))
    points.append(Point("gauge", REAUTH_REQUIRED, 1 if record.state == "reauth_required" else 0, dict(tags)))
    return points


# -- instrumentation of the parts a keeper is built from (no Airflow) ------------------------------------


def _quietly(call: Callable[..., object], *args: Any) -> None:
    try:
        call(*args)
    except Exception:  # measuring must never break a refresh
        log.debug("tokenrefresh metrics: observer failed", exc_info=True)


def instrument_client(client: Any, on_call: Callable[[float, BaseException | None], object]) -> None:
    """Make ``client.refresh`` report each vendor request: ``on_call(seconds, error_or_None)``.

    The method is replaced on the instance, so the client keeps its type and everything else.
    """
    inner = client.refresh

    @functools.wraps(inner)
    def refresh(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            answer = inner(*args, **kwargs)
        except Exception as exc:
            _quietly(on_call, time.monotonic() - started, exc)
            raise
        _quietly(on_call, time.monotonic() - started, None)
        return answer

    client.refresh = refresh


def instrument_lock(lock: Any, on_wait: Callable[[float, str], object]) -> None:
    """Make ``lock.hold`` report how long taking the lock took: ``on_wait(seconds, outcome)`` with
    outcome ``acquired``, ``timeout`` (LockTimeout: nothing was sent) or ``error``.

    The method is replaced on the instance: the lock keeps its type, name, identity and lease.
    """
    from airflow_provider_tokenrefresh.errors import LockTimeout

    inner = lock.hold

    @contextlib.contextmanager
    def hold(key: str, timeout: float) -> Iterator[Any]:
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            try:
                lease = stack.enter_context(inner(key, timeout))
            except Exception as exc:
                outcome = "timeout" if isinstance(exc, LockTimeout) else "error"
                _quietly(on_wait, time.monotonic() - started, outcome)
                raise
            _quietly(on_wait, time.monotonic() - started, "acquired")
            yield lease

    lock.hold = hold


# -- the emitter (Airflow's Stats, imported on first use) ---------------------------------------------------

_STATS: Any = None


def _initialised(stats_module: Any) -> None:
    """Initialise the SDK's Stats from ``[metrics]`` when nothing in this process did yet (the task
    runner and ``airflow.sdk.serde`` do; a script or the CLI may not), exactly as they do."""
    state = getattr(stats_module, "_factory", "unknown")
    if state is not None:
        return
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    stats.initialize(
        factory=stats_utils.get_stats_factory(),
        export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
    )


def stats_backend() -> Any:
    """Airflow's Stats: the task SDK's module (3.3+), the SDK's class (3.2), else ``airflow.stats`` (3.1)."""
    global _STATS
    if _STATS is None:
        try:  # Airflow 3.3+: module-level incr/gauge/timing
            from airflow.sdk._shared.observability.metrics import stats as state
            from airflow.sdk.observability import stats

            if not callable(getattr(stats, "incr", None)):
                raise ImportError("class-based Stats (Airflow 3.2)")
            _initialised(state)
            _STATS = stats
        except ImportError:
            try:  # Airflow 3.2: the SDK's metaclass-based Stats (typed here against 3.3's API)
                from airflow.sdk.observability import stats as sdk_stats
                from airflow.sdk.observability.metrics import stats_utils

                stats_class: Any = sdk_stats.Stats
                utils: Any = stats_utils
                if getattr(stats_class, "factory", None) is None:  # nobody here initialised it (a CLI)
                    stats_class.initialize(factory=utils.get_stats_factory(stats_class))
            except (ImportError, AttributeError):  # Airflow 3.1: core's Stats (initialised from [metrics])
                from airflow.stats import Stats as stats_class
            _STATS = stats_class
    return _STATS


def emit(points: Iterable[Point]) -> None:
    """Hand ``points`` to Airflow's Stats; never raises."""
    points = list(points)
    if not points:
        return
    try:
        stats = stats_backend()
    except Exception:  # no Airflow, or a broken metrics setup: no metrics
        log.debug("tokenrefresh metrics: Airflow Stats unavailable", exc_info=True)
        return
    from datetime import timedelta

    for point in points:
        try:
            if point.kind == "incr":
                stats.incr(point.name, count=int(point.value), tags=dict(point.tags))
            elif point.kind == "gauge":
                stats.gauge(point.name, point.value, tags=dict(point.tags))
            else:
                stats.timing(point.name, timedelta(seconds=point.value), tags=dict(point.tags))
        except Exception:  # a metric must never break a refresh
            log.debug("tokenrefresh metrics: could not emit %s", point.name, exc_info=True)


class ConnectionMetrics:
    """The emitter bound to one connection (what the hook holds)."""

    def __init__(self, conn_id: str, dialect: str | None) -> None:
        self.conn_id = conn_id
        self.dialect = dialect
        self._last_record: TokenRecord | None = None
        self._last_record_at = 0.0

    def vendor_call(self, seconds: float, error: BaseException | None) -> None:
        """A request to the vendor ended (``error`` is ``None`` on success)."""
        emit(vendor_call_points(self.conn_id, self.dialect, seconds, error))

    def lock_wait(self, seconds: float, outcome: str) -> None:
        """Taking the refresh lock took ``seconds``."""
        emit(lock_wait_points(self.conn_id, self.dialect, seconds, outcome))

    def failure(self, exc: BaseException) -> None:
        """A token operation failed."""
        emit(failure_points(self.conn_id, self.dialect, exc))

    def record(self, record: TokenRecord) -> None:
        """The record a token operation ended with: its gauges, at most every
        :data:`RECORD_GAUGES_EVERY` seconds for the same record (a cache hit costs no emit)."""
        now = time.monotonic()
        if record is self._last_record and now - self._last_record_at < RECORD_GAUGES_EVERY:
            return
        self._last_record, self._last_record_at = record, now
        emit(record_points(self.conn_id, self.dialect, record))

    def instrument(self, client: Any, lock: Any) -> None:
        """Report the client's vendor requests and the lock's waits."""
        instrument_client(client, self.vendor_call)
        instrument_lock(lock, self.lock_wait)
