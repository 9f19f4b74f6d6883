"""The shared machinery of the emulated vendor token endpoints.

:class:`VendorEmulator` is a real HTTP(S) server (``http.server.ThreadingHTTPServer`` on daemon
threads, bound to a loopback address only) holding the token state of one emulated vendor: token
families, rotation, reuse detection, expiry against an injectable clock, fault injection, counters
and a record of every token-endpoint request. The vendor-specific wire format (what the request
must look like, what the answer looks like) lives in the subclasses in
:mod:`airflow_provider_tokenrefresh.testing.vendors`.

This module deliberately imports nothing from the rest of the package (and nothing from Airflow):
the emulators are written from the vendor documents alone, so that a wrong dialect preset is
caught by a faithful emulator instead of agreeing with itself.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import socketserver
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypedDict, cast
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from types import TracebackType
    from typing import Self

logger = logging.getLogger(__name__)

DAY = 86400.0
MAX_REQUEST_BODY = 1024 * 1024
"""Request bodies larger than this are refused with 413 (the emulators never need more)."""

FAULT_KINDS: dict[str, frozenset[str]] = {
    "http_500": frozenset(),
    "http_503": frozenset({"retry_after"}),
    "http_429": frozenset({"retry_after"}),
    "ok_with_error_body": frozenset(),
    "malformed_json": frozenset({"body", "content_type"}),
    "slow": frozenset({"delay"}),
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
* ``drop_before``: the connection is closed without an answer; the refresh is NOT processed.
* ``drop_after``: the refresh IS processed (the refresh token rotates), then the connection is
  closed without an answer; the client's outcome is unknown.
* ``huge_body`` (``size``, default 5 MiB): HTTP 200 with a body of that many bytes; not processed.
"""

TokenCharset = Literal["urlsafe", "base64"]


# --------------------------------------------------------------------------------------------------
# Small public value types
# --------------------------------------------------------------------------------------------------


class ManualClock:
    """A clock for tests: starts at ``start`` and moves only when told to.

    Pass it as ``clock=`` to an emulator and call :meth:`advance` to expire tokens without sleeping.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The current time in seconds since the epoch."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; return the new time."""
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """Jump to ``now``."""
        with self._lock:
            self._now = float(now)


@dataclass(frozen=True)
class TLSConfig:
    """Serve HTTPS instead of HTTP.

    :param certfile: PEM server certificate (chain).
    :param keyfile: PEM private key; ``None`` when it is inside ``certfile``.
    :param client_ca: PEM CA bundle; when set, every client must present a certificate signed by it
        (mutual TLS) or the TLS handshake fails.
    """

    certfile: str | Path
    keyfile: str | Path | None = None
    client_ca: str | Path | None = None

    def server_context(self) -> ssl.SSLContext:
        """The server-side ``SSLContext`` this configuration describes."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.certfile), None if self.keyfile is None else str(self.keyfile))
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(self.client_ca))
        return context


@dataclass(frozen=True)
class IssuedTokens:
    """A token pair handed out by an emulator (tokens are left out of ``repr``).

    :param access_token: the access token.
    :param refresh_token: the refresh token.
    :param family_id: the token family both belong to.
    :param expires_in: access-token lifetime in seconds.
    :param refresh_expires_in: refresh-token lifetime left, in seconds.
    :param scope: the family's scope, if the vendor has one.
    """

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    family_id: str = ""
    expires_in: float = 0.0
    refresh_expires_in: float = 0.0
    scope: str | None = None


@dataclass(frozen=True)
class FamilySnapshot:
    """The state of one token family at one moment (tokens are left out of ``repr``).

    :param family_id: the family's id.
    :param access_token: the latest access token issued to the family.
    :param refresh_token: the family's current refresh token.
    :param access_expires_at: epoch seconds at which ``access_token`` expires.
    :param refresh_expires_at: epoch seconds at which ``refresh_token`` expires.
    :param revoked: whether the family was revoked (by reuse detection or an admin call).
    :param revoked_reason: why, when revoked.
    :param refreshes: how many successful refreshes the family had.
    :param scope: the family's scope.
    """

    family_id: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: float
    refresh_expires_at: float
    revoked: bool
    revoked_reason: str | None
    refreshes: int
    scope: str | None


@dataclass(frozen=True)
class Fault:
    """One queued fault: its kind (a key of :data:`FAULT_KINDS`) and parameters."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedRequest:
    """A token-endpoint request exactly as it arrived on the wire.

    :param method: HTTP method.
    :param path: path without the query string.
    :param query: the raw query string (``""`` when none).
    :param headers: header name (lower-cased) to value; repeated headers are joined with ``", "``.
    :param raw_headers: the headers as sent: original spelling and order.
    :param body: the raw body bytes.
    :param client_cert_subject: the verified client certificate's subject (mutual TLS), else ``None``.
    :param time: the emulator clock's time when the request arrived.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_headers: tuple[tuple[str, str], ...]
    body: bytes
    client_cert_subject: str | None = None
    time: float = 0.0

    def header(self, name: str) -> str | None:
        """A header's value, case-insensitively."""
        return self.headers.get(name.lower())

    def query_params(self) -> dict[str, list[str]]:
        """The query string parsed (blank values kept)."""
        return parse_qs(self.query, keep_blank_values=True)

    def form(self) -> dict[str, list[str]]:
        """The body parsed as ``application/x-www-form-urlencoded`` (blank values kept)."""
        return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


