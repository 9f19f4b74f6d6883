"""Where an emulator may listen and how it speaks TLS: loopback addresses only, optional mutual TLS.

Stdlib only; imports nothing from Airflow or the rest of the package.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


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
