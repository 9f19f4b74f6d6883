"""The five emulated vendors, each written from its vendor document alone.

=================  ==============================  ==========================================
dialect            class                           vendor document
=================  ==============================  ==========================================
``oauth2_basic``   :class:`OAuth2BasicEmulator`    ``oauth2-client-secret-basic.txt``
``oauth2_post``    :class:`OAuth2PostEmulator`     ``oauth2-client-secret-post.txt``
``query_basic``    :class:`BabelBirdEmulator`      ``babelbird-query-basic.txt``
``appid_json``     :class:`IotAppIdEmulator`       ``iot-appid-secret-json.txt``
``bearer_json``    :class:`IsalesBearerEmulator`   ``isales-bearer-json.txt``
=================  ==============================  ==========================================

Nothing here is shared with the dialect presets of the package (field names included): the point
of an emulator is to disagree with a wrong preset.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Unpack
from urllib.parse import parse_qs

from airflow_provider_tokenrefresh.testing.emulator import (
    DAY,
    CommonOptions,
    IncomingRequest,
    IssuedTokens,
    RefreshResult,
    Response,
    VendorEmulator,
    check_loopback,
    form_params,
    secrets_equal,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


def _duplicates(params: Mapping[str, list[str]]) -> list[str]:
    return sorted(name for name, values in params.items() if len(values) > 1)


#: The default alphabet of :class:`SizedTokens`: Base64's, ``=`` included (a token of 454 or 2,000
#: characters of these is what a JWT-sized token looks like to a URL, form or JSON encoder).
LONG_TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


class VendorOptions(CommonOptions, total=False):
    """Constructor keyword arguments every vendor of this module accepts: :class:`CommonOptions`
    and those of :class:`SizedTokens`."""

    token_lengths: Mapping[str, int] | None
    token_alphabet: str


class SizedTokens(VendorEmulator):
    """Tokens of a chosen length and alphabet (every vendor accepts these options).

    :param token_lengths: ``{"at": n, "rt": m}``: every access (``at``) or refresh (``rt``) token
        issued, seeds and rotations alike, is exactly that many characters (at least 12): the
        prefix ``emu+at/`` or ``emu+rt/`` and random characters of ``token_alphabet``. A kind left
        out keeps the ``token_charset`` form. Vendors echo JWT-sized refresh tokens in their errors
        (oauth2-client-secret-basic.txt: ``"Invalid refresh token: <token>"``): long tokens are how
        a test catches a message cut short before it was redacted. (The IoT document limits every
        field to 256 characters: its emulator refuses longer refresh tokens as invalid input.)
    :param token_alphabet: the characters of those tokens (default :data:`LONG_TOKEN_ALPHABET`,
        with ``+``, ``/`` and ``=``).
    """

    def __init__(
        self,
        *,
        token_lengths: Mapping[str, int] | None = None,
        token_alphabet: str = LONG_TOKEN_ALPHABET,
        **kwargs: Unpack[CommonOptions],
    ) -> None:
        super().__init__(**kwargs)
        lengths = dict(token_lengths or {})
        unknown = sorted(set(lengths) - {"at", "rt"})
        if unknown:
            raise ValueError(f"token_lengths keys are 'at' and 'rt', not {', '.join(unknown)}")
        if any(n < 12 for n in lengths.values()):
            raise ValueError("token_lengths must be at least 12 characters")
        if len(set(token_alphabet)) < 16:
            raise ValueError("token_alphabet needs at least 16 distinct characters")
        self.token_lengths: dict[str, int] = lengths
        """Kind (``at``/``rt``) → exact length of the tokens issued."""
        self.token_alphabet = token_alphabet
        """The characters of the sized tokens."""

    def _new_token(self, kind: str) -> str:
        length = self.token_lengths.get(kind)
        if length is None:
            return super()._new_token(kind)
        prefix = f"emu+{kind}/"
        return prefix + "".join(secrets.choice(self.token_alphabet) for _ in range(length - len(prefix)))


class _OAuth2Style(SizedTokens):
    """Shared by the OAuth2-shaped vendors: RFC 6749 §5.2 error bodies, optional omitted refresh token."""

    def __init__(self, *, omit_refresh_token: bool = False, **kwargs: Unpack[VendorOptions]) -> None:
        super().__init__(**kwargs)
        if omit_refresh_token and self.rotation:
            raise ValueError("omit_refresh_token needs rotation=False (a rotated token must be returned)")
        self.omit_refresh_token = omit_refresh_token
        """Leave ``refresh_token`` out of the answer (only with ``rotation=False``)."""

    def _oauth_error(self, counter: str, status: int, code: str, text: str) -> Response:
        self._count(counter)
        response = self.error_response(status, code, text)
        response.headers.extend(NO_STORE)
        return response

    def _bad_request(self, text: str) -> Response:
        return self._oauth_error("bad_request", 400, "invalid_request", text)

    def _bad_client_401(self) -> Response:
        response = self._oauth_error("bad_client", 401, "invalid_client", "Client authentication failed")
        response.headers.append(("WWW-Authenticate", f'Basic realm="{self.name}"'))
        return response

    def _check_basic(self, request: IncomingRequest) -> bool:
        credentials = request.basic()
        return (
            credentials is not None
            and secrets_equal(credentials[0], self.client_id)
            and secrets_equal(credentials[1], self.client_secret)
        )

    def _form(self, request: IncomingRequest) -> dict[str, list[str]] | Response:
        """The form body's parameters, or the error answer for a bad content type/body/duplicate."""
        if request.media_type() != FORM:
            return self._bad_request(f"Content-Type must be {FORM}")
        params = form_params(request.body)
        if params is None:
            return self._bad_request("The request body is not valid UTF-8")
        return self._no_duplicates(params)

    def _no_duplicates(self, params: dict[str, list[str]]) -> dict[str, list[str]] | Response:
        duplicates = _duplicates(params)
        if duplicates:
            return self._bad_request(f"Parameter included more than once: {', '.join(duplicates)}")
        return params

    def _refresh(
        self, params: Mapping[str, list[str]], *, missing: str, rejected: Callable[[str], Response]
    ) -> IssuedTokens | Response:
        """Check the grant, take the refresh token, refresh; the tokens or the error answer."""
        bad_grant = self._check_grant(params)
        if bad_grant is not None:
            return bad_grant
        refresh_token = (params.get("refresh_token") or [""])[0]
        if not refresh_token:
            return self._bad_request(missing)
        result = self.process_refresh(refresh_token)
        if result.outcome != "ok" or result.tokens is None:
            return rejected(refresh_token)
        return result.tokens

    def _invalid_grant(self, text: str) -> Response:
        response = self.error_response(400, "invalid_grant", text)
        response.headers.extend(NO_STORE)
        return response

    def _check_grant(self, params: Mapping[str, list[str]]) -> Response | None:
        grant = params.get("grant_type")
        if not grant or not grant[0]:
            return self._bad_request("Missing grant_type parameter")
        if grant[0] != "refresh_token":
            return self._oauth_error(
                "unsupported_grant_type", 400, "unsupported_grant_type", "Unsupported grant type"
            )
        return None


