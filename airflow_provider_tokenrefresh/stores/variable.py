"""Token records in Airflow Variables (the default store).

Works in both Airflow contexts:

* inside a task or trigger, through ``airflow.sdk.Variable`` (the execution API);
* outside (the ``airflow-tokenrefresh`` CLI, the api-server's connection test, a script), through
  the core ``airflow.models.Variable``, which talks to the metadata database — the SDK cannot write
  Variables there.

Variables have no compare-and-set, so a write re-reads the current value and refuses to overwrite
one that changed since it was read (the refresh lock makes that window tiny). After every write
the value is read back through the normal read path: if a secrets backend or an ``AIRFLOW_VAR_*``
environment variable shadows the key, reads would return a stale token forever, so the store fails
loudly instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING

from airflow_provider_tokenrefresh.errors import ConfigurationError, StoreConflict, StoreError
from airflow_provider_tokenrefresh.tokens import TokenRecord

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_tokenrefresh.stores import Version

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Token record kept by airflow-provider-tokenrefresh (rotating refresh token inside: do not edit or "
    "delete it; to start over, put a new refresh_token on the connection)."
)


def in_execution_context() -> bool:
    """Whether this process runs task or trigger code (the SDK's supervisor comms are set up)."""
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return runner is not None and getattr(runner, "SUPERVISOR_COMMS", None) is not None


class _Gate:
    """A lock whose urgent holders are served before the ordinary ones waiting."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0

    @contextlib.contextmanager
    def hold(self, *, urgent: bool = False) -> Iterator[None]:
        with self._cond:
            if urgent:
                self._urgent_waiting += 1
            try:
                while self._busy or (not urgent and self._urgent_waiting):
                    self._cond.wait()
            finally:
                if urgent:
                    self._urgent_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


#: One gate for every Variable call of this process. In a triggerer all triggers share one
#: supervisor channel that answers requests one at a time; without the gate, fifty triggers' calls
#: queue behind each other and a claim's compare-to-acknowledged window grows past the keeper's
#: bound, so claims are withdrawn again and again. Holding the gate across the compare and the set
#: keeps that window at two calls however many triggers (or threads) share the process. Writes
#: that store a vendor's answer (a record without an intent) go first: until they land, the
#: rotated refresh token lives only in this process's memory.
_IO_GATE = _Gate()


def _read_through_supervisor(key: str) -> str | None:
    """The record's JSON from the metadata database, through this process's supervisor.

    Not ``airflow.sdk.Variable.get``: that hands every value it reads to ``mask_secret`` under the
    Variable's (sensitive) name, and Airflow's masker compiles one regular expression of all the
    values it holds each time it learns a new one. A record is about 1.3 KB and each refresh makes
    two new ones, so a fan-out over 100 connections in one task spent most of its time compiling
    (about 1 s per read at 100 records). The tokens inside are registered by the keeper instead.
    And only "not found" means no record: ``Variable.get(default=None)`` also answered ``None``
    for an API error, which a keeper would take for a missing record and seed over the live one.
    """
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.comms import GetVariable

    return supervisor_answer_value(key, task_runner.SUPERVISOR_COMMS.send(GetVariable(key=key)))


def supervisor_answer_value(key: str, answer: object) -> str | None:
    """What the supervisor's answer to ``GetVariable(key)`` means: the value, ``None`` for "not
    found" only, and :class:`StoreError` for any other answer (an API error is not a missing record)."""
    from airflow.sdk.execution_time.comms import ErrorResponse, VariableResult

    if isinstance(answer, VariableResult):
        return None if answer.value is None else str(answer.value)
    if isinstance(answer, ErrorResponse):
        error = getattr(answer.error, "value", str(answer.error))
        if error == "VARIABLE_NOT_FOUND":
            return None
        raise StoreError(
            f"Variable {key!r} could not be read through the execution API ({error}); not reading it as absent"
        )
    raise StoreError(f"Variable {key!r}: unexpected answer from the execution API ({type(answer).__name__})")


def _refuse_undecryptable(key: str) -> None:
    """Raise if Variable ``key`` exists in the metadata database although it read as absent.

    Airflow's ``Variable.get`` answers ``None`` for a value its ``[core] fernet_key`` cannot decrypt
    (it logs "Can't decrypt _val"). Taken for "no record", the keeper would seed from the
    connection's refresh token, long since rotated, and the vendor's reuse detection would revoke
    the whole family. Costs one query, only when a record reads as absent.
    """
    from airflow.models.variable import Variable as CoreVariable
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        rows = session.scalar(select(func.count()).select_from(CoreVariable).where(CoreVariable.key == key))
    if rows:
        raise ConfigurationError(
            f"Variable {key!r} exists in the metadata database but reads as empty here: this component's "
            "[core] fernet_key cannot decrypt it (every component must share one; after a rotation, the new "
            "key first and the old one after it). Nothing was sent to the vendor. Do not delete it: it may "
            "hold the only live refresh token"
        )


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class VariableTokenStore:
    """Airflow Variables as a token store; the version is the SHA-256 of the stored JSON."""

    name = "variable"
    #: Variables have no compare-and-set: the keeper claims by write, settle, read back.
    atomic = False

    def __init__(self, *, legacy_keys: dict[str, str] | None = None) -> None:
        self._local = threading.local()  # one store may serve several threads (a triggerer)
        #: key -> the key 0.1.0 used for the same record (a store_path Airflow does not mask).
        self.legacy_keys = dict(legacy_keys or {})

    @property
    def last_write_window(self) -> float | None:
        """Seconds from the compare's read to the acknowledged write of this thread's last write: the
        window in which another writer's value could have landed unseen (the keeper bounds it)."""
        window: float | None = getattr(self._local, "window", None)
        return window

    def _env_shadow(self, key: str) -> None:
        env = f"AIRFLOW_VAR_{key.upper()}"
        if env in os.environ:
            raise ConfigurationError(
                f"Variable {key!r} is shadowed by environment variable {env}: tokens written to the "
                "metastore would never be read back. Remove the environment variable, or set extra "
                "'store_path' to another key."
            )

    def _get_raw(self, key: str, *, urgent: bool = False) -> str | None:
        with _IO_GATE.hold(urgent=urgent):
            return self._get_raw_ungated(key)

    def _get_raw_ungated(self, key: str) -> str | None:
        self._env_shadow(key)
        if in_execution_context():
            self._backend_shadow(key)
            return _read_through_supervisor(key)
        from airflow.models.variable import Variable as CoreVariable

        value = CoreVariable.get(key, default_var=None)
        if value is None:
            _refuse_undecryptable(key)
            return None
        return str(value)

    def _backend_shadow(self, key: str) -> None:
        """In a task or trigger, refuse a key that a secrets backend also holds (once per key and
        process): the CLI and the api-server read Variables through the backends first, so they would
        see the backend's value, never the record the tasks keep."""
        checked: set[str] = self.__dict__.setdefault("_backends_checked", set())
        if key in checked:
            return
        from airflow.sdk.execution_time.secrets.execution_api import ExecutionAPISecretsBackend
        from airflow.sdk.execution_time.supervisor import ensure_secrets_backend_loaded

        for backend in ensure_secrets_backend_loaded():
            # Those two are where the record lives (a task's chain has no metastore; older ones may).
            if (
                isinstance(backend, ExecutionAPISecretsBackend)
                or type(backend).__name__ == "MetastoreBackend"
            ):
                continue
            try:
                shadow = backend.get_variable(key=key)
            except Exception as exc:  # noqa: BLE001 - an unreachable backend shadows nothing we can see
                log.warning(
                    "Could not ask the %s secrets backend whether it also holds Variable %r (%s)",
                    type(backend).__name__,
                    key,
                    type(exc).__name__,
                )
                continue
            if shadow is not None:
                raise ConfigurationError(
                    f"Variable {key!r} is also held by the {type(backend).__name__} secrets backend: Airflow "
                    "components outside tasks would read that value, never the rotated token. Remove the key "
                    "from the secrets backend, or set extra 'store_path' to another key."
                )
        checked.add(key)

    def _set_raw(self, key: str, raw: str) -> None:
        if in_execution_context():
            from airflow.sdk import Variable

            Variable.set(key, raw, description=DESCRIPTION)
        else:
            from airflow.models.variable import Variable as CoreVariable

            CoreVariable.set(key, raw, description=DESCRIPTION)

    def read(self, key: str) -> tuple[TokenRecord | None, Version]:
        """Return the record under Variable ``key`` and its content hash.

        While ``key`` does not exist yet, a record under its legacy key is returned with version
        ``None``: the first write then creates ``key`` (the legacy Variable is left as it was).
        """
        raw = self._get_raw(key)
        if raw is None:
            legacy = self.legacy_keys.get(key)
            legacy_raw = self._get_raw(legacy) if legacy else None
            if legacy_raw is None:
                return None, None
            return self._parse(legacy or key, legacy_raw), None
        return self._parse(key, raw), _digest(raw)

    @staticmethod
    def _parse(key: str, raw: str) -> TokenRecord:
        try:
            return TokenRecord.from_storage_json(raw)
        except ValueError:
            pass
        from airflow_provider_tokenrefresh.stores.seal import classify_old

        moved = classify_old(raw)
        if moved.kind in ("moving", "moved"):
            raise ConfigurationError(
                f"Variable {key!r} is a tombstone: this connection's token record moved to Variable "
                f"{moved.moved_to!r} (extra 'store': 'sealed_variable'). Set extra 'store' back to "
                "'sealed_variable' on this connection (every component needs this release or later). Do not "
                "delete either Variable: the sealed one holds the live refresh token"
            )
        # Never suggest deleting it: it may hold the only live refresh token.
        raise ConfigurationError(
            f"Variable {key!r} cannot be read as a token record. Likely causes: this component has a "
            "different [core] fernet_key than the one that wrote it (every component must share one), "
            "or another program wrote to this key. Do not delete it: it may hold the only live refresh "
            "token; fix the Fernet key, or set extra 'store_path' to another key and re-seed the connection"
        )

    def write(self, key: str, record: TokenRecord, expected_version: Version) -> Version:
        """Write if the stored JSON is unchanged since it was read, then verify the read-back."""
        import time

        raw = record.to_storage_json()
        urgent = record.intent_id is None  # an answer (or a withdrawal), not a claim
        with _IO_GATE.hold(urgent=urgent):
            started = time.monotonic()
            current = self._get_raw_ungated(key)
            if (None if current is None else _digest(current)) != expected_version:
                raise StoreConflict(f"Variable {key!r} changed since it was read; not overwriting it")
            # No fencing check here: a lock's counter restarts with its server (Redis without
            # persistence), and the keeper's claim on its own intent id is what excludes a stale holder.
            self._set_raw(key, raw)
            self._local.window = time.monotonic() - started
        self._read_back(key, raw, current, urgent=urgent)
        return _digest(raw)

    def _read_back(self, key: str, raw: str, current: str | None, *, urgent: bool) -> None:
        """Read ``key`` back after writing ``raw`` over ``current``: another writer's value is a
        conflict; any other difference means the write does not reach what readers see."""
        echoed = self._get_raw(key, urgent=urgent)
        if echoed != raw:
            if echoed is not None and echoed != current:
                raise StoreConflict(f"Variable {key!r} was written by another process meanwhile")
            raise ConfigurationError(
                f"Variable {key!r} reads back a different value than was written: either Variable.set did not "
                "take effect (apache/airflow#68537; the write is retried) or a secrets backend shadows it, so "
                "the rotated token could never be read. Remove the key from the secrets backend, or set extra "
                "'store' to 'vault'/'aws' to keep records there."
            )
