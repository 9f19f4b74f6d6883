"""Sans-I/O protocol code: build a refresh request, parse the answer. Pure functions, no network.

The refresh client (``client.py``) sends what :func:`build_request` returns and hands the raw
answer to :func:`parse_response`. Both are table-tested per dialect without a server.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from pydantic import SecretStr

from airflow_provider_tokenrefresh.errors import (
    AmbiguousRejection,
    ConfigurationError,
    MalformedResponseError,
    RefreshOutcomeUnknown,
    RefreshTokenRejected,
    TokenRefreshError,
    TransientRefreshError,
)
from airflow_provider_tokenrefresh.redaction import Redactor, redact, redact_url

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_tokenrefresh.dialects.spec import DialectSpec, ErrorRule, ExpiryFormat, Outcome

#: Longest vendor error text quoted in an exception message.
MAX_QUOTED_ERROR = 200


@dataclass(frozen=True)
class ClientCredentials:
    """The client id and secret of a connection (``login``/``password``)."""

    client_id: str | None
    client_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class WireRequest:
    """A fully built refresh request. ``repr`` and :attr:`safe_url` never show a secret."""

    method: str
    url: str = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    content: bytes | None = field(repr=False)
    safe_url: str

    def __repr__(self) -> str:
        return f"WireRequest({self.method} {self.safe_url})"


def endpoint_url(base_url: str, path: str) -> str:
    """Join a connection's base URL and a dialect path (no doubled or missing slash)."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def build_request(
    spec: DialectSpec,
    url: str,
    credentials: ClientCredentials,
    refresh_token: str,
    access_token: str | None = None,
) -> WireRequest:
    """Build the refresh request of ``spec`` for the full endpoint ``url``.

    :raises ConfigurationError: a required piece (client credentials, current access token) is missing.
    """
    req = spec.request
    safe = redact_url(url)

    def _missing(what: str) -> ConfigurationError:
        return ConfigurationError(
            f"{what} is required by this dialect but not set", dialect=spec.name, endpoint=safe
        )

    if not refresh_token:
        raise _missing("a refresh token")
    params: dict[str, str] = {**req.static_params, req.refresh_token_field: refresh_token}
    query: dict[str, str] = {}
    body: dict[str, str] = {}
    (query if req.params_in == "query" else body).update(params)

    headers: dict[str, str] = {"Accept": "application/json"}
    if req.client_auth != "none":
        if not credentials.client_id:
            raise _missing("the client id (connection login)")
        if credentials.client_secret is None or credentials.client_secret == "":
            raise _missing("the client secret (connection password)")
    if req.client_auth == "basic":
        # All three documents using Basic say Base64(client_id + ":" + client_secret), verbatim.
        raw = f"{credentials.client_id or ''}:{credentials.client_secret or ''}"
        headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode("ascii")
    elif req.client_auth in ("body", "query"):
        target = body if req.client_auth == "body" else query
        target[req.client_id_field] = credentials.client_id or ""
        target[req.client_secret_field] = credentials.client_secret or ""

    if req.access_token_header:
        if not access_token:
            raise _missing("the current access token (extra 'access_token')")
        headers[req.access_token_header] = f"{req.access_token_prefix}{access_token}"

    content: bytes | None = None
    if req.encoding == "form":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        content = urlencode(body).encode("ascii")
    elif req.encoding == "json":
        headers["Content-Type"] = "application/json"
        content = json.dumps(body, separators=(",", ":")).encode()
    headers.update(req.headers)

    full_url = url
    if query:
        full_url += ("&" if urlsplit(url).query else "?") + urlencode(query)
    return WireRequest(
        method=req.method,
        url=full_url,
        headers=headers,
        content=content,
        # By field name *and* by value: a custom dialect may put the token under any query name.
        safe_url=Redactor([refresh_token, access_token, credentials.client_secret]).redact(
            redact_url(full_url)
        ),
    )


