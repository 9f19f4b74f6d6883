"""TLS: verification on by default, a private CA bundle, and client certificates (mutual TLS)."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airflow_provider_tokenrefresh.errors import (
    ConfigurationError,
    RefreshOutcomeUnknown,
    TransientRefreshError,
)
from airflow_provider_tokenrefresh.testing import TLSConfig

from .conftest import EmulatorFactory, client_for

if TYPE_CHECKING:
    from pathlib import Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    data = cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    path.write_bytes(data)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca_key = _key()
    ca = _cert("test private CA", ca_key, None, ca_key, ca=True)
    server_key, client_key = _key(), _key()
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "server", "client", "other_ca")}
    _write(paths["ca"], ca)
    _write(paths["server"], _cert("127.0.0.1", server_key, ca.subject, ca_key, server=True), server_key)
    _write(paths["client"], _cert("airflow-worker", client_key, ca.subject, ca_key), client_key)
    other_key = _key()
    _write(paths["other_ca"], _cert("some other CA", other_key, None, other_key, ca=True))
    return paths


def test_private_ca_and_client_certificate_on_a_custom_port(
    pki: dict[str, Path], emulator_factory: EmulatorFactory
) -> None:
    emu = emulator_factory("appid_json", tls=TLSConfig(certfile=pki["server"], client_ca=pki["ca"]))
    assert emu.base_url.startswith("https://127.0.0.1:")
    seed = emu.issue_tokens()
    tokens = client_for(emu, verify=str(pki["ca"]), client_cert=str(pki["client"])).refresh(
        seed.refresh_token
    )
    assert emu.is_access_token_valid(tokens.access_token.get_secret_value())
    assert emu.requests[0].client_cert_subject is not None
    assert "airflow-worker" in emu.requests[0].client_cert_subject


def test_server_certificate_from_an_unknown_ca_is_refused(
    pki: dict[str, Path], emulator_factory: EmulatorFactory
) -> None:
    emu = emulator_factory("appid_json", tls=TLSConfig(certfile=pki["server"]))
    seed = emu.issue_tokens()
    with pytest.raises(TransientRefreshError, match="CERTIFICATE_VERIFY_FAILED"):
        client_for(emu, verify=str(pki["other_ca"]), max_attempts=1).refresh(seed.refresh_token)
    with pytest.raises(TransientRefreshError, match="CERTIFICATE_VERIFY_FAILED"):
        client_for(emu, max_attempts=1).refresh(seed.refresh_token)  # system CAs: also refused
    assert emu.refresh_requests == 0


def test_missing_client_certificate_is_refused_by_the_server(
    pki: dict[str, Path], emulator_factory: EmulatorFactory
) -> None:
    emu = emulator_factory("appid_json", tls=TLSConfig(certfile=pki["server"], client_ca=pki["ca"]))
    seed = emu.issue_tokens()
    # TLS 1.3 reports the refusal after the handshake, so the client may already have written the
    # request: either way it is not retried and the vendor never saw it.
    with pytest.raises((TransientRefreshError, RefreshOutcomeUnknown)):
        client_for(emu, verify=str(pki["ca"]), max_attempts=1).refresh(seed.refresh_token)
    assert emu.refresh_requests == 0
    assert emu.is_refresh_token_valid(seed.refresh_token)


def test_unreadable_ca_bundle_names_the_field(
    tmp_path: Path, emulator_factory: EmulatorFactory, pki: dict[str, Path]
) -> None:
    emu = emulator_factory("appid_json", tls=TLSConfig(certfile=pki["server"]))
    with pytest.raises(ConfigurationError, match="'verify'"):
        client_for(emu, verify=str(tmp_path / "missing.pem")).refresh("whatever-token")
