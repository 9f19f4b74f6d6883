"""The emulated vendor token endpoint: :class:`VendorEmulator`, the base of the five vendors.

:class:`VendorEmulator` is a real HTTP(S) server (``http.server.ThreadingHTTPServer`` on daemon
threads, bound to a loopback address only) holding the token state of one emulated vendor. Its
parts live in their own modules and are re-exported here, so every name stays importable from
``airflow_provider_tokenrefresh.testing.emulator`` as before:

==============================  ===================================================================
module                          responsibility
==============================  ===================================================================
:mod:`.server`                  HTTP plumbing: the loopback server, the handler, request/response values
:mod:`.state`                   token families, rotation, reuse detection, expiry (the refresh engine)
:mod:`.faults`                  fault injection (:data:`FAULT_KINDS`) and the answers faults send
:mod:`.clock`                   :class:`ManualClock`
:mod:`.tls`                     :class:`TLSConfig`, :func:`check_loopback`
this module                     lifecycle, URLs, dispatch, counters, recorded requests, subclass hooks
==============================  ===================================================================

The vendor-specific wire format lives in the subclasses in
:mod:`airflow_provider_tokenrefresh.testing.vendors`. None of these modules imports anything from
the rest of the package (or from Airflow): the emulators are written from the vendor documents
alone, so that a wrong dialect preset is caught by a faithful emulator instead of agreeing with itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from airflow_provider_tokenrefresh.testing.clock import ManualClock
from airflow_provider_tokenrefresh.testing.faults import FAULT_KINDS, Fault, FaultInjection
from airflow_provider_tokenrefresh.testing.server import (
    MAX_REQUEST_BODY,
    IncomingRequest,
    RecordedAnswer,
    RecordedRequest,
    Response,
    _Handler,
    _Server,
    form_params,
)
from airflow_provider_tokenrefresh.testing.state import (
    DAY,
    GRACE_MODES,
    FamilySnapshot,
    GraceMode,
    IssuedTokens,
    RefreshOutcome,
    RefreshResult,
    TokenCharset,
    TokenState,
    _Family,
    secrets_equal,
)
from airflow_provider_tokenrefresh.testing.tls import TLSConfig, check_loopback

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType
    from typing import Self

logger = logging.getLogger(__name__)

__all__ = [
    "DAY",
    "FAULT_KINDS",
    "MAX_REQUEST_BODY",
    "CommonOptions",
    "FamilySnapshot",
    "Fault",
    "IncomingRequest",
    "IssuedTokens",
    "ManualClock",
    "RecordedAnswer",
    "RecordedRequest",
    "RefreshOutcome",
    "RefreshResult",
    "Response",
    "TLSConfig",
    "TokenCharset",
    "VendorEmulator",
    "_Family",
    "_Handler",
    "_Server",
    "check_loopback",
    "form_params",
    "secrets_equal",
]


class CommonOptions(TypedDict, total=False):
    """Constructor keyword arguments every emulator accepts (see :class:`VendorEmulator`)."""

    client_id: str
    client_secret: str
    rotation: bool
    reuse_detection: bool
    reuse_grace: float
    grace_mode: GraceMode
    access_ttl: float | None
    refresh_ttl: float | None
    latency: float
    host: str
    port: int
    tls: TLSConfig | None
    clock: Callable[[], float]
    token_charset: TokenCharset
    revoke_old_access_tokens: bool
    extra_fields: Mapping[str, Any] | None
    wait_on_clock: bool


class VendorEmulator(TokenState, FaultInjection):
    """An emulated vendor token endpoint: a real HTTP(S) server on a loopback address.

    Subclasses define the wire format (one per vendor document); this class owns the server, the
    token state and the test hooks.

    :param client_id: the client id (appId) the emulator accepts.
    :param client_secret: the client secret the emulator accepts.
    :param rotation: every refresh returns a new refresh token and retires the presented one. When
        ``False`` the same refresh token stays valid (until its own expiry).
    :param reuse_detection: presenting a retired refresh token revokes its whole family: the current
        refresh token and every access token of the family stop working.
    :param reuse_grace: the vendor's reuse window in seconds (default 0: strict, as the five vendor
        documents describe). A refresh token rotated less than this long ago is still honoured once
        more, as Okta, Auth0, Ory Hydra, AWS Cognito and WorkOS do; ``grace_mode`` says how.
    :param grace_mode: ``same_pair``, ``new_pair`` or ``previous_only`` (see
        :data:`~airflow_provider_tokenrefresh.testing.state.GraceMode`).
    :param access_ttl: access-token lifetime in seconds (vendor default when ``None``).
    :param refresh_ttl: refresh-token lifetime in seconds (vendor default when ``None``).
    :param latency: seconds added to every token-endpoint request.
    :param host: loopback address to bind (anything else is refused).
    :param port: TCP port; ``0`` picks a free one.
    :param tls: serve HTTPS (optionally requiring client certificates) instead of HTTP.
    :param clock: time source used for every expiry decision (tests pass a :class:`ManualClock`).
    :param token_charset: ``"urlsafe"`` (default) or ``"base64"`` (tokens contain ``+``, ``/`` and
        ``=``, which catches clients that do not percent-encode them).
    :param revoke_old_access_tokens: a refresh invalidates the family's earlier access tokens
        (default ``False``: they stay valid until they expire, as with most vendors).
    :param extra_fields: fields the vendor document does not list, added to the top level of every
        successful token answer (default: none; an answer holds exactly the documented fields).
    :param wait_on_clock: ``latency`` and the ``slow`` fault wait on ``clock`` instead of real time:
        the clock must have a ``sleep(seconds, cancel)`` method (a :class:`ManualClock`), and a test
        releases a held request with ``clock.advance()`` after ``clock.wait_for_sleepers()`` told
        it the request is held. Default ``False``: real seconds.
    """

    name: ClassVar[str] = "vendor"
    """The dialect name this emulator follows."""
    vendor_document: ClassVar[str | None] = None
    """The file in ``shared/vendor-docs`` this emulator follows."""
    token_path: ClassVar[str] = "/token"
    """Path of the token (refresh) endpoint."""
    sample_path: ClassVar[str] = "/sample"
    """Path of the protected sample API (GET with a valid access token → 200)."""
    default_access_ttl: ClassVar[float] = 3600.0
    default_refresh_ttl: ClassVar[float] = 30 * DAY
    default_scope: ClassVar[str | None] = None
    token_method: ClassVar[str] = "POST"
    poll_interval: ClassVar[float] = 0.02
    """How often the accept loop checks for ``stop()`` (bounds how long ``stop()`` takes)."""

    def __init__(
        self,
        *,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",  # noqa: S107 - a throwaway emulator credential
        rotation: bool = True,
        reuse_detection: bool = True,
        reuse_grace: float = 0.0,
        grace_mode: GraceMode = "new_pair",
        access_ttl: float | None = None,
        refresh_ttl: float | None = None,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLSConfig | None = None,
        clock: Callable[[], float] = time.time,
        token_charset: TokenCharset = "urlsafe",  # noqa: S107 - not a password
        revoke_old_access_tokens: bool = False,
        extra_fields: Mapping[str, Any] | None = None,
        wait_on_clock: bool = False,
    ) -> None:
        if token_charset not in ("urlsafe", "base64"):
            raise ValueError(f"token_charset must be 'urlsafe' or 'base64', not {token_charset!r}")
        self.client_id = client_id
        self.client_secret = client_secret
        if grace_mode not in GRACE_MODES:
            raise ValueError(f"grace_mode must be one of {', '.join(GRACE_MODES)}, not {grace_mode!r}")
        self.rotation = rotation
        self.reuse_detection = reuse_detection
        self.reuse_grace = float(reuse_grace)
        self.grace_mode: GraceMode = grace_mode
        self.access_ttl = float(self.default_access_ttl if access_ttl is None else access_ttl)
        self.refresh_ttl = float(self.default_refresh_ttl if refresh_ttl is None else refresh_ttl)
        self.latency = float(latency)
        self.host = check_loopback(host)
        self.port = int(port)
        self.tls = tls
        self.clock = clock
        self.token_charset: TokenCharset = token_charset
        self.revoke_old_access_tokens = revoke_old_access_tokens
        self.extra_fields: dict[str, Any] = dict(extra_fields or {})
        self._clock_sleep: Callable[[float, threading.Event], object] | None = None
        if wait_on_clock:
            clock_sleep = getattr(clock, "sleep", None)
            if not callable(clock_sleep):
                raise ValueError(
                    "wait_on_clock needs a clock with a sleep(seconds, cancel) method (ManualClock)"
                )
            self._clock_sleep = clock_sleep
        self.wait_on_clock = wait_on_clock

        self._lock = threading.RLock()
        self._families: dict[str, _Family] = {}
        self._refresh_index: dict[str, str] = {}
        self._access_index: dict[str, str] = {}
        self._faults: list[Fault] = []
        self._counters: Counter[str] = Counter()
        self._refresh_requests = 0
        self._requests: list[RecordedRequest] = []
        self._answers: list[RecordedAnswer] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind the socket and serve on a daemon thread; return ``self``."""
        with self._lock:
            if self._server is not None:
                return self
            context = self.tls.server_context() if self.tls is not None else None
            server = _Server((self.host, self.port), self, context)
            self._stopping.clear()
            self._server = server
            self.port = int(server.server_address[1])
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": self.poll_interval},
                name=f"emulator-{self.name}-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and every open connection. Idempotent."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = None
            self._thread = None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"<{type(self).__name__} {self.name} {where}>"

    @property
    def scheme(self) -> str:
        """``https`` when serving TLS, else ``http``."""
        return "https" if self.tls is not None else "http"

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:PORT`` (no trailing slash)."""
        if self.port == 0:
            raise RuntimeError("the emulator has no port yet: call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def token_url(self) -> str:
        """``base_url`` + ``token_path``."""
        return self.base_url + self.token_path

    @property
    def sample_url(self) -> str:
        """``base_url`` + ``sample_path``."""
        return self.base_url + self.sample_path

    # -- token state --------------------------------------------------------------------------------

    @property
    def counters(self) -> dict[str, int]:
        """Outcome → count (a copy); a key appears once it happened.

        Token endpoint: ``ok``; ``invalid_grant`` (any rejected refresh token, whatever the vendor
        calls it) with ``invalid_grant:unknown|revoked|reused|expired``; ``reuse_detected`` (a
        retired token was presented and its family revoked); ``bad_client``; ``bad_request``;
        ``unsupported_grant_type``; ``bad_auth_header`` (isales ``Authentication``) with
        ``bad_auth_header:expired``; ``frozen``
        (iot); ``account_suspended`` (isales); ``method_not_allowed``; ``fault:<kind>``.
        Elsewhere: ``issued`` (:meth:`issue_tokens`), ``family_revoked``, ``sample:ok``,
        ``sample:unauthorized``, ``not_found``, ``tls_handshake_failed``.
        """
        with self._lock:
            return dict(self._counters)

    @property
    def refresh_requests(self) -> int:
        """Total requests that reached the token endpoint (any outcome, faults included)."""
        with self._lock:
            return self._refresh_requests

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every token-endpoint request as it arrived (a copy), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def answers(self) -> list[RecordedAnswer]:
        """Every token-endpoint answer as sent (a copy), oldest first, in the order of :attr:`requests`
        once each request is answered (a held answer appears when it is sent)."""
        with self._lock:
            return list(self._answers)

    def reset_counters(self) -> None:
        """Zero the counters and ``refresh_requests`` and forget the recorded requests and answers."""
        with self._lock:
            self._counters.clear()
            self._refresh_requests = 0
            self._requests.clear()
            self._answers.clear()

    # -- dispatch -----------------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._clock_sleep is not None:
            self._clock_sleep(seconds, self._stopping)
        else:
            self._stopping.wait(seconds)

    def _hold(self, release: Any, timeout: float) -> None:
        """Wait until ``release`` is set, the emulator stops, or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while not release.wait(0.05) and not self._stopping.is_set() and time.monotonic() < deadline:
            pass

    def _dispatch(self, request: IncomingRequest) -> Response:
        try:
            if request.path == self.token_path:
                return self._token_endpoint(request)
            if request.path == self.sample_path:
                return self._sample_endpoint(request)
            self._count("not_found")
            return self.error_response(404, "not_found", "The requested content is not found.")
        except Exception:  # a bug in an emulator must show as a 500, not a hung client
            logger.debug("emulator %s: internal error", self.name, exc_info=True)
            return Response.json(500, {"error": "emulator_internal_error"})

    def _token_endpoint(self, request: IncomingRequest) -> Response:
        response = self._answer_token_request(request)
        with self._lock:
            self._answers.append(
                RecordedAnswer(
                    status=0 if response.drop else response.status,
                    headers=tuple(response.headers),
                    body=b"" if response.drop else response.body,
                    content_type=None if response.drop else response.content_type,
                    dropped=response.drop,
                )
            )
        return response

    def _answer_token_request(self, request: IncomingRequest) -> Response:
        with self._lock:
            self._refresh_requests += 1
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    query=request.query,
                    headers=dict(request.headers),
                    raw_headers=request.raw_headers,
                    body=request.body,
                    client_cert_subject=request.client_cert_subject,
                    time=self.clock(),
                    client_port=request.client_port,
                )
            )
            fault = self._faults.pop(0) if self._faults else None
        self._wait(self.latency)
        if fault is not None:
            self._count(f"fault:{fault.kind}")
            early = self._fault_response(fault)
            if early is not None:
                return early
        if request.method != self.token_method:
            self._count("method_not_allowed")
            response = self.error_response(405, "invalid_request", "Method not allowed.")
            response.headers.append(("Allow", self.token_method))
        else:
            response = self.handle_token_request(request)
        if fault is not None and fault.kind == "slow":
            self._wait(float(fault.params.get("delay", 2.0)))
        if fault is not None and fault.kind == "hold":
            self._wait(float(fault.params.get("at_least", 0.0)))
            self._hold(fault.params["release"], float(fault.params.get("timeout", 60.0)))
        if fault is not None and fault.kind == "drop_after":
            return Response(drop=True)
        return response

    def _sample_endpoint(self, request: IncomingRequest) -> Response:
        token = self.sample_access_token(request)
        if token is not None and self.is_access_token_valid(token) and self.sample_extra_check(request):
            self._count("sample:ok")
            return Response.json(200, {"ok": True, "vendor": self.name})
        self._count("sample:unauthorized")
        response = self.error_response(401, "invalid_token", "The access token is invalid or expired.")
        response.headers.append(("WWW-Authenticate", 'Bearer error="invalid_token"'))
        return response

    # -- what subclasses define ---------------------------------------------------------------------

    def success_response(
        self, body: Mapping[str, Any], headers: list[tuple[str, str]] | None = None
    ) -> Response:
        """A 200 token answer: the documented ``body`` plus :attr:`extra_fields` (if any) on top."""
        return Response.json(200, {**body, **self.extra_fields}, headers)

    def handle_token_request(self, request: IncomingRequest) -> Response:
        """Validate a token request in the vendor's wire format and answer it (subclasses)."""
        raise NotImplementedError

    def error_response(self, status: int, code: str, text: str) -> Response:
        """An error answer in the vendor's error shape."""
        return Response.json(status, {"error": code, "error_description": text})

    def sample_access_token(self, request: IncomingRequest) -> str | None:
        """The access token the sample API reads (``Authorization: Bearer`` by default)."""
        return request.bearer("authorization")

    def sample_extra_check(self, request: IncomingRequest) -> bool:
        """A vendor-specific extra condition for the sample API (default: none)."""
        return True