class OAuth2BasicEmulator(_OAuth2Style):
    """``oauth2_basic`` (oauth2-client-secret-basic.txt).

    ``POST /api/v1/oauth2/token`` with ``Authorization: Basic base64(client_id:client_secret)``,
    ``Content-Type: application/x-www-form-urlencoded`` and the form body
    ``grant_type=refresh_token&refresh_token=...``.

    * 200 ``{access_token, token_type: "Bearer", refresh_token, expires_in, scope: "get_user_info"}``
      where ``expires_in`` is the access lifetime minus one second (the document's ``7199``).
    * 400 ``unsupported_grant_type`` for another grant type.
    * 400 ``invalid_grant`` ``"Invalid refresh token: <the token>"`` — the document echoes the
      presented refresh token in the error description; so does the emulator (clients must redact).
    * 401 ``invalid_client`` with ``WWW-Authenticate: Basic`` for missing or wrong Basic credentials.
    * 400 ``invalid_request``: another content type, ``client_secret`` also in the body, a missing
      ``grant_type``/``refresh_token``, or a parameter sent twice (RFC 6749 §3.2).

    Defaults: access token 7200 s, refresh token 30 days. Extra option ``omit_refresh_token``.
    """

    name: ClassVar[str] = "oauth2_basic"
    vendor_document: ClassVar[str] = "oauth2-client-secret-basic.txt"
    token_path: ClassVar[str] = "/api/v1/oauth2/token"
    sample_path: ClassVar[str] = "/api/v1/sample"
    default_access_ttl: ClassVar[float] = 7200.0
    default_refresh_ttl: ClassVar[float] = 30 * DAY
    default_scope: ClassVar[str | None] = "get_user_info"

    def handle_token_request(self, request: IncomingRequest) -> Response:
        """Validate and answer one refresh request."""
        if not self._check_basic(request):
            return self._bad_client_401()
        params = self._form(request)
        if isinstance(params, Response):
            return params
        if "client_secret" in params:
            return self._bad_request("Client credentials must be sent only in the Authorization header")
        if "client_id" in params and params["client_id"][0] != self.client_id:
            return self._bad_request("client_id does not match the Authorization header")
        # The document echoes the presented refresh token in the error description.
        tokens = self._refresh(
            params,
            missing="Missing refresh_token parameter",
            rejected=lambda token: self._invalid_grant(f"Invalid refresh token: {token}"),
        )
        if isinstance(tokens, Response):
            return tokens
        body: dict[str, Any] = {"access_token": tokens.access_token, "token_type": "Bearer"}
        if not self.omit_refresh_token:
            body["refresh_token"] = tokens.refresh_token
        body["expires_in"] = max(0, int(self.access_ttl) - 1)
        body["scope"] = tokens.scope or "get_user_info"
        return self.success_response(body, NO_STORE)


