"""Token records in Airflow Variables, sealed, under a name Airflow does not mask (``store: sealed_variable``).

Why: Airflow's secrets masker learns every value a task or trigger reads from a Variable whose
*name* carries a sensitive word, and recompiles one regular expression of everything it holds each
time it learns something new. The default store's records (``tokenrefresh_token__<conn_id>``,
about 1.3 KB, two new values per refresh) made that cost grow with the square of the refreshes a
process had seen: a fan-out over 100 connections in one task took 90-150 s instead of 6-8 s, and
a triggerer running many triggers spent most of its CPU there (README, "Benchmarks").

This store keeps the record under ``trf_record__<conn_id>`` (or ``<store_path>__sealed``),
encrypted with ``[core] fernet_key`` (:mod:`.seal`): the masker learns nothing, and the REST API,
the UI, a rendered ``{{ var.value... }}`` and any log line show only ciphertext. The tokens
themselves are still registered with the masker, one short value each, by the hook.

The keeper's key does not change: it is still the old Variable's name, so the refresh lock, the
process cache and a host running 0.2.0 all agree on it. Moving an existing record is one write of
the old Variable: the record, sealed, inside a tombstone that 0.2.0 refuses (:func:`.seal.tombstone`),
claimed and read back like any claim. The next write creates the sealed Variable, and the tombstone
is then trimmed to a pointer. The old Variable is never deleted. Versions say where a record was
read from: ``old:<sha256>`` (a plain record under the old name), ``moving:<sha256>`` (a tombstone
still holding it) or ``<sha256>`` (the sealed Variable).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow_provider_tokenrefresh.errors import ConfigurationError, StoreConflict
from airflow_provider_tokenrefresh.stores.seal import (
    Sealer,
    classify_old,
    deployment_sealer,
    envelope,
    envelope_token,
    tombstone,
)
from airflow_provider_tokenrefresh.stores.variable import _IO_GATE, VariableTokenStore, _digest

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_tokenrefresh.stores import Version
    from airflow_provider_tokenrefresh.tokens import TokenRecord

log = logging.getLogger(__name__)


def split_version(version: Version) -> tuple[str, str | None]:
    """``(where, sha256)`` of a version: ``("sealed", d)``, ``("old", d)``, ``("moving", d)`` or
    ``("none", None)`` for no record."""
    if version is None:
        return "none", None
    text = str(version)
    where, sep, digest = text.partition(":")
    if sep and where in ("old", "moving"):
        return where, digest
    return "sealed", text


class SealedVariableTokenStore(VariableTokenStore):
    """Sealed records under unmasked Variable names; keys not in ``sealed_keys`` behave as the plain store."""

    name = "sealed_variable"
    atomic = False

    def __init__(self, *, sealed_keys: Mapping[str, str], sealer: Sealer | None = None) -> None:
        super().__init__()
        #: The keeper's key (the old, masked Variable) -> the sealed Variable's name.
        self.sealed_keys = sealed_keys
        self._sealer = sealer
        #: Sealed Variables last read with a key other than the primary one (rotation pending).
        self.sealed_with_old_key: set[str] = set()

    def sealer(self, name: str) -> Sealer:
        """The deployment's Fernet keys (read on first use, not when the hook is built); an error
        names the Variable ``name`` being read or written."""
        if self._sealer is None:
            try:
                self._sealer = deployment_sealer()
            except ConfigurationError as exc:
                raise ConfigurationError(f"Variable {name!r}: {exc}") from None
        return self._sealer

    # -- reading ------------------------------------------------------------------------------------

    def _unseal(self, name: str, token: str | None) -> TokenRecord:
        if token is None:
            raise ConfigurationError(
                f"Variable {name!r} is not a sealed token record (another program wrote to this key?). Do not "
                "delete it: it may hold the only live refresh token; restore it, or set extra 'store_path' to "
                "another key and re-seed the connection"
            )
        try:
            plain, primary = self.sealer(name).unseal(token)
        except ValueError:
            raise ConfigurationError(
                f"Variable {name!r} holds a sealed token record that this component's [core] fernet_key cannot "
                "open: every component must share one fernet_key (after a rotation keep the old key in the list, "
                "after the new one, until every record was rewritten). Do not delete it: it may hold the only "
                "live refresh token"
            ) from None
        if primary:
            self.sealed_with_old_key.discard(name)
        else:
            self.sealed_with_old_key.add(name)
        return self._parse(name, plain)

    def read(self, key: str) -> tuple[TokenRecord | None, Version]:
        """The sealed record if it exists, else what the old Variable holds (to move on the next write)."""
        sealed_name = self.sealed_keys.get(key)
        if sealed_name is None:
            return super().read(key)
        raw = self._get_raw(sealed_name)
        if raw is not None:
            return self._unseal(sealed_name, envelope_token(raw)), _digest(raw)
        old_raw = self._get_raw(key)
        old = classify_old(old_raw)
        if old.kind == "absent" or old_raw is None:
            return None, None
        if old.kind == "plain":
            return self._parse(key, old_raw), f"old:{_digest(old_raw)}"
        if old.kind == "moving":
            return self._unseal(key, old.sealed), f"moving:{_digest(old_raw)}"
        raise ConfigurationError(
            f"Variable {key!r} says its token record moved to Variable {old.moved_to!r}, and Variable "
            f"{sealed_name!r} does not exist. Do not delete either: if {old.moved_to!r} is not {sealed_name!r}, "
            "set extra 'store_path' back to what it was when the record moved; if the sealed record was "
            "deleted, its refresh token is gone: put a new refresh_token on the connection"
        )

    # -- writing ------------------------------------------------------------------------------------

    def write(self, key: str, record: TokenRecord, expected_version: Version) -> Version:
        """Compare, write, read back; an old record moves by its first write (see the module doc)."""
        import time

        sealed_name = self.sealed_keys.get(key)
        if sealed_name is None:
            return super().write(key, record, expected_version)
        where, expected = split_version(expected_version)
        token = self.sealer(sealed_name).seal(record.to_storage_json())
        urgent = record.intent_id is None
        target = key if where == "old" else sealed_name
        raw = tombstone(sealed_name, token) if where == "old" else envelope(token)
        with _IO_GATE.hold(urgent=urgent):
            started = time.monotonic()
            current_sealed = self._get_raw_ungated(sealed_name)
            current: str | None
            if where == "sealed":
                if current_sealed is None or _digest(current_sealed) != expected:
                    raise StoreConflict(
                        f"Variable {sealed_name!r} changed since it was read; not overwriting it"
                    )
                current = current_sealed
            else:
                if current_sealed is not None:
                    raise StoreConflict(f"Variable {sealed_name!r} was created by another process meanwhile")
                current_old = self._get_raw_ungated(key)
                if (None if current_old is None else _digest(current_old)) != expected:
                    raise StoreConflict(f"Variable {key!r} changed since it was read; not overwriting it")
                current = current_old if target == key else None
            self._set_raw(target, raw)
            self._local.window = time.monotonic() - started
        self._read_back(target, raw, current, urgent=urgent)
        if where == "moving":
            self._trim_tombstone(key, sealed_name, expected)
        return f"moving:{_digest(raw)}" if where == "old" else _digest(raw)

    def _trim_tombstone(self, key: str, sealed_name: str, expected: str | None) -> None:
        """Once the sealed Variable exists, the tombstone keeps only where the record went (best effort:
        a tombstone still holding a copy is never read while the sealed Variable exists)."""
        try:
            with _IO_GATE.hold(urgent=True):
                current = self._get_raw_ungated(key)
                if current is not None and _digest(current) == expected:
                    self._set_raw(key, tombstone(sealed_name))
        except Exception as exc:  # noqa: BLE001 - the record itself is written; only the pointer is late
            log.warning(
                "Variable %r: could not trim the tombstone to a pointer after the move (%s); it still "
                "holds the sealed copy, which is not read while %r exists",
                key,
                type(exc).__name__,
                sealed_name,
            )