def get_path(data: Any, path: str | None) -> Any:
    """Return the value at a dotted ``path`` in nested dicts, or ``None`` when any step is missing."""
    if path is None:
        return None
    current = data
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_expiry(value: Any, fmt: ExpiryFormat, now: datetime) -> datetime:
    """Turn a vendor expiry (number or numeric string, relative or absolute) into an aware datetime.

    :raises ValueError: the value is not of the expected form.
    """
    if fmt == "iso8601":
        if not isinstance(value, str):
            raise ValueError("expected an ISO 8601 timestamp string")
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a number or a numeric string")
    number = float(value.strip()) if isinstance(value, str) else float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError("expected a finite, non-negative number")
    try:
        if fmt == "seconds":
            return now + timedelta(seconds=number)
        if fmt == "epoch_seconds":
            return datetime.fromtimestamp(number, UTC)
        return datetime.fromtimestamp(number / 1000, UTC)
    except (OverflowError, OSError) as exc:
        raise ValueError("out of range") from exc


@dataclass(frozen=True)
class ResponseContext:
    """What :func:`parse_response` needs besides the answer: for messages and redaction."""

    endpoint: str
    secrets: tuple[str | None, ...] = field(default=(), repr=False)
    default_expires_in: float | None = None


def parse_response(
    spec: DialectSpec,
    status: int,
    body: bytes,
    context: ResponseContext,
    *,
    now: datetime | None = None,
) -> Any:
    """Parse a vendor answer into a :class:`~airflow_provider_tokenrefresh.tokens.TokenSet`.

    :raises TokenRefreshError: one of its subclasses, with a redacted message, for any answer that
        is not a success. Nothing else escapes, whatever the bytes.
    """
    from airflow_provider_tokenrefresh.tokens import TokenSet

    now = now or datetime.now(UTC)
    resp = spec.response
    redactors: list[Redactor] = []  # built on the first message: a success quotes nothing

    def redactor() -> Redactor:
        if not redactors:
            redactors.append(Redactor(context.secrets))
        return redactors[0]

    def fail(cls: type[TokenRefreshError], message: str, code: str | None = None) -> TokenRefreshError:
        return cls(
            redact(redactor().redact(message)),
            dialect=spec.name,
            endpoint=context.endpoint,
            vendor_code=code,
            status_code=status,
        )

    def quote(text: str) -> str:
        return quoted(text, redactor())

    data: Any = None
    try:
        data = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        data = None

    code = _as_text(get_path(data, resp.error_code)) if isinstance(data, dict) else None
    detail = _as_text(get_path(data, resp.error_message)) if isinstance(data, dict) else None

    if 200 <= status < 300:
        if not isinstance(data, dict):
            raise fail(
                MalformedResponseError,
                f"HTTP {status} answer is not a JSON object; the vendor may have "
                "rotated the refresh token without us seeing the new one",
            )
        if resp.success is not None:
            actual = _as_text(get_path(data, resp.success.path))
            if actual not in resp.success.equals:
                raise _vendor_failure(
                    spec, status, actual, detail, fail, success_path=resp.success.path, quote=quote
                )
        access = get_path(data, resp.access_token)
        if not isinstance(access, str) or not access:
            if code is not None:
                raise _vendor_failure(
                    spec, status, code, detail, fail, quote=quote, json_answer=isinstance(data, dict)
                )
            raise fail(
                MalformedResponseError, f"HTTP {status} answer has no access token at '{resp.access_token}'"
            )
        refresh = get_path(data, resp.refresh_token)
        if refresh is not None and (not isinstance(refresh, str) or not refresh):
            raise fail(
                MalformedResponseError, f"'{resp.refresh_token}' in the answer is not a non-empty string"
            )
        raw_expiry = get_path(data, resp.expires_in)
        try:
            if raw_expiry is not None:
                expires_at = parse_expiry(raw_expiry, resp.expires_format, now)
            else:
                fallback = context.default_expires_in or resp.default_expires_in
                if fallback is None:
                    raise ValueError("absent and no default_expires_in configured")
                expires_at = now + timedelta(seconds=fallback)
        except ValueError as exc:
            raise fail(
                MalformedResponseError, f"'{resp.expires_in}' in the answer is unusable: {exc}"
            ) from None
        refresh_expires_at = None
        raw_refresh_expiry = get_path(data, resp.refresh_expires_in)
        if raw_refresh_expiry is not None:
            try:
                refresh_expires_at = parse_expiry(raw_refresh_expiry, resp.refresh_expires_format, now)
            except ValueError as exc:
                raise fail(
                    MalformedResponseError, f"'{resp.refresh_expires_in}' in the answer is unusable: {exc}"
                ) from None
        elif isinstance(refresh, str) and resp.refresh_token_lifetime:
            refresh_expires_at = now + timedelta(seconds=resp.refresh_token_lifetime)
        token_type = _as_text(get_path(data, resp.token_type)) or "Bearer"
        scope = _as_text(get_path(data, resp.scope))
        return TokenSet(
            access_token=SecretStr(access),
            token_type=token_type,
            expires_at=expires_at,
            refresh_token=SecretStr(refresh) if isinstance(refresh, str) else None,
            refresh_expires_at=refresh_expires_at,
            scope=scope,
            obtained_at=now,
        )
    if code is None and isinstance(data, dict) and resp.success is not None:
        code = _as_text(get_path(data, resp.success.path))
    if detail is None and not isinstance(data, dict) and body:
        detail = body.decode("utf-8", "replace")
    raise _vendor_failure(spec, status, code, detail, fail, quote=quote, json_answer=isinstance(data, dict))


