"""Emulated vendor token endpoints for tests, demos and ``airflow-tokenrefresh emulate``.

Each emulator is a real HTTP(S) server on a loopback address that follows one vendor document
exactly (path, method, where the client credentials go, body format, answer shape, documented
errors), keeps real token state (families, rotation, reuse detection, expiry on an injectable
clock) and can inject faults. They are written from the vendor documents only and share nothing
with the dialect presets, so a wrong preset fails against them.

Importing this package imports neither Airflow nor the rest of the provider::

    from airflow_provider_tokenrefresh.testing import OAuth2BasicEmulator

    with OAuth2BasicEmulator() as vendor:
        seed = vendor.issue_tokens()
        ...  # point a connection at vendor.base_url with seed.refresh_token
"""

from __future__ import annotations

from airflow_provider_tokenrefresh.testing.emulator import (
    FAULT_KINDS,
    CommonOptions,
    FamilySnapshot,
    Fault,
    IncomingRequest,
    IssuedTokens,
    ManualClock,
    RecordedAnswer,
    RecordedRequest,
    RefreshResult,
    Response,
    TLSConfig,
    VendorEmulator,
    check_loopback,
)
from airflow_provider_tokenrefresh.testing.vendors import (
    EMULATORS,
    BabelBirdEmulator,
    IotAppIdEmulator,
    IsalesBearerEmulator,
    OAuth2BasicEmulator,
    OAuth2PostEmulator,
    serve,
)

__all__ = [
    "EMULATORS",
    "FAULT_KINDS",
    "BabelBirdEmulator",
    "CommonOptions",
    "FamilySnapshot",
    "Fault",
    "IncomingRequest",
    "IotAppIdEmulator",
    "IsalesBearerEmulator",
    "IssuedTokens",
    "ManualClock",
    "OAuth2BasicEmulator",
    "OAuth2PostEmulator",
    "RecordedAnswer",
    "RecordedRequest",
    "RefreshResult",
    "Response",
    "TLSConfig",
    "VendorEmulator",
    "check_loopback",
    "serve",
]