# --------------------------------------------------------------------------------------------------
# Request / response plumbing shared by the vendor subclasses
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncomingRequest:
    """A parsed HTTP request handed to the vendor code (internal, but typed for subclasses)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_headers: tuple[tuple[str, str], ...]
    body: bytes
    client_cert_subject: str | None

    def header(self, name: str) -> str | None:
        """A header's value, case-insensitively."""
        return self.headers.get(name.lower())

    def media_type(self) -> str:
        """The ``Content-Type`` without parameters, lower-cased (``""`` when absent)."""
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()

    def bearer(self, header: str = "authorization") -> str | None:
        """The token of a ``Bearer <token>`` header, or ``None``."""
        value = self.header(header)
        if not value:
            return None
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            return None
        return token

    def basic(self) -> tuple[str, str] | None:
        """``(user, password)`` of an ``Authorization: Basic`` header, or ``None`` when absent/broken."""
        value = self.header("authorization")
        if not value:
            return None
        scheme, _, encoded = value.strip().partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            return None
        return user, password


@dataclass
class Response:
    """An answer to write, or ``drop=True`` to close the connection without answering."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json;charset=UTF-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False

    @classmethod
    def json(cls, status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
        """A JSON answer."""
        return cls(status=status, body=json.dumps(payload).encode("utf-8"), headers=list(headers or []))


def form_params(body: bytes) -> dict[str, list[str]] | None:
    """Parse a form body; ``None`` when it is not valid UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return parse_qs(text, keep_blank_values=True)


def secrets_equal(given: str, expected: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


# --------------------------------------------------------------------------------------------------
# Token state
# --------------------------------------------------------------------------------------------------


@dataclass
class _Family:
    family_id: str
    scope: str | None
    refresh_token: str
    refresh_expires_at: float
    access_token: str
    access_expires_at: float
    access_tokens: dict[str, float] = field(default_factory=dict)
    retired_refresh: set[str] = field(default_factory=set)
    revoked: bool = False
    revoked_reason: str | None = None
    refreshes: int = 0

    def snapshot(self) -> FamilySnapshot:
        return FamilySnapshot(
            family_id=self.family_id,
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            access_expires_at=self.access_expires_at,
            refresh_expires_at=self.refresh_expires_at,
            revoked=self.revoked,
            revoked_reason=self.revoked_reason,
            refreshes=self.refreshes,
            scope=self.scope,
        )


RefreshOutcome = Literal["ok", "invalid_grant", "bad_auth"]


@dataclass(frozen=True)
class RefreshResult:
    """What the shared refresh engine decided (vendor subclasses render it).

    ``outcome`` is ``"ok"``, ``"invalid_grant"`` (the refresh token is rejected: ``reason`` is
    ``unknown``, ``revoked``, ``reused`` or ``expired``) or ``"bad_auth"`` (the access token bound to
    the request is not the family's current one; nothing changed).
    """

    outcome: RefreshOutcome
    reason: str = ""
    tokens: IssuedTokens | None = None
    rotated: bool = False


class CommonOptions(TypedDict, total=False):
    """Constructor keyword arguments every emulator accepts (see :class:`VendorEmulator`)."""

    client_id: str
    client_secret: str
    rotation: bool
    reuse_detection: bool
    access_ttl: float | None
    refresh_ttl: float | None
    latency: float
    host: str
    port: int
    tls: TLSConfig | None
    clock: Callable[[], float]
    token_charset: TokenCharset
    revoke_old_access_tokens: bool


def check_loopback(host: str) -> str:
    """Return ``host`` as an address to bind, refusing anything that is not loopback.

    ``localhost`` becomes ``127.0.0.1``. ``0.0.0.0``, ``::`` and every routable address are refused.
    """
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"emulators bind loopback addresses only; {host!r} is not an IP address") from None
    if not address.is_loopback:
        raise ValueError(f"emulators bind loopback addresses only (127.0.0.1, ::1); refusing {host!r}")
    return str(address)