class OAuth2PostEmulator(_OAuth2Style):
    """``oauth2_post`` (oauth2-client-secret-post.txt).

    ``POST /api/v1/oauth2/token``, ``Content-Type: application/x-www-form-urlencoded``, form body
    ``client_id``, ``client_secret``, ``refresh_token``, ``grant_type=refresh_token``; the client
    credentials go in the body only.

    * 200 ``{access_token, token_type: "Bearer", expires_in: <int>, scope, refresh_token}``.
    * 400 ``invalid_grant`` ``"Invalid refresh token"`` (no echo here).
    * 400 ``invalid_client``: missing/wrong body credentials, or an ``Authorization: Basic`` header.
    * 400 ``unsupported_grant_type``; 400 ``invalid_request`` for another content type, a missing
      ``grant_type``/``refresh_token`` or a repeated parameter.

    Defaults: access token 7200 s, refresh token 30 days. Extra option ``omit_refresh_token``.
    """

    name: ClassVar[str] = "oauth2_post"
    vendor_document: ClassVar[str] = "oauth2-client-secret-post.txt"
    token_path: ClassVar[str] = "/api/v1/oauth2/token"
    sample_path: ClassVar[str] = "/api/v1/sample"
    default_access_ttl: ClassVar[float] = 7200.0
    default_refresh_ttl: ClassVar[float] = 30 * DAY
    default_scope: ClassVar[str | None] = "get_user_info"

    def handle_token_request(self, request: IncomingRequest) -> Response:
        """Validate and answer one refresh request."""
        if (request.header("authorization") or "").strip().lower().startswith("basic"):
            return self._oauth_error(
                "bad_client",
                400,
                "invalid_client",
                "Client authentication via HTTP Basic is not supported; send client_id and client_secret in the body",
            )
        params = self._form(request)
        if isinstance(params, Response):
            return params
        client_id = (params.get("client_id") or [""])[0]
        client_secret = (params.get("client_secret") or [""])[0]
        if not (
            secrets_equal(client_id, self.client_id) and secrets_equal(client_secret, self.client_secret)
        ):
            return self._oauth_error("bad_client", 400, "invalid_client", "Client authentication failed")
        tokens = self._refresh(
            params,
            missing="Missing refresh_token parameter",
            rejected=lambda _token: self._invalid_grant("Invalid refresh token"),
        )
        if isinstance(tokens, Response):
            return tokens
        body: dict[str, Any] = {
            "access_token": tokens.access_token,
            "token_type": "Bearer",
            "expires_in": int(self.access_ttl),
            "scope": tokens.scope or "get_user_info",
        }
        if not self.omit_refresh_token:
            body["refresh_token"] = tokens.refresh_token
        return self.success_response(body, NO_STORE)


