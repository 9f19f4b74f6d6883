"""Small helpers for the per-dialect tests: build with canary secrets, parse raw answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from airflow_provider_tokenrefresh.dialects.wire import (
    ClientCredentials,
    ResponseContext,
    WireRequest,
    build_request,
    parse_response,
)

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.dialects.spec import DialectSpec
    from airflow_provider_tokenrefresh.tokens import TokenSet

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
CLIENT_ID = "client-id-canary"
CLIENT_SECRET = "client-secret-CANARY-7f3e"
REFRESH = "refresh-CANARY-4b1d9e"
ACCESS = "access-CANARY-a81c22"


def build(spec: DialectSpec, base: str = "https://vendor.example:8443", **kwargs: Any) -> WireRequest:
    """Build the dialect's request with canary secrets."""
    return build_request(
        spec,
        base.rstrip("/") + spec.request.path,
        kwargs.pop("credentials", ClientCredentials(CLIENT_ID, CLIENT_SECRET)),
        kwargs.pop("refresh_token", REFRESH),
        kwargs.pop("access_token", ACCESS),
    )


def query_of(request: WireRequest) -> dict[str, list[str]]:
    """The request's query parameters."""
    return parse_qs(urlsplit(request.url).query, keep_blank_values=True)


def form_of(request: WireRequest) -> dict[str, list[str]]:
    """The request's form body."""
    return parse_qs((request.content or b"").decode(), keep_blank_values=True)


def json_of(request: WireRequest) -> Any:
    """The request's JSON body."""
    return json.loads(request.content or b"")


def parse(spec: DialectSpec, status: int, body: Any, **context: Any) -> TokenSet:
    """Parse an answer (a JSON-able value or raw bytes) as the dialect would."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ctx = ResponseContext(
        endpoint="https://vendor.example" + spec.request.path,
        secrets=(REFRESH, ACCESS, CLIENT_SECRET),
        default_expires_in=context.get("default_expires_in"),
    )
    result: TokenSet = parse_response(spec, status, raw, ctx, now=NOW)
    return result
