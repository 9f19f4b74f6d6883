"""Errors classified as a network delivers them: a gateway in front of the vendor.

A real HTTP server on 127.0.0.1 stands between the keeper and the emulated vendor, as a load
balancer or API gateway does. It answers some requests itself with an HTML page (403, 401, 502,
504), forwarding the rest to the vendor, or forwards a request and then loses the answer behind a
502 (the vendor did rotate).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
from airflow_provider_tokenrefresh.dialects import PRESETS
from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials, ResponseContext, parse_response
from airflow_provider_tokenrefresh.errors import (
    AmbiguousRejection,
    ConfigurationError,
    RefreshOutcomeUnknown,
    RefreshTokenRejected,
)
from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper
from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
from airflow_provider_tokenrefresh.stores import FileTokenStore

from .conftest import EmulatorFactory, closed_after_test

HTML = b"<html><body><h1>403 Forbidden</h1><p>Request blocked by gateway policy</p></body></html>"


class Gateway:
    """``plan`` is a list of what to do with each request: ``("answer", status)`` answers it with an
    HTML page without forwarding; ``("lose", status)`` forwards it, then answers ``status`` instead of
    the vendor's answer; once the plan is used up, requests are forwarded."""

    def __init__(self, upstream: str, plan: list[tuple[str, int]]) -> None:
        self.upstream = upstream
        self.plan = list(plan)
        self.forwarded = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action, status = gateway.plan.pop(0) if gateway.plan else ("forward", 0)
                if action != "answer":
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                    }
                    answer = httpx.post(
                        gateway.upstream + self.path, content=body, headers=headers, timeout=10
                    )
                    gateway.forwarded += 1
                    if action == "forward":
                        self._send(answer.status_code, answer.content, answer.headers.get("content-type", ""))
                        return
                self._send(status, HTML, "text/html")

            def _send(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Gateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def gateway_for(emulator_factory: EmulatorFactory) -> Iterator[Any]:
    started: list[Gateway] = []

    def make(emu: Any, plan: list[tuple[str, int]]) -> Gateway:
        gw = Gateway(emu.base_url, plan).__enter__()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.__exit__()


def _keeper(emu: Any, gw: Gateway, tmp: Path, seed: Any) -> TokenKeeper:
    TokenKeeper.clear_cache()
    client = closed_after_test(
        RefreshClient(
            PRESETS[emu.name],
            ClientSettings(
                base_url=gw.url,
                credentials=ClientCredentials(emu.client_id, emu.client_secret),
                allow_insecure_http=True,
                backoff_base=0.01,
            ),
        )
    )
    keeper = TokenKeeper(
        "conn",
        client,
        FileTokenStore(str(tmp / "store")),
        FileRefreshLock(str(tmp / "locks")),
        Seed(seed.refresh_token, seed.access_token),
        conn_id=f"gw_{emu.name}",
        stale_after=60,
    )
    keeper.ambiguous_pause = 0.01
    return keeper


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("dialect", sorted(PRESETS))
def test_an_html_401_or_403_is_never_read_as_a_dead_token_at_once(dialect: str, status: int) -> None:
    context = ResponseContext(endpoint="https://vendor.example/token")
    with pytest.raises((AmbiguousRejection, ConfigurationError)) as info:
        parse_response(PRESETS[dialect], status, HTML, context)
    assert not isinstance(info.value, RefreshTokenRejected)


@pytest.mark.parametrize("status", [502, 504])
@pytest.mark.parametrize("dialect", sorted(PRESETS))
def test_a_502_or_504_is_an_unknown_outcome(dialect: str, status: int) -> None:
    with pytest.raises(RefreshOutcomeUnknown):
        parse_response(
            PRESETS[dialect], status, HTML, ResponseContext(endpoint="https://vendor.example/token")
        )


def test_a_gateway_403_twice_then_the_vendor_recovers_without_reauthorization(
    emulator_factory: EmulatorFactory, gateway_for: Any, tmp_path: Path
) -> None:
    emu = emulator_factory("bearer_json")  # its document maps 403 to "Authentication failed"
    seed = emu.issue_tokens()
    gw = gateway_for(emu, [("answer", 403), ("answer", 403)])
    record = _keeper(emu, gw, tmp_path, seed).get_valid_token(min_ttl=60)
    assert record.state == "valid" and record.generation == 1
    assert emu.refresh_requests == 1 and gw.forwarded == 1


def test_a_gateway_403_that_persists_ends_in_reauthorization_naming_both_causes(
    emulator_factory: EmulatorFactory, gateway_for: Any, tmp_path: Path
) -> None:
    emu = emulator_factory("bearer_json")
    seed = emu.issue_tokens()
    gw = gateway_for(emu, [("answer", 403)] * 5)
    with pytest.raises(RefreshTokenRejected) as info:
        _keeper(emu, gw, tmp_path, seed).get_valid_token(min_ttl=60)
    message = str(info.value)
    assert "gateway or proxy" in message and "rejected the refresh token" in message
    assert "3 such answers" in message
    stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert stored is not None and stored.state == "reauth_required" and "gateway" in (stored.reason or "")
    assert emu.refresh_requests == 0  # the vendor never saw it: its token is still good
    assert emu.is_refresh_token_valid(seed.refresh_token)


def test_a_502_after_the_vendor_rotated_keeps_the_intent(
    emulator_factory: EmulatorFactory, gateway_for: Any, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_basic")
    seed = emu.issue_tokens()
    gw = gateway_for(emu, [("lose", 502)])
    with pytest.raises(RefreshOutcomeUnknown):
        _keeper(emu, gw, tmp_path, seed).get_valid_token(min_ttl=60)
    assert emu.refresh_requests == 1 and not emu.is_refresh_token_valid(seed.refresh_token)  # it did rotate
    stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert stored is not None and stored.refresh_started_at is not None  # the intent stays: outcome unknown
    assert stored.last_error is not None and "outcome_unknown" in stored.last_error