def quoted(text: str, redactor: Redactor | None) -> str:
    """Vendor text fit to quote in a message: every known secret hidden *first*, then cut short.

    Cutting first would leave the start of a long token that no redactor can match any more
    (vendors echo JWT-sized refresh tokens in their errors).
    """
    clean = redact(redactor.redact(text) if redactor is not None else text)
    if len(clean) > MAX_QUOTED_ERROR:
        clean = clean[:MAX_QUOTED_ERROR] + "..."
    return clean


def _default_outcome(status: int) -> tuple[Outcome, str]:
    if status in (502, 504):
        return (
            "unknown",
            "a gateway answered after the request was sent: the vendor may have processed it and rotated "
            "the refresh token",
        )
    if status in (408, 425, 429) or status >= 500:
        return "transient", "the vendor is unavailable or throttling; a later attempt may succeed"
    if 200 <= status < 300:
        return "transient", "the vendor reported a failure; a later attempt may succeed"
    if status in (401, 403):
        return (
            "configuration",
            "the vendor refused the client credentials; check the connection's login and password",
        )
    return "configuration", "the vendor refused the request; check the connection and the dialect"


_OUTCOME_ERRORS: dict[Outcome, type[TokenRefreshError]] = {
    "reauth": RefreshTokenRejected,
    "configuration": ConfigurationError,
    "transient": TransientRefreshError,
    "unknown": RefreshOutcomeUnknown,
}


def match_rule(spec: DialectSpec, status: int, code: str | None) -> ErrorRule | None:
    """The first of the dialect's error rules that covers this answer, if any."""
    return next((rule for rule in spec.errors if rule.matches(status, code)), None)


def _vendor_failure(
    spec: DialectSpec,
    status: int,
    code: str | None,
    detail: str | None,
    fail: Any,
    *,
    success_path: str | None = None,
    quote: Callable[[str], str] | None = None,
    json_answer: bool = True,
) -> TokenRefreshError:
    rule = match_rule(spec, status, code)
    outcome, meaning = (rule.outcome, rule.meaning) if rule else _default_outcome(status)
    parts = [f"HTTP {status}"]
    if code is not None:
        parts.append(f"{success_path or 'code'}={code}")
    if detail:
        parts.append(repr(quote(detail) if quote is not None else quoted(detail, None)))
    kind = _OUTCOME_ERRORS[outcome]
    if outcome == "reauth" and ((rule is not None and rule.ambiguous) or not json_answer):
        kind = AmbiguousRejection
        meaning = f"either {meaning}, or " + (
            "the request itself was malformed (the vendor document uses this answer for both)"
            if json_answer
            else "a gateway or proxy in front of the vendor refused the request (the answer is not the "
            "vendor's JSON)"
        )
    error: TokenRefreshError = fail(kind, f"{' '.join(parts)}: {meaning}", code)
    return error