class BabelBirdEmulator(_OAuth2Style):
    """``query_basic`` (babelbird-query-basic.txt).

    ``POST /api/refreshToken.do?grant_type=refresh_token&refresh_token=...``: both parameters in
    the QUERY STRING, client credentials as ``Authorization: Basic base64(client_id:client_secret)``.

    * 200 ``{access_token, refresh_token, expires_in: 3600}``: exactly the three fields the document
      lists under "Return results" (no ``token_type``: add it with ``extra_fields``). The document
      gives no type for ``expires_in``; the emulator sends a number, ``expires_as_string=True`` sends
      ``"3600"``.
    * Errors are not documented; the emulator answers OAuth2-style: 401 ``{"error":
      "invalid_client"}`` (+ ``WWW-Authenticate: Basic``) for bad Basic credentials, 400
      ``invalid_grant`` ``"Invalid refresh token"`` for a bad token, 400 ``invalid_request`` when
      ``grant_type``/``refresh_token`` is not in the query string (a form body does not count),
      400 ``unsupported_grant_type``.

    Defaults: access token 3600 s, refresh token 30 days. Extra options ``omit_refresh_token``,
    ``expires_as_string``.
    """

    name: ClassVar[str] = "query_basic"
    vendor_document: ClassVar[str] = "babelbird-query-basic.txt"
    token_path: ClassVar[str] = "/api/refreshToken.do"
    sample_path: ClassVar[str] = "/api/v1/sample"
    default_access_ttl: ClassVar[float] = 3600.0
    default_refresh_ttl: ClassVar[float] = 30 * DAY
    default_scope: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        omit_refresh_token: bool = False,
        expires_as_string: bool = False,
        **kwargs: Unpack[VendorOptions],
    ) -> None:
        super().__init__(omit_refresh_token=omit_refresh_token, **kwargs)
        self.expires_as_string = expires_as_string
        """Emit ``expires_in`` as ``"3600"`` rather than ``3600`` (the document gives no type)."""

    def handle_token_request(self, request: IncomingRequest) -> Response:
        """Validate and answer one refresh request."""
        if not self._check_basic(request):
            return self._bad_client_401()
        params = self._no_duplicates(parse_qs(request.query, keep_blank_values=True))
        if isinstance(params, Response):
            return params
        if not (params.get("grant_type") or [""])[0]:
            return self._bad_request("grant_type is required in the query string")
        tokens = self._refresh(
            params,
            missing="refresh_token is required in the query string",
            rejected=lambda _token: self.error_response(400, "invalid_grant", "Invalid refresh token"),
        )
        if isinstance(tokens, Response):
            return tokens
        body: dict[str, Any] = {"access_token": tokens.access_token}
        if not self.omit_refresh_token:
            body["refresh_token"] = tokens.refresh_token
        body["expires_in"] = str(int(self.access_ttl)) if self.expires_as_string else int(self.access_ttl)
        return self.success_response(body, NO_STORE)


