"""The dialect spec: everything about a vendor's refresh call, as validated data.

A dialect is not a subclass. It says where each piece goes on the wire and where each piece is
found in the answer; :mod:`airflow_provider_tokenrefresh.dialects.wire` does the rest with pure
functions. The five built-in dialects are instances (see ``presets.py``), and a user describes a
sixth vendor by writing the same structure as JSON in a ``tokenrefresh_custom`` connection.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ClientAuth = Literal["basic", "body", "query", "none"]
"""Where the client id and secret go: HTTP Basic header, the request body, the query string, nowhere."""

BodyEncoding = Literal["form", "json", "none"]
"""How the request body is encoded; ``none`` sends no body at all."""

ParamLocation = Literal["body", "query"]
"""Where the refresh token and the fixed parameters (``grant_type``) go."""

ExpiryFormat = Literal["seconds", "epoch_seconds", "epoch_millis", "iso8601"]
"""How an expiry value is meant: relative seconds from receipt, or an absolute time."""

Outcome = Literal["reauth", "configuration", "transient", "unknown"]
"""What a matched vendor error means: refresh token dead, setup wrong, or try again later."""

_PATH_RE = re.compile(r"^[A-Za-z_$][\w$-]*(\.[A-Za-z_$][\w$-]*)*$")
_HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_path(value: str | None) -> str | None:
    if value is not None and not _PATH_RE.match(value):
        raise ValueError(f"{value!r} is not a dotted path such as 'resultData.token'")
    return value


class RequestSpec(_Strict):
    """How the refresh request is built."""

    method: Literal["POST", "PUT", "GET"] = "POST"
    path: str = Field(description="Default endpoint path, appended to the connection's base URL.")
    client_auth: ClientAuth = "basic"
    client_id_field: str = "client_id"
    client_secret_field: str = "client_secret"
    refresh_token_field: str = "refresh_token"
    params_in: ParamLocation = "body"
    encoding: BodyEncoding = "form"
    static_params: dict[str, str] = Field(default_factory=dict)
    access_token_header: str | None = Field(
        default=None, description="Header that carries the current access token, e.g. 'Authentication'."
    )
    access_token_prefix: str = "Bearer "
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _path_is_relative(cls, value: str) -> str:
        if not value.startswith("/") or "://" in value or "?" in value or "#" in value:
            raise ValueError("must be a path starting with '/', without scheme, host, query or fragment")
        return value

    @field_validator("access_token_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_RE.match(value):
            raise ValueError(f"{value!r} is not a valid HTTP header name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RequestSpec:
        if self.encoding == "none" and self.params_in == "body":
            raise ValueError(
                "params_in is 'body' but encoding is 'none' (no body is sent): use params_in='query'"
            )
        if self.encoding == "none" and self.client_auth == "body":
            raise ValueError("client_auth is 'body' but encoding is 'none' (no body is sent)")
        if self.method == "GET" and self.encoding != "none":
            raise ValueError("a GET request has no body: set encoding to 'none'")
        if (
            self.client_auth == "basic"
            and self.access_token_header
            and (self.access_token_header.lower() == "authorization")
        ):
            raise ValueError("client_auth 'basic' and access_token_header 'Authorization' would collide")
        names = [self.refresh_token_field, *self.static_params]
        if self.client_auth in ("body", "query"):
            names += [self.client_id_field, self.client_secret_field]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"field names used twice: {', '.join(duplicates)}")
        return self


class SuccessSpec(_Strict):
    """An answer counts as success only if the value at ``path`` is one of ``equals`` (as text)."""

    path: str
    equals: list[str] = Field(min_length=1)

    _check = field_validator("path")(_check_path)


class ResponseSpec(_Strict):
    """Where each piece of a successful answer is, and how to read the vendor's error answers."""

    access_token: str = "access_token"
    token_type: str | None = "token_type"
    refresh_token: str | None = "refresh_token"
    expires_in: str | None = "expires_in"
    expires_format: ExpiryFormat = "seconds"
    refresh_expires_in: str | None = None
    refresh_expires_format: ExpiryFormat = "seconds"
    scope: str | None = "scope"
    success: SuccessSpec | None = None
    error_code: str | None = "error"
    error_message: str | None = "error_description"
    default_expires_in: float | None = Field(
        default=None, gt=0, description="Access-token lifetime assumed when the answer has no expiry."
    )
    refresh_token_lifetime: float | None = Field(
        default=None, gt=0, description="Refresh-token lifetime the vendor documents, when answers omit it."
    )

    _check = field_validator(
        "access_token",
        "token_type",
        "refresh_token",
        "expires_in",
        "refresh_expires_in",
        "scope",
        "error_code",
        "error_message",
    )(_check_path)


class ErrorRule(_Strict):
    """Maps a vendor answer (HTTP status and/or vendor error code) to what it means.

    Rules are tried in order; the first whose ``status`` and ``code`` both match wins. A rule
    without ``status`` matches any status, one without ``code`` any code.
    """

    status: list[int] | None = None
    code: list[str] | None = None
    outcome: Outcome
    meaning: str = Field(min_length=1, description="What it means and what to do, for the person on call.")
    #: The answer may also mean something other than a dead refresh token (the document leaves it
    #: open): a ``reauth`` outcome is then retried a bounded number of times before it is believed.
    ambiguous: bool = False

    @field_validator("status", mode="before")
    @classmethod
    def _status_list(cls, value: object) -> object:
        return [value] if isinstance(value, int) else value

    @field_validator("code", mode="before")
    @classmethod
    def _code_list(cls, value: object) -> object:
        if isinstance(value, str | int):
            return [str(value)]
        if isinstance(value, list):
            return [str(v) for v in value]
        return value

    def matches(self, status: int, code: str | None) -> bool:
        """Whether this rule covers an answer with ``status`` and vendor ``code``."""
        if self.status is not None and status not in self.status:
            return False
        return self.code is None or (code is not None and code in self.code)


class DialectSpec(_Strict):
    """A complete token-refresh dialect."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    title: str = ""
    document: str | None = None
    request: RequestSpec
    response: ResponseSpec = Field(default_factory=ResponseSpec)
    errors: list[ErrorRule] = Field(default_factory=list)

    @property
    def needs_access_token(self) -> bool:
        """Whether the refresh call must carry the current access token (bearer-json)."""
        return self.request.access_token_header is not None

    def summary(self) -> dict[str, str]:
        """A one-line description of what the dialect sends and expects, for tables and the CLI."""
        req, resp = self.request, self.response
        creds = {
            "basic": "client id/secret as HTTP Basic",
            "body": f"{req.client_id_field}/{req.client_secret_field} in the {req.encoding} body",
            "query": f"{req.client_id_field}/{req.client_secret_field} in the query",
            "none": "no client credentials",
        }[req.client_auth]
        token_where = "query string" if req.params_in == "query" else f"{req.encoding} body"
        sends = f"{req.method} {req.path}; {req.refresh_token_field} in the {token_where}; {creds}"
        if req.access_token_header:
            sends += f"; header {req.access_token_header}: {req.access_token_prefix}<access token>"
        expects = f"{resp.access_token}, {resp.refresh_token or '-'}, {resp.expires_in or '-'} ({resp.expires_format})"
        if resp.success:
            expects = f"{resp.success.path} in {resp.success.equals}; " + expects
        return {"name": self.name, "title": self.title, "sends": sends, "expects": expects}
