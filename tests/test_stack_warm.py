"""The stacks' execution-API warm-up waits out a slow first answer instead of failing the deployment.

A CI run on 2 cores failed 16 tests at setup: the api-server's health page took most of the ready
deadline, the warm-up was left 10 s, and Cadwyn's first-request build took longer. The warm-up now
has its own budget and sends the request again when one attempt times out.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_provider_tokenrefresh.testing.stack import warm_execution_api


class _SlowFirst(BaseHTTPRequestHandler):
    """Holds the first ``/execution/health`` until the test releases it; answers later ones at once."""

    release = threading.Event()
    seen: list[str] = []
    status = 200

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        if len(type(self).seen) == 1:
            type(self).release.wait(30)
        self.send_response(type(self).status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_SlowFirst]]]:
    handler = type("Handler", (_SlowFirst,), {"release": threading.Event(), "seen": [], "status": 200})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        handler.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_a_first_answer_slower_than_one_attempt_is_waited_out(server: tuple[str, type[_SlowFirst]]) -> None:
    url, handler = server
    took = warm_execution_api(url, budget=30, attempt_timeout=0.5)
    handler.release.set()
    assert handler.seen[:2] == ["/execution/health", "/execution/health"], handler.seen
    assert took >= 0.5


def test_the_budget_ends_in_a_loud_error_with_the_servers_output(
    server: tuple[str, type[_SlowFirst]],
) -> None:
    url, handler = server
    handler.status = 503
    with pytest.raises(
        RuntimeError, match=r"not answered 200 within 2s \(last: answered 503\)[\s\S]*api-server said"
    ):
        warm_execution_api(url, output=lambda: "api-server said this", budget=2, attempt_timeout=0.3)
    assert len(handler.seen) >= 2


def test_a_component_that_exited_stops_the_wait(server: tuple[str, type[_SlowFirst]]) -> None:
    url, _ = server

    def dead() -> None:
        raise RuntimeError("airflow api-server exited with 1")

    with pytest.raises(RuntimeError, match="exited with 1"):
        warm_execution_api(url, check_alive=dead, budget=30, attempt_timeout=0.3)
