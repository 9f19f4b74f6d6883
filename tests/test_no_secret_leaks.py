"""Canaries: unique secret values never reach exception text or any log record, on any failure path."""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
from airflow_provider_tokenrefresh.errors import TokenRefreshError

from .conftest import DIALECTS, EmulatorFactory, client_for

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.testing import VendorEmulator

CLIENT_SECRET = "CANARY-client-secret-9d2f71"

FAILURES: list[tuple[str, dict[str, Any]]] = [
    ("http_500", {}),
    ("http_503", {}),
    ("http_429", {"retry_after": 0}),
    ("ok_with_error_body", {}),
    ("malformed_json", {}),
    ("drop_before", {}),
    ("drop_after", {}),
    ("huge_body", {}),
    ("slow", {"delay": 1.0}),
]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Any:
    handler = _Capture()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def _attempt(emu: VendorEmulator, refresh_token: str, access_token: str | None, **settings: Any) -> str:
    """Run one refresh; return everything it produced as text (result repr or exception + traceback)."""
    try:
        tokens = client_for(emu, **settings).refresh(refresh_token, access_token)
    except TokenRefreshError as exc:
        return f"{exc}\n{exc!r}\n{''.join(traceback.format_exception(exc))}"
    return repr(tokens) + str(tokens) + tokens.model_dump_json()


def _secrets(emu: VendorEmulator) -> list[str]:
    values = [CLIENT_SECRET]
    for family in emu.families():
        snap = emu.current_tokens(family)
        values += [snap.access_token, snap.refresh_token]
    for request in emu.requests:
        values += [v for vs in request.query_params().values() for v in vs if v.startswith("emu")]
    return values


@pytest.mark.parametrize("name", DIALECTS)
def test_no_canary_in_exceptions_or_logs_on_any_path(
    name: str, emulator_factory: EmulatorFactory, captured: _Capture
) -> None:
    emu = emulator_factory(name, client_secret=CLIENT_SECRET)
    seed = emu.issue_tokens()
    texts: list[str] = []
    used = [seed.refresh_token, seed.access_token]

    # Success, then reuse of the rotated token (the vendor echoes it in some dialects).
    texts.append(_attempt(emu, seed.refresh_token, seed.access_token))
    texts.append(_attempt(emu, seed.refresh_token, seed.access_token))
    # Every injected fault, each on a fresh family.
    for kind, params in FAILURES:
        fresh = emu.issue_tokens()
        used += [fresh.refresh_token, fresh.access_token]
        emu.inject(kind, **params)
        texts.append(
            _attempt(
                emu,
                fresh.refresh_token,
                fresh.access_token,
                timeout=0.5,
                max_attempts=2,
                max_response_bytes=64 * 1024,
            )
        )
    # A wrong client secret (the vendor refuses the client).
    wrong = emu.issue_tokens()
    bad_secret = "CANARY-wrong-secret-55aa0c"
    used += [wrong.refresh_token, wrong.access_token, bad_secret]
    texts.append(
        _attempt(
            emu,
            wrong.refresh_token,
            wrong.access_token,
            credentials=ClientCredentials(emu.client_id, bad_secret),
        )
    )

    canaries = set(used + _secrets(emu))
    assert emu.refresh_requests >= len(FAILURES)  # the paths really ran
    assert any("Refreshing token" in line for line in captured.lines)
    assert any(line.startswith("httpx") for line in captured.lines)  # httpx logged its requests
    everything = "\n".join(texts + captured.lines)
    leaked = sorted(c for c in canaries if c and c in everything)
    assert leaked == []


def test_query_string_token_is_redacted_in_httpx_request_log(
    emulator_factory: EmulatorFactory, captured: _Capture
) -> None:
    emu = emulator_factory("query_basic")
    seed = emu.issue_tokens()
    client_for(emu).refresh(seed.refresh_token)
    request_lines = [line for line in captured.lines if "HTTP Request" in line]
    assert request_lines
    assert all("refresh_token=***" in line for line in request_lines)
    assert all(seed.refresh_token not in line for line in captured.lines)
