"""A real StatsD receiver on 127.0.0.1 (UDP) in the test process, and a parser for what it gets.

Keeps only datagram lines whose metric name contains ``keep`` (default ``tokenrefresh.``): a whole
Airflow deployment may send to it for a test session, and its own metrics are not kept.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# name[,tag=value...]:value|type[|@rate]  (Airflow's InfluxDB-style tags ride on the name)
_LINE = re.compile(r"^(?P<name>[^,:]+)(?P<tags>(?:,[^,=:]+=[^,:]*)*):(?P<value>[^|]+)\|(?P<type>[a-z]+)")


@dataclass(frozen=True)
class Datagram:
    """One StatsD line: ``airflow.tokenrefresh.refresh.count,conn_id=x,outcome=success:1|c``."""

    raw: str
    name: str
    tags: dict[str, str]
    value: float
    type: str


def parse(line: str) -> Datagram | None:
    """A StatsD line with InfluxDB-style tags, or ``None`` when it is not one."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    tags = dict(part.split("=", 1) for part in match["tags"].split(",") if part)
    return Datagram(line.strip(), match["name"], tags, float(match["value"]), match["type"])


class StatsdReceiver:
    """Binds a UDP socket on 127.0.0.1 (a free port) and collects datagrams on a thread."""

    def __init__(self, keep: str = "tokenrefresh.") -> None:
        self.keep = keep
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="statsd-receiver", daemon=True)
        self._thread.start()

    def airflow_env(self, *, prefix: str = "airflow") -> dict[str, str]:
        """Airflow's StatsD settings pointing at this receiver, tags in the InfluxDB style."""
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": prefix,
            "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            lines = [line for line in data.decode(errors="replace").splitlines() if self.keep in line]
            if lines:
                with self._cond:
                    self._lines.extend(lines)
                    self._cond.notify_all()

    def lines(self) -> list[str]:
        """Every kept line so far."""
        with self._cond:
            return list(self._lines)

    def datagrams(self) -> list[Datagram]:
        """Every kept line so far, parsed."""
        return [d for d in map(parse, self.lines()) if d is not None]

    def wait_for(self, predicate: Callable[[list[Datagram]], bool], timeout: float) -> list[Datagram]:
        """Block until ``predicate(datagrams)`` holds (polled on each arrival, with a deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.datagrams()
            if predicate(found):
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"StatsD datagrams not as expected within {timeout}s; got:\n"
                    + "\n".join(self.lines()[-60:])
                )
            with self._cond:
                self._cond.wait(min(remaining, 1.0))

    def close(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