# --------------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        emulator: VendorEmulator,
        tls_context: ssl.SSLContext | None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.emulator = emulator
        self.tls_context = tls_context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN of the address (a reverse DNS lookup); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's own thread: TLS handshake (if any) here, not in the accept loop."""
        conn: socket.socket = request
        with self._connections_lock:
            self._connections.add(conn)
        try:
            if self.tls_context is None:
                _Handler(conn, client_address, self)
                return
            conn.settimeout(10)
            try:
                tls_conn = self.tls_context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.emulator._count("tls_handshake_failed")
                logger.debug("emulator %s: TLS handshake failed: %s", self.emulator.name, type(exc).__name__)
                return
            with self._connections_lock:
                self._connections.discard(conn)
                self._connections.add(tls_conn)
            try:
                _Handler(tls_conn, client_address, self)
            finally:
                with self._connections_lock:
                    self._connections.discard(tls_conn)
                with contextlib.suppress(OSError):
                    tls_conn.close()
        finally:
            with self._connections_lock:
                self._connections.discard(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanish (timeouts, dropped connections): nothing to report, and never a traceback
        # that could carry a request line with a token in it.
        logger.debug("emulator %s: connection error", self.emulator.name, exc_info=False)

    def close_connections(self) -> None:
        """Shut down every open client connection (wakes handler threads blocked on reads)."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "VendorEmulator/1.0"
    sys_version = ""
    timeout = 30
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms stalls

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines can carry a refresh token (query_basic): never log them.
        return

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _read_body(self) -> bytes | None:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_REQUEST_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        server = cast("_Server", self.server)
        emulator = server.emulator
        try:
            body = self._read_body()
        except ValueError:
            self._write(Response.json(400, {"error": "invalid_request"}))
            self.close_connection = True
            return
        if body is None:
            self._write(Response.json(413, {"error": "request_too_large"}))
            self.close_connection = True
            return
        path, _, query = self.path.partition("?")
        raw_headers = tuple((k, v) for k, v in self.headers.items())
        headers: dict[str, str] = {}
        for key, value in raw_headers:
            lower = key.lower()
            headers[lower] = f"{headers[lower]}, {value}" if lower in headers else value
        subject: str | None = None
        if isinstance(self.connection, ssl.SSLSocket):
            peer = self.connection.getpeercert()
            if peer:
                rdns = cast("tuple[tuple[tuple[str, str], ...], ...]", peer.get("subject", ()))
                subject = ",".join(f"{k}={v}" for rdn in rdns for (k, v) in rdn)
        request = IncomingRequest(
            method=self.command,
            path=path,
            query=query,
            headers=headers,
            raw_headers=raw_headers,
            body=body,
            client_cert_subject=subject,
        )
        response = emulator._dispatch(request)
        logger.debug(
            "emulator %s: %s %s -> %s",
            emulator.name,
            self.command,
            path,
            "dropped" if response.drop else response.status,
        )
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
            return
        self._write(response)

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            if response.content_type is not None:
                self.send_header("Content-Type", response.content_type)
            for key, value in response.headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


# --------------------------------------------------------------------------------------------------
# The base emulator
# --------------------------------------------------------------------------------------------------


class VendorEmulator:
    """An emulated vendor token endpoint: a real HTTP(S) server on a loopback address.

    Subclasses define the wire format (one per vendor document); this class owns the server, the
    token state and the test hooks.

    :param client_id: the client id (appId) the emulator accepts.
    :param client_secret: the client secret the emulator accepts.
    :param rotation: every refresh returns a new refresh token and retires the presented one. When
        ``False`` the same refresh token stays valid (until its own expiry).
    :param reuse_detection: presenting a retired refresh token revokes its whole family: the current
        refresh token and every access token of the family stop working.
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
    """

    name: ClassVar[str] = "vendor"
    """The dialect name this emulator follows."""
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
        access_ttl: float | None = None,
        refresh_ttl: float | None = None,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLSConfig | None = None,
        clock: Callable[[], float] = time.time,
        token_charset: TokenCharset = "urlsafe",  # noqa: S107 - not a password
        revoke_old_access_tokens: bool = False,
    ) -> None:
        if token_charset not in ("urlsafe", "base64"):
            raise ValueError(f"token_charset must be 'urlsafe' or 'base64', not {token_charset!r}")
        self.client_id = client_id
        self.client_secret = client_secret
        self.rotation = rotation
        self.reuse_detection = reuse_detection
        self.access_ttl = float(self.default_access_ttl if access_ttl is None else access_ttl)
        self.refresh_ttl = float(self.default_refresh_ttl if refresh_ttl is None else refresh_ttl)
        self.latency = float(latency)
        self.host = check_loopback(host)
        self.port = int(port)
        self.tls = tls
        self.clock = clock
        self.token_charset: TokenCharset = token_charset
        self.revoke_old_access_tokens = revoke_old_access_tokens

        self._lock = threading.RLock()
        self._families: dict[str, _Family] = {}
        self._refresh_index: dict[str, str] = {}
        self._access_index: dict[str, str] = {}
        self._faults: list[Fault] = []
        self._counters: Counter[str] = Counter()
        self._refresh_requests = 0
        self._requests: list[RecordedRequest] = []
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

    def _new_token(self, kind: str) -> str:
        if self.token_charset == "base64":
            # 22 random bytes -> 30 base64 characters + "==", and explicit "+" and "/".
            return f"emu+{kind}/" + base64.b64encode(secrets.token_bytes(22)).decode("ascii")
        return f"emu-{kind}-" + secrets.token_urlsafe(24)

    def issue_tokens(self, scope: str | None = None) -> IssuedTokens:
        """Start a new token family, as the vendor's authorization flow would; return its tokens."""
        with self._lock:
            now = self.clock()
            family_id = "fam-" + secrets.token_hex(6)
            access = self._new_token("at")
            refresh = self._new_token("rt")
            family = _Family(
                family_id=family_id,
                scope=scope if scope is not None else self.default_scope,
                refresh_token=refresh,
                refresh_expires_at=now + self.refresh_ttl,
                access_token=access,
                access_expires_at=now + self.access_ttl,
            )
            family.access_tokens[access] = family.access_expires_at
            self._families[family_id] = family
            self._refresh_index[refresh] = family_id
            self._access_index[access] = family_id
            self._counters["issued"] += 1
            return IssuedTokens(
                access_token=access,
                refresh_token=refresh,
                family_id=family_id,
                expires_in=self.access_ttl,
                refresh_expires_in=self.refresh_ttl,
                scope=family.scope,
            )

    def refresh(self, refresh_token: str, *, bound_access_token: str | None = None) -> RefreshResult:
        """The refresh engine every vendor shares (also callable directly from tests).

        :param refresh_token: the presented refresh token.
        :param bound_access_token: when given, it must be the family's current access token (expired
            or not) or the answer is ``bad_auth`` and nothing changes (isales' ``Authentication``).
        """
        with self._lock:
            now = self.clock()
            family_id = self._refresh_index.get(refresh_token)
            family = self._families.get(family_id) if family_id is not None else None
            if family is None:
                return RefreshResult("invalid_grant", "unknown")
            if family.revoked:
                return RefreshResult("invalid_grant", "revoked")
            if refresh_token != family.refresh_token:
                # A retired (already rotated) refresh token of this family.
                if self.reuse_detection:
                    self._revoke(family, "refresh token reuse detected")
                    self._counters["reuse_detected"] += 1
                return RefreshResult("invalid_grant", "reused")
            if now >= family.refresh_expires_at:
                return RefreshResult("invalid_grant", "expired")
            if bound_access_token is not None and not secrets_equal(bound_access_token, family.access_token):
                return RefreshResult("bad_auth", "access token is not the family's current one")

            access = self._new_token("at")
            if self.revoke_old_access_tokens:
                for old in family.access_tokens:
                    self._access_index.pop(old, None)
                family.access_tokens.clear()
            family.access_token = access
            family.access_expires_at = now + self.access_ttl
            family.access_tokens[access] = family.access_expires_at
            self._access_index[access] = family.family_id
            if self.rotation:
                new_refresh = self._new_token("rt")
                family.retired_refresh.add(family.refresh_token)
                family.refresh_token = new_refresh
                family.refresh_expires_at = now + self.refresh_ttl
                self._refresh_index[new_refresh] = family.family_id
            family.refreshes += 1
            return RefreshResult(
                "ok",
                tokens=IssuedTokens(
                    access_token=access,
                    refresh_token=family.refresh_token,
                    family_id=family.family_id,
                    expires_in=self.access_ttl,
                    refresh_expires_in=max(0.0, family.refresh_expires_at - now),
                    scope=family.scope,
                ),
                rotated=self.rotation,
            )

    def process_refresh(self, refresh_token: str, *, bound_access_token: str | None = None) -> RefreshResult:
        """:meth:`refresh` plus counting: ``ok``, ``invalid_grant`` and ``invalid_grant:<reason>``
        (``unknown``, ``revoked``, ``reused``, ``expired``), or ``bad_auth_header``."""
        result = self.refresh(refresh_token, bound_access_token=bound_access_token)
        with self._lock:
            if result.outcome == "ok":
                self._counters["ok"] += 1
            elif result.outcome == "bad_auth":
                self._counters["bad_auth_header"] += 1
            else:
                self._counters["invalid_grant"] += 1
                self._counters[f"invalid_grant:{result.reason}"] += 1
        return result

    def _revoke(self, family: _Family, reason: str) -> None:
        if family.revoked:
            return
        family.revoked = True
        family.revoked_reason = reason
        self._counters["family_revoked"] += 1

    def revoke_family(self, family_id: str, reason: str = "revoked by test") -> None:
        """Revoke a whole family (as a user withdrawing consent would)."""
        with self._lock:
            self._revoke(self._families[family_id], reason)

    def family_of(self, token: str) -> str | None:
        """The family id of an access or refresh token (current or retired), else ``None``."""
        with self._lock:
            return self._refresh_index.get(token) or self._access_index.get(token)

    def current_tokens(self, family_id: str) -> FamilySnapshot:
        """The family's current state (raises ``KeyError`` for an unknown family)."""
        with self._lock:
            return self._families[family_id].snapshot()

    def families(self) -> list[str]:
        """Every family id, oldest first."""
        with self._lock:
            return list(self._families)

    @property
    def families_revoked(self) -> int:
        """How many families are revoked."""
        with self._lock:
            return sum(1 for f in self._families.values() if f.revoked)

    def is_refresh_token_valid(self, refresh_token: str) -> bool:
        """Whether a refresh now with this token would succeed (current, unexpired, family alive)."""
        with self._lock:
            family_id = self._refresh_index.get(refresh_token)
            family = self._families.get(family_id) if family_id is not None else None
            return (
                family is not None
                and not family.revoked
                and family.refresh_token == refresh_token
                and self.clock() < family.refresh_expires_at
            )

    def is_access_token_valid(self, access_token: str) -> bool:
        """Whether the sample API would accept this access token now."""
        with self._lock:
            family_id = self._access_index.get(access_token)
            family = self._families.get(family_id) if family_id is not None else None
            if family is None or family.revoked:
                return False
            expires_at = family.access_tokens.get(access_token)
            return expires_at is not None and self.clock() < expires_at

    # -- faults, counters, records ------------------------------------------------------------------

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

    def _count(self, key: str) -> None:
        with self._lock:
            self._counters[key] += 1

    @property
    def counters(self) -> dict[str, int]:
        """Outcome → count (a copy); a key appears once it happened.

        Token endpoint: ``ok``; ``invalid_grant`` (any rejected refresh token, whatever the vendor
        calls it) with ``invalid_grant:unknown|revoked|reused|expired``; ``reuse_detected`` (a
        retired token was presented and its family revoked); ``bad_client``; ``bad_request``;
        ``unsupported_grant_type``; ``bad_auth_header`` (isales ``Authentication``); ``frozen``
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

    def reset_counters(self) -> None:
        """Zero the counters and ``refresh_requests`` and forget the recorded requests."""
        with self._lock:
            self._counters.clear()
            self._refresh_requests = 0
            self._requests.clear()

    # -- dispatch -----------------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

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
        if fault is not None and fault.kind == "drop_after":
            return Response(drop=True)
        return response

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
        return None  # slow, drop_after: processed normally

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

    def handle_token_request(self, request: IncomingRequest) -> Response:
        """Validate a token request in the vendor's wire format and answer it (subclasses)."""
        raise NotImplementedError

    def error_response(self, status: int, code: str, text: str) -> Response:
        """An error answer in the vendor's error shape."""
        return Response.json(status, {"error": code, "error_description": text})

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

    def sample_access_token(self, request: IncomingRequest) -> str | None:
        """The access token the sample API reads (``Authorization: Bearer`` by default)."""
        return request.bearer("authorization")

    def sample_extra_check(self, request: IncomingRequest) -> bool:
        """A vendor-specific extra condition for the sample API (default: none)."""
        return True