def _json_object(request: IncomingRequest) -> dict[str, Any] | None:
    try:
        value = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class IotAppIdEmulator(SizedTokens):
    """``appid_json`` (iot-appid-secret-json.txt).

    ``POST /iocm/app/sec/v1.1.0/refreshToken``, ``Content-Type: application/json``, body
    ``{"appId", "secret", "refreshToken"}`` (camelCase). HTTPS in the document: pass ``tls=``
    (optionally with ``client_ca`` for mutual TLS) and any ``port``.

    * 200 ``{accessToken, tokenType: "Bearer", expiresIn, refreshToken, scope: "default"}``;
      ``expiresIn`` is a string (``"3600"``, as the document's example quotes it) unless
      ``expires_as_string=False`` (a number, as its table types it: ``Integer``).
    * Errors ``{"error_code": "<code>", "error_desc": "<text>"}`` (the document gives the codes and
      texts, not the field names: ``error_fields`` renames them): 400 ``102202`` (a field missing,
      null or empty; ``missing_field_code="50400"`` answers ``50400`` instead, which the document
      also allows: "An input parameter is invalid"), 401 ``100208`` (appId/secret wrong), 400
      ``100449`` (``frozen`` is set), 400 ``50400`` (invalid input: not JSON, wrong content type,
      wrong types, a field longer than 256 characters, or an invalid, expired, reused or revoked
      refresh token — the document names no code for a dead refresh token), 500 ``50252`` (fault
      injection).

    Defaults: access token 3600 s, refresh token 30 days.
    """

    name: ClassVar[str] = "appid_json"
    vendor_document: ClassVar[str] = "iot-appid-secret-json.txt"
    token_path: ClassVar[str] = "/iocm/app/sec/v1.1.0/refreshToken"
    sample_path: ClassVar[str] = "/iocm/app/sample"
    default_access_ttl: ClassVar[float] = 3600.0
    default_refresh_ttl: ClassVar[float] = 30 * DAY
    default_scope: ClassVar[str | None] = "default"
    max_field_length: ClassVar[int] = 256

    def __init__(
        self,
        *,
        expires_as_string: bool = True,
        missing_field_code: Literal["102202", "50400"] = "102202",
        error_fields: tuple[str, str] = ("error_code", "error_desc"),
        **kwargs: Unpack[VendorOptions],
    ) -> None:
        super().__init__(**kwargs)
        if missing_field_code not in ("102202", "50400"):
            raise ValueError(f"missing_field_code must be '102202' or '50400', not {missing_field_code!r}")
        self.expires_as_string = expires_as_string
        """Emit ``expiresIn`` as ``"3600"`` (default, the example) rather than ``3600`` (the table)."""
        self.missing_field_code = missing_field_code
        """The code of the answer to a missing, null or empty field: ``102202`` or ``50400``."""
        self.error_fields = error_fields
        """The names of the error body's code and description fields."""
        self.frozen = False
        """Admin toggle: the app is frozen; refreshes answer 400 ``100449``."""

    def error_response(self, status: int, code: str, text: str) -> Response:
        """``{"error_code", "error_desc"}`` (or the names in :attr:`error_fields`)."""
        code_field, text_field = self.error_fields
        return Response.json(status, {code_field: code, text_field: text})

    def fault_error(self, status: int) -> Response:
        """500 → ``50252``; 503 and 429 (undocumented) carry their status as the code."""
        if status == 500:
            return self.error_response(500, "50252", "Internal server error.")
        text = "Service Unavailable" if status == 503 else "Too Many Requests"
        return self.error_response(status, str(status), text)

    def ok_error_body(self) -> dict[str, Any]:
        """``50252`` with HTTP 200."""
        code_field, text_field = self.error_fields
        return {code_field: "50252", text_field: "Internal server error."}

    def _error(self, counter: str, status: int, code: str, text: str) -> Response:
        self._count(counter)
        return self.error_response(status, code, text)

    def handle_token_request(self, request: IncomingRequest) -> Response:
        """Validate and answer one refresh request."""
        invalid = ("bad_request", 400, "50400", "The input is invalid.")
        if request.media_type() != JSON:
            return self._error(*invalid)
        body = _json_object(request)
        if body is None:
            return self._error(*invalid)
        fields = ("appId", "secret", "refreshToken")
        if any(body.get(name) in (None, "") for name in fields):
            if self.missing_field_code == "50400":
                return self._error(*invalid)
            return self._error("bad_request", 400, "102202", "Required Parameter is null or empty.")
        values = [body[name] for name in fields]
        if not all(isinstance(v, str) and len(v) <= self.max_field_length for v in values):
            return self._error(*invalid)
        app_id, secret, refresh_token = (str(v) for v in values)
        if not (secrets_equal(app_id, self.client_id) and secrets_equal(secret, self.client_secret)):
            return self._error("bad_client", 401, "100208", "AppId or secret is not right.")
        if self.frozen:
            return self._error("frozen", 400, "100449", "The device is freezed cant operate.")
        result = self.process_refresh(refresh_token)
        if result.outcome != "ok" or result.tokens is None:
            return self.error_response(400, "50400", "The input is invalid.")
        tokens = result.tokens
        expires_in: int | str = int(self.access_ttl)
        if self.expires_as_string:
            expires_in = str(expires_in)
        return self.success_response(
            {
                "accessToken": tokens.access_token,
                "tokenType": "Bearer",
                "expiresIn": expires_in,
                "refreshToken": tokens.refresh_token,
                "scope": tokens.scope or "default",
            },
        )

    def sample_extra_check(self, request: IncomingRequest) -> bool:
        """An ``app_key`` header, when sent, must be the appId."""
        app_key = request.header("app_key")
        return app_key is None or secrets_equal(app_key, self.client_id)


