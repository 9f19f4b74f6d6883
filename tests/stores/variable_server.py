"""The Airflow Variable store on a real SQLite metadata database, served from a child process.

Airflow reads its configuration (``AIRFLOW_HOME``, the database URL, the Fernet key) once, when it
is first imported, and the test process may already have imported it for something else. So the
store runs in a child started with its own environment after ``airflow db migrate`` (outside any
task, like the CLI and the api-server: the core ``airflow.models.Variable`` talks to the database),
and the tests drive it through :class:`VariableStoreProxy`, which has the store protocol.

Every proxy has its own connection, served by its own thread and its own ``VariableTokenStore`` in
the child: racing proxies are racing writers on one database. Exceptions come back as the store
raised them (same class, same message), chained to the child's full traceback text so that a test
can check every word a log line could show.

Run as a script, this file is the child: ``python variable_server.py`` with ``TOKENREFRESH_AUTHKEY``
set; it prints its port and serves until stdin closes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import secrets
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any


class RemoteTraceback(Exception):
    """The child's formatted traceback of an exception the store raised there."""


# -- the child ------------------------------------------------------------------------------------


class _EveryKeySealed(dict[str, str]):
    """Every key is sealed, under ``<key>.sealed`` (the contract tests pick their own keys)."""

    def get(self, key: str, default: Any = None) -> str:  # type: ignore[override]
        return f"{key}.sealed"


def _handle(conn: Any) -> None:
    from airflow_provider_tokenrefresh.stores.seal import Sealer
    from airflow_provider_tokenrefresh.stores.sealed_variable import SealedVariableTokenStore
    from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore

    kind, fernet_key = conn.recv()
    store: Any = VariableTokenStore()
    if kind == "sealed_variable":
        sealer = None if fernet_key is None else Sealer(fernet_key)
        store = SealedVariableTokenStore(sealed_keys=_EveryKeySealed(), sealer=sealer)
    with conn:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return
            op, args = request[0], request[1:]
            try:
                if op == "read":
                    value: Any = store.read(*args)
                elif op == "write":
                    value = store.write(*args)
                elif op == "plant":
                    from airflow.models.variable import Variable

                    Variable.set(args[0], args[1])
                    value = None
                elif op == "raw":
                    from airflow.models.variable import Variable

                    value = Variable.get(args[0], default_var=None)
                elif op == "sealed_with_old_key":
                    value = sorted(getattr(store, "sealed_with_old_key", ()))
                elif op == "describe":
                    value = {"repr": repr(store), "name": store.name, "atomic": store.atomic}
                else:
                    raise ValueError(f"unknown operation {op!r}")
            except Exception as exc:
                text = "".join(traceback.format_exception(exc))
                try:
                    payload = pickle.dumps(exc)
                except Exception:
                    payload = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
                conn.send(("err", payload, text))
            else:
                conn.send(("ok", value))


def _serve() -> None:
    from multiprocessing.connection import Listener

    listener = Listener(("127.0.0.1", 0), authkey=bytes.fromhex(os.environ["TOKENREFRESH_AUTHKEY"]))
    # Import Airflow (and so read its configuration) before saying "ready".
    import airflow.models.variable  # noqa: F401

    print(listener.address[1], flush=True)

    def accept() -> None:
        while True:
            conn = listener.accept()
            threading.Thread(target=_handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    sys.stdin.read()  # the parent closes stdin (or dies): stop


# -- the test side --------------------------------------------------------------------------------


class VariableStoreProxy:
    """The store protocol, forwarded to one ``VariableTokenStore`` in the child."""

    def __init__(
        self, server: VariableStoreServer, kind: str = "variable", fernet_key: str | None = None
    ) -> None:
        from multiprocessing.connection import Client

        self.name = kind
        self._conn = Client(("127.0.0.1", server.port), authkey=server.authkey)
        self._conn.send((kind, fernet_key))
        self._lock = threading.Lock()
        described = self._call("describe")
        self._repr = described["repr"]
        self.atomic: bool = described["atomic"]
        assert described["name"] == self.name

    def _call(self, *request: Any) -> Any:
        with self._lock:
            self._conn.send(request)
            reply = self._conn.recv()
        if reply[0] == "ok":
            return reply[1]
        exc = pickle.loads(reply[1])
        raise exc from RemoteTraceback(reply[2])

    def read(self, key: str) -> Any:
        return self._call("read", key)

    def write(self, key: str, record: Any, expected_version: Any) -> Any:
        return self._call("write", key, record, expected_version)

    def plant(self, key: str, raw: str) -> None:
        """Set the Variable's raw value directly (another program, or a damaged record)."""
        self._call("plant", key, raw)

    def raw(self, key: str) -> str | None:
        """The Variable's value as Airflow returns it (``None`` if absent)."""
        value: str | None = self._call("raw", key)
        return value

    def sealed_with_old_key(self) -> list[str]:
        """The sealed Variables this store last opened with a key other than the primary one."""
        names: list[str] = self._call("sealed_with_old_key")
        return names

    def close(self) -> None:
        self._conn.close()

    def __repr__(self) -> str:
        return self._repr


class VariableStoreServer:
    """A migrated metadata database in ``home`` and the child serving Variable stores on it."""

    def __init__(self, home: Path, *, fernet_key: str | None = None, migrate: bool = True) -> None:
        self.home = home
        #: Another component's key (the default: the one kept in the home, as every component shares).
        self.fernet_key = fernet_key
        self.migrate = migrate
        self.authkey = secrets.token_bytes(16)
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._proxies: list[VariableStoreProxy] = []

    def env(self) -> dict[str, str]:
        from cryptography.fernet import Fernet

        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
        env |= {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            # Values are encrypted at rest, as in any real deployment.
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key or self._fernet_key(Fernet),
            # Outside any task, as the CLI and the api-server run (they set it too).
            "_AIRFLOW_PROCESS_CONTEXT": "server",
            "TOKENREFRESH_AUTHKEY": self.authkey.hex(),
        }
        return env

    def _fernet_key(self, fernet: Any) -> str:
        path = self.home / ".fernet"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(fernet.generate_key().decode())
        return path.read_text()

    def start(self, timeout: float = 180) -> None:
        env = self.env()
        if self.migrate:  # a second component on the same database skips it
            command = [sys.executable, "-m", "airflow", "db", "migrate"]
            try:
                subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=True)
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(f"airflow db migrate failed:\n{exc.stderr[-3000:]}") from None
        log_name = "variable-server.err" if self.fernet_key is None else "variable-server-other-key.err"
        with open(self.home / log_name, "w") as err:  # the child keeps its own copy
            self._process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve())],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(
                "the Variable store child did not start:\n"
                + (self.home / log_name).read_text(errors="replace")[-3000:]
            )
        self.port = int(line)

    def new_store(self, kind: str = "variable", fernet_key: str | None = None) -> VariableStoreProxy:
        proxy = VariableStoreProxy(self, kind, fernet_key)
        self._proxies.append(proxy)
        return proxy

    def plant(self, key: str, raw: str) -> None:
        proxy = VariableStoreProxy(self)
        try:
            proxy.plant(key, raw)
        finally:
            proxy.close()

    def stop(self) -> None:
        for proxy in self._proxies:
            with contextlib.suppress(OSError):
                proxy.close()
        self._proxies.clear()
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()  # only the child this server started, by its handle
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


__all__ = ["RemoteTraceback", "VariableStoreProxy", "VariableStoreServer"]

if __name__ == "__main__":
    _serve()
