"""Fan-out: many connections refreshed at once, as ``TokenRefreshOperator`` does.

Each connection keeps its own lock, store record and guarantees (:class:`~.keeper.TokenKeeper`);
what the fan-out shares is HTTP connections: every keeper whose client has the same TLS context
and timeout sends, for the duration of the call, through the client of the worker thread that runs
it (one kept-alive connection per thread, :class:`~.transport.ThreadClients`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from airflow_provider_tokenrefresh.lease import keeper_refresh_margin

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_provider_tokenrefresh.keeper import RefreshOutcome, TokenKeeper


def refresh_all(
    keepers: dict[str, TokenKeeper],
    *,
    force: bool = False,
    min_ttl: float | None = None,
    max_workers: int = 32,
) -> dict[str, RefreshOutcome | Exception]:
    """Refresh many connections concurrently (bounded), each through its own lock and store.

    Used by ``TokenRefreshOperator``. One connection's failure never stops the others: its entry
    holds the exception instead of an outcome. A keeper run's ``min_ttl`` also applies to the
    refresh token (:func:`~airflow_provider_tokenrefresh.lease.keeper_refresh_margin`), so an idle
    connection's refresh token is renewed before it would lapse between runs.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(item: tuple[str, TokenKeeper]) -> tuple[str, RefreshOutcome | Exception]:
        name, keeper = item
        try:
            ttl = keeper.refresh_margin if min_ttl is None else min_ttl
            return name, keeper.refresh(
                force=force, min_ttl=ttl, refresh_margin=keeper_refresh_margin(keeper.refresh_margin, ttl)
            )
        except Exception as exc:  # noqa: BLE001 - reported per connection
            return name, exc

    if not keepers:
        return {}
    workers = max(1, min(max_workers, len(keepers)))
    with contextlib.ExitStack() as stack:
        _share_http_clients(keepers.values(), stack)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(pool.map(one, keepers.items()))


def _share_http_clients(keepers: Iterable[TokenKeeper], stack: contextlib.ExitStack) -> None:
    """Lend per-thread ``httpx.Client`` s to every keeper whose client has the same TLS context and
    timeout (:meth:`RefreshClient.share_key`), for the duration of ``stack``: a fan-out over 1,000
    connections of one vendor then keeps one connection alive per worker thread instead of
    building 1,000 clients and doing 1,000 TCP (and TLS) handshakes, and no thread waits on a pool
    lock shared with the others. Closed when ``stack`` exits."""
    shared: dict[tuple[object, ...], Any] = {}
    for keeper in keepers:
        client = keeper.client
        share_key = getattr(client, "share_key", None)
        key = share_key() if share_key is not None else None
        if key is None:
            continue
        if key not in shared:
            shared[key] = stack.enter_context(client.thread_clients())
        stack.enter_context(client.lend(shared[key]))