class IsalesBearerEmulator(SizedTokens):
    """``bearer_json`` (isales-bearer-json.txt).

    ``POST /rest/isales/v1/openapi/obs/auth/refresh`` with ``Content-Type: application/json``, the
    header ``Authentication: Bearer <the family's current access token>`` (``Authentication``, not
    ``Authorization``) and the body ``{"refreshToken": "..."}``. No client id/secret. The document
    does not say whether an expired access token may still authenticate the refresh: by default it
    may not (403, nothing changes); ``accept_expired_access_token=True`` accepts the family's current
    access token even after it expired.

    * 200 ``{"result": "0", "resultData": {"token", "tokenExpirationTime": 300, "refreshToken",
      "refreshExpirationTime": 3600}}`` (seconds). ``result_as_int=True`` emits ``"result": 0`` (the
      document's example) and applies to error results too; ``numbers_as_strings=True`` emits the
      two expiration times as strings (the document's table types them ``String``).
    * Errors ``{"result": "<status>"}`` (``result`` is the document's only field for a failure;
      ``error_descriptions=True`` adds an undocumented ``"resultDesc": "<text>"``): 400 (wrong
      content type, bad JSON, ``refreshToken`` missing/empty), 401 (``account_suspended`` is set),
      403 ``Authentication failed.`` (missing/malformed ``Authentication`` header, an access token
      that is not the family's current one or has expired, or an invalid/expired/reused/revoked
      refresh token), 404 (other paths), 500 ``Business failure`` (fault injection).
      ``ok_with_error_body`` sends HTTP 200 with ``result`` ``"1"``.

    Defaults: access token 300 s, refresh token 3600 s.
    """

    name: ClassVar[str] = "bearer_json"
    vendor_document: ClassVar[str] = "isales-bearer-json.txt"
    token_path: ClassVar[str] = "/rest/isales/v1/openapi/obs/auth/refresh"
    sample_path: ClassVar[str] = "/rest/isales/v1/openapi/sample"
    default_access_ttl: ClassVar[float] = 300.0
    default_refresh_ttl: ClassVar[float] = 3600.0
    default_scope: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        result_as_int: bool = False,
        numbers_as_strings: bool = False,
        accept_expired_access_token: bool = False,
        error_descriptions: bool = False,
        **kwargs: Unpack[VendorOptions],
    ) -> None:
        super().__init__(**kwargs)
        self.accept_expired_access_token = accept_expired_access_token
        """Accept the family's current access token in ``Authentication`` after it expired."""
        self.error_descriptions = error_descriptions
        """Add the undocumented ``resultDesc`` text to error answers."""
        self.result_as_int = result_as_int
        """Emit ``result`` as a number (``0``) instead of a string (``"0"``)."""
        self.numbers_as_strings = numbers_as_strings
        """Emit ``tokenExpirationTime``/``refreshExpirationTime`` as strings."""
        self.account_suspended = False
        """Admin toggle: the account is suspended; refreshes answer 401."""

    def _result(self, code: int) -> int | str:
        return code if self.result_as_int else str(code)

    def error_response(self, status: int, code: str, text: str) -> Response:
        """``{"result": "<status>"}`` (plus ``"resultDesc": "<text>"`` with ``error_descriptions``)."""
        return Response.json(status, self._failure(status, text))

    def _failure(self, code: int, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"result": self._result(code)}
        if self.error_descriptions:
            body["resultDesc"] = text
        return body

    def fault_error(self, status: int) -> Response:
        """500 ``Business failure``; 503/429 (undocumented) in the same shape."""
        text = {500: "Business failure.", 503: "Service unavailable.", 429: "Too many requests."}[status]
        return self.error_response(status, str(status), text)

    def ok_error_body(self) -> dict[str, Any]:
        """``result`` 1 with HTTP 200."""
        return self._failure(1, "Business failure.")

    def _error(self, counter: str, status: int, text: str) -> Response:
        self._count(counter)
        return self.error_response(status, str(status), text)

    def handle_token_request(self, request: IncomingRequest) -> Response:
        """Validate and answer one refresh request."""
        if self.account_suspended:
            return self._error("account_suspended", 401, "Unauthorized operation.")
        access_token = request.bearer("authentication")
        if access_token is None:
            return self._error("bad_auth_header", 403, "Authentication failed.")
        if request.media_type() != JSON:
            return self._error("bad_request", 400, "Incorrect request.")
        body = _json_object(request)
        refresh_token = body.get("refreshToken") if body is not None else None
        if not isinstance(refresh_token, str) or not refresh_token:
            return self._error("bad_request", 400, "Incorrect request.")
        result: RefreshResult = self.process_refresh(
            refresh_token,
            bound_access_token=access_token,
            bound_may_be_expired=self.accept_expired_access_token,
        )
        if result.outcome != "ok" or result.tokens is None:
            return self.error_response(403, "403", "Authentication failed.")
        tokens = result.tokens
        token_ttl: int | str = int(self.access_ttl)
        refresh_ttl: int | str = int(tokens.refresh_expires_in)
        if self.numbers_as_strings:
            token_ttl, refresh_ttl = str(token_ttl), str(refresh_ttl)
        return self.success_response(
            {
                "result": self._result(0),
                "resultData": {
                    "token": tokens.access_token,
                    "tokenExpirationTime": token_ttl,
                    "refreshToken": tokens.refresh_token,
                    "refreshExpirationTime": refresh_ttl,
                },
            },
        )

    def sample_access_token(self, request: IncomingRequest) -> str | None:
        """``Authorization: Bearer`` (or, as the refresh call spells it, ``Authentication: Bearer``)."""
        return request.bearer("authorization") or request.bearer("authentication")


