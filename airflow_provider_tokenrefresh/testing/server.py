"""HTTP plumbing of the emulators: the threaded loopback server, the request handler, the request
and response values handed between the wire and the vendor code.

Stdlib only; imports nothing from Airflow or the rest of the package.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.testing.emulator import VendorEmulator

logger = logging.getLogger(__name__)

MAX_REQUEST_BODY = 1024 * 1024
"""Request bodies larger than this are refused with 413 (the emulators never need more)."""


@dataclass(frozen=True)
class RecordedAnswer:
    """What the token endpoint answered to one request (``dropped``: the connection was closed).

    :param status: HTTP status (``0`` when dropped).
    :param headers: the extra headers sent (``Content-Type`` and ``Content-Length`` not included).
    :param body: the body bytes.
    :param content_type: the ``Content-Type`` sent, if any.
    :param dropped: no answer was sent.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    content_type: str | None = None
    dropped: bool = False

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


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
    :param client_port: the TCP port of the client's end of the connection (one per connection:
        how many connections a client opened, and whether it kept them alive).
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_headers: tuple[tuple[str, str], ...]
    body: bytes
    client_cert_subject: str | None = None
    time: float = 0.0
    client_port: int = 0

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
    client_port: int = 0

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    #: The listen backlog. socketserver's default of 5 overflowed when 49 clients connected at once
    #: on a loaded machine (CI: "Connection reset by peer" on one of 49 simultaneous refreshes); a
    #: real vendor's front end accepts far more.
    request_queue_size = 128

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
            client_port=int(self.client_address[1]),
        )
        arrived = time.time()
        response = emulator._dispatch(request)
        if path == emulator.sample_path:
            token = emulator.sample_access_token(request)
            if token is not None:
                # The first-use log: when the vendor first saw each access token (chaos judges that
                # no token was used before its record was durable).
                emulator.note_access_use(token, arrived, accepted=response.status == 200)
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
