"""Fault injection on the token endpoint: what can go wrong on the wire, queued by tests.

Stdlib only; imports nothing from Airflow or the rest of the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_tokenrefresh.testing.server import Response
from airflow_provider_tokenrefresh.testing.state import Ledger

if TYPE_CHECKING:
    from collections.abc import Mapping

FAULT_KINDS: dict[str, frozenset[str]] = {
    "http_500": frozenset(),
    "http_503": frozenset({"retry_after"}),
    "http_429": frozenset({"retry_after"}),
    "ok_with_error_body": frozenset(),
    "malformed_json": frozenset({"body", "content_type"}),
    "slow": frozenset({"delay"}),
    "hold": frozenset({"release", "at_least", "timeout"}),
    "drop_before": frozenset(),
    "drop_after": frozenset(),
    "huge_body": frozenset({"size"}),
}
"""Fault kinds accepted by :meth:`VendorEmulator.inject`, each with the parameters it takes.

* ``http_500``: HTTP 500 with the vendor's internal-error body; the refresh is not processed.
* ``http_503`` (``retry_after``): HTTP 503, ``Retry-After`` when given; not processed.
* ``http_429`` (``retry_after``): HTTP 429, ``Retry-After`` when given; not processed.
* ``ok_with_error_body``: HTTP 200 carrying the vendor's error body; not processed.
* ``malformed_json`` (``body``, ``content_type``): HTTP 200 whose body is not JSON; not processed.
* ``slow`` (``delay``, default 2 s): the refresh is processed normally, then the answer is held back
  for ``delay`` seconds (a client with a shorter read timeout does not know the outcome).
* ``hold`` (``release``, ``at_least``, ``timeout``, default 60 s): like ``slow``, but the answer is
  held for ``at_least`` seconds and until the test sets ``release`` (a ``threading.Event``), or
  ``timeout`` passes: a request kept open for as long as a test needs, without guessing a duration.
* ``drop_before``: the connection is closed without an answer; the refresh is NOT processed.
* ``drop_after``: the refresh IS processed (the refresh token rotates), then the connection is
  closed without an answer; the client's outcome is unknown.
* ``huge_body`` (``size``, default 5 MiB): HTTP 200 with a body of that many bytes; not processed.
"""


@dataclass(frozen=True)
class Fault:
    """One queued fault: its kind (a key of :data:`FAULT_KINDS`) and parameters."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)


class FaultInjection(Ledger):
    """The fault queue and the answers faults send (a mixin of ``VendorEmulator``)."""

    _faults: list[Fault]

    def inject(self, kind: str, times: int = 1, **params: Any) -> None:
        """Queue ``times`` faults of ``kind``; the next token-endpoint requests consume them in order.

        See :data:`FAULT_KINDS` for the kinds and their parameters.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
        unknown = set(params) - FAULT_KINDS[kind]
        if unknown:
            raise ValueError(f"fault {kind!r} takes no parameter(s) {', '.join(sorted(unknown))}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.extend(Fault(kind, dict(params)) for _ in range(times))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        """Faults not consumed yet, in order."""
        with self._lock:
            return list(self._faults)

    def _fault_response(self, fault: Fault) -> Response | None:
        """The answer a fault sends instead of processing the request, or ``None`` to process it."""
        kind = fault.kind
        if kind == "http_500":
            return self.fault_error(500)
        if kind in ("http_503", "http_429"):
            status = 503 if kind == "http_503" else 429
            response = self.fault_error(status)
            retry_after = fault.params.get("retry_after")
            if retry_after is not None:
                value = retry_after if isinstance(retry_after, str) else str(int(retry_after))
                response.headers.append(("Retry-After", value))
            return response
        if kind == "ok_with_error_body":
            return Response.json(200, self.ok_error_body())
        if kind == "malformed_json":
            body = fault.params.get("body", b'{"access_token": "trunc')
            if isinstance(body, str):
                body = body.encode("utf-8")
            return Response(
                200,
                bytes(body),
                content_type=str(fault.params.get("content_type", "application/json;charset=UTF-8")),
            )
        if kind == "huge_body":
            size = int(fault.params.get("size", 5 * 1024 * 1024))
            return Response(200, b'{"padding":"' + b"x" * size + b'"}')
        if kind == "drop_before":
            return Response(drop=True)
        return None  # slow, hold, drop_after: processed normally

    def fault_error(self, status: int) -> Response:
        """The vendor's answer for an injected 500/503/429."""
        texts = {
            500: ("server_error", "Internal server error"),
            503: ("temporarily_unavailable", "Service unavailable"),
            429: ("temporarily_unavailable", "Too many requests"),
        }
        code, text = texts[status]
        return self.error_response(status, code, text)

    def ok_error_body(self) -> dict[str, Any]:
        """The error body the ``ok_with_error_body`` fault sends with HTTP 200."""
        return {"error": "server_error", "error_description": "Internal server error"}

    def error_response(self, status: int, code: str, text: str) -> Response:
        """An error answer in the vendor's error shape."""
        return Response.json(status, {"error": code, "error_description": text})