EMULATORS: dict[str, type[VendorEmulator]] = {
    OAuth2BasicEmulator.name: OAuth2BasicEmulator,
    OAuth2PostEmulator.name: OAuth2PostEmulator,
    BabelBirdEmulator.name: BabelBirdEmulator,
    IotAppIdEmulator.name: IotAppIdEmulator,
    IsalesBearerEmulator.name: IsalesBearerEmulator,
}
"""Dialect name → emulator class."""


def serve(
    dialects: Iterable[str],
    host: str = "127.0.0.1",
    base_port: int | None = None,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    **kwargs: Any,
) -> list[VendorEmulator]:
    """Start one emulator per dialect (in the given order) and return them, started.

    :param dialects: dialect names (keys of :data:`EMULATORS`).
    :param host: a loopback address; anything else is refused with ``ValueError``.
    :param base_port: the first emulator listens on ``base_port``, the next on ``base_port + 1``...;
        ``None`` picks free ports.
    :param options: per-dialect extra constructor arguments, e.g.
        ``{"appid_json": {"expires_as_string": False}}``.
    :param kwargs: constructor arguments common to every emulator (``rotation``, ``tls``, ...).

    If one fails to start, those already started are stopped and the error is raised.
    """
    names = list(dialects)
    unknown = [n for n in names if n not in EMULATORS]
    if unknown:
        raise ValueError(f"unknown dialect(s) {', '.join(unknown)}; known: {', '.join(sorted(EMULATORS))}")
    bind = check_loopback(host)
    started: list[VendorEmulator] = []
    try:
        for index, name in enumerate(names):
            port = 0 if base_port is None else base_port + index
            extra = dict((options or {}).get(name, {}))
            emulator = EMULATORS[name](host=bind, port=port, **kwargs, **extra)
            started.append(emulator.start())
    except BaseException:
        for emulator in started:
            emulator.stop()
        raise
    return started
