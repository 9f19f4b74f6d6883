"""TLS (including mutual TLS), start/stop, serve(), loopback-only binding, import isolation."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import pytest

from airflow_provider_tokenrefresh.testing import (
    EMULATORS,
    IotAppIdEmulator,
    OAuth2BasicEmulator,
    TLSConfig,
    VendorEmulator,
    check_loopback,
    serve,
)
from tests.emulators.drivers import DIALECTS, Session

if TYPE_CHECKING:
    from tests.emulators.conftest import StartEmulator, TLSMaterial


def _context(material: TLSMaterial, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(material.ca_cert))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


# ------------------------------------------------------------------------------------------------ TLS


@pytest.mark.parametrize("name", DIALECTS)
def test_https(name: str, start: StartEmulator, tls_material: TLSMaterial) -> None:
    emu = start(name, tls=TLSConfig(tls_material.server_cert, tls_material.server_key))
    assert emu.base_url.startswith("https://127.0.0.1:")
    session = Session.seeded(emu)
    with httpx.Client(verify=_context(tls_material), timeout=10) as client:
        assert session.refresh(client).status_code == 200
    with httpx.Client(timeout=10) as system_trust, pytest.raises(httpx.ConnectError):
        system_trust.get(emu.sample_url)  # the test CA is not trusted by default
    with httpx.Client(timeout=10) as plain, pytest.raises(httpx.TransportError):
        plain.post(emu.token_url.replace("https://", "http://"), content=b"")
    assert emu.refresh_requests == 1


def test_mutual_tls(start: StartEmulator, tls_material: TLSMaterial, tmp_path: object) -> None:
    emu = start(
        "appid_json",
        tls=TLSConfig(tls_material.server_cert, tls_material.server_key, client_ca=tls_material.ca_cert),
    )
    seed = emu.issue_tokens()
    body = {"appId": "demo-client", "secret": "demo-secret", "refreshToken": seed.refresh_token}
    good = _context(tls_material, (str(tls_material.client_cert), str(tls_material.client_key)))
    with httpx.Client(verify=good, timeout=10) as client:
        r = client.post(emu.token_url, json=body)
        assert r.status_code == 200
    [rec] = emu.requests
    assert rec.client_cert_subject == "commonName=airflow-worker"

    new_refresh = r.json()["refreshToken"]
    body["refreshToken"] = new_refresh
    for context in (
        _context(tls_material),  # no client certificate
        _context(tls_material, (str(tls_material.rogue_cert), str(tls_material.rogue_key))),  # wrong CA
    ):
        with httpx.Client(verify=context, timeout=10) as client, pytest.raises(httpx.TransportError):
            client.post(emu.token_url, json=body)
    assert emu.refresh_requests == 1  # the rejected clients never reached the endpoint
    assert emu.is_refresh_token_valid(new_refresh)


def test_tls_on_custom_port(tls_material: TLSMaterial) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with IotAppIdEmulator(port=port, tls=TLSConfig(tls_material.server_cert, tls_material.server_key)) as emu:
        assert emu.base_url == f"https://127.0.0.1:{port}"
        session = Session.seeded(emu)
        with httpx.Client(verify=_context(tls_material), timeout=10) as client:
            assert session.refresh(client).status_code == 200


# ------------------------------------------------------------------------------------------ lifecycle


# Written from shared/vendor-docs: the document, its path, its default lifetimes (access, refresh).
DOCUMENTED = {
    "oauth2_basic": ("oauth2-client-secret-basic.txt", "/api/v1/oauth2/token", 7200, 30 * 86400),
    "oauth2_post": ("oauth2-client-secret-post.txt", "/api/v1/oauth2/token", 7200, 30 * 86400),
    "query_basic": ("babelbird-query-basic.txt", "/api/refreshToken.do", 3600, 30 * 86400),
    "appid_json": ("iot-appid-secret-json.txt", "/iocm/app/sec/v1.1.0/refreshToken", 3600, 30 * 86400),
    "bearer_json": ("isales-bearer-json.txt", "/rest/isales/v1/openapi/obs/auth/refresh", 300, 3600),
}


def test_registry() -> None:
    assert sorted(EMULATORS) == sorted(DIALECTS) == sorted(DOCUMENTED)
    for name, cls in EMULATORS.items():
        assert issubclass(cls, VendorEmulator) and cls is not VendorEmulator
        emu = cls()
        document, path, access_ttl, refresh_ttl = DOCUMENTED[name]
        assert (emu.vendor_document, emu.token_path, emu.token_method) == (document, path, "POST"), name
        assert (emu.access_ttl, emu.refresh_ttl) == (access_ttl, refresh_ttl), name
        assert emu.sample_path != emu.token_path and emu.sample_path.startswith("/")


def test_stop_closes_the_socket() -> None:
    emu = OAuth2BasicEmulator().start()
    port = emu.port
    assert emu.running
    with httpx.Client(timeout=5) as client:
        assert client.get(emu.base_url + "/nowhere").status_code == 404  # keep-alive connection open
        emu.stop()
        assert not emu.running
        with pytest.raises(httpx.TransportError):
            client.get(f"http://127.0.0.1:{port}/nowhere")
    emu.stop()  # idempotent
    with socket.socket() as probe:
        # SO_REUSEADDR tolerates TIME_WAIT leftovers but not a socket still listening on the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()


def test_restart_on_same_port() -> None:
    first = OAuth2BasicEmulator().start()
    port = first.port
    first.stop()
    with OAuth2BasicEmulator(port=port) as again:
        assert again.port == port


def test_base_url_needs_a_port() -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = OAuth2BasicEmulator().base_url
    assert OAuth2BasicEmulator(port=8123).base_url == "http://127.0.0.1:8123"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "192.168.1.10", "example.com", ""])
def test_non_loopback_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        OAuth2BasicEmulator(host=host)
    with pytest.raises(ValueError, match="loopback"):
        serve(["oauth2_basic"], host=host)


def test_loopback_spellings() -> None:
    assert check_loopback("localhost") == "127.0.0.1"
    assert check_loopback("127.0.0.5") == "127.0.0.5"
    assert check_loopback("::1") == "::1"


def test_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        # No IPv6 on this host: asking for ::1 must then fail loudly at start, not hang or fall back.
        with pytest.raises(OSError):
            OAuth2BasicEmulator(host="::1").start()
        return
    with OAuth2BasicEmulator(host="::1") as emu:
        assert emu.base_url.startswith("http://[::1]:")
        assert httpx.get(emu.base_url + "/nowhere", timeout=5).status_code == 404


def test_serve_starts_several() -> None:
    emulators = serve(DIALECTS, rotation=False, options={"appid_json": {"expires_as_string": False}})
    try:
        assert [e.name for e in emulators] == DIALECTS
        assert len({e.port for e in emulators}) == len(DIALECTS)
        assert all(e.running and not e.rotation and e.host == "127.0.0.1" for e in emulators)
        iot = emulators[DIALECTS.index("appid_json")]
        assert isinstance(iot, IotAppIdEmulator) and iot.expires_as_string is False
        with httpx.Client(timeout=10) as client:
            for emu in emulators:
                assert Session.seeded(emu).refresh(client).status_code == 200
    finally:
        for emu in emulators:
            emu.stop()


def _consecutive_free_ports(count: int) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base: int = s.getsockname()[1]
        if base + count > 65535:
            continue
        sockets = []
        try:
            for offset in range(count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError("no run of consecutive free ports on 127.0.0.1 after 50 tries")


def test_serve_base_port() -> None:
    base = _consecutive_free_ports(2)
    emulators = serve(["oauth2_post", "bearer_json"], base_port=base)
    try:
        assert [e.port for e in emulators] == [base, base + 1]
    finally:
        for emu in emulators:
            emu.stop()


def test_serve_failure_stops_the_started_ones() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        first = OAuth2BasicEmulator().start()
        try:
            with pytest.raises(ValueError, match="unknown dialect"):
                serve(["oauth2_basic", "nope"])
            with pytest.raises(OSError):
                serve(["oauth2_basic"], base_port=taken)
        finally:
            first.stop()


def test_unknown_constructor_option_is_an_error() -> None:
    with pytest.raises(TypeError):
        serve(["oauth2_basic"], expires_as_string=False)


def test_import_loads_neither_airflow_nor_the_presets() -> None:
    code = (
        "import sys, airflow_provider_tokenrefresh.testing as t\n"
        "t.OAuth2BasicEmulator().start().stop()\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [m for m in out if m == "airflow" or m.startswith("airflow.")]
    assert not [
        m
        for m in out
        if m.startswith("airflow_provider_tokenrefresh.")
        and not m.startswith("airflow_provider_tokenrefresh.testing")
    ]
    assert "httpx" not in out and "pydantic" not in out


def test_repr_hides_tokens() -> None:
    emu = OAuth2BasicEmulator()
    issued = emu.issue_tokens()
    assert issued.refresh_token not in repr(issued) and issued.access_token not in repr(issued)
    snapshot = emu.current_tokens(issued.family_id)
    assert issued.refresh_token not in repr(snapshot)
    assert "stopped" in repr(emu)


def test_restart_keeps_state() -> None:
    emu = OAuth2BasicEmulator().start()
    seed = emu.issue_tokens()
    port = emu.port
    emu.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/nowhere", timeout=5)
    with emu:  # a vendor outage and its recovery: same port, same tokens
        assert emu.port == port
        session = Session(emu, seed.access_token, seed.refresh_token)
        with httpx.Client(timeout=10) as client:
            assert session.refresh(client).status_code == 200


def test_nothing_secret_is_logged(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """query_basic puts the refresh token in the request line: neither logs nor stderr may show it."""
    caplog.set_level(logging.DEBUG, logger="airflow_provider_tokenrefresh.testing")
    with EMULATORS["query_basic"]() as emu, httpx.Client(timeout=10) as client:
        session = Session.seeded(emu)
        seed_refresh = session.refresh_token
        assert session.refresh(client).status_code == 200
        session.send(client, refresh_token=seed_refresh)  # invalid_grant
        emu.inject("drop_before")
        with pytest.raises(httpx.TransportError):
            session.send(client)
    out, err = capfd.readouterr()
    # httpx logs its own request lines (client side); only the emulator's records matter here
    ours = [
        r.getMessage() for r in caplog.records if r.name.startswith("airflow_provider_tokenrefresh.testing")
    ]
    assert ours  # the emulator did log at DEBUG
    for secret in (seed_refresh, session.refresh_token, session.access_token, "demo-secret"):
        assert all(secret not in line for line in ours) and secret not in out and secret not in err
