"""The sealed Variable layout's pure parts: what a stored value is, and the Fernet seal around it.

A sealed record is stored as ``{"sealed_by": "airflow-provider-tokenrefresh", "fernet": "gAAAA..."}``:
the record's JSON encrypted with the deployment's ``[core] fernet_key`` (the first key seals; any
key of the list unseals, as :class:`cryptography.fernet.MultiFernet` does). Its Variable name
carries no sensitive word, so Airflow's masker never learns the value: nothing in it is readable
without the key.

The record's old, masked Variable is never deleted. When a record moves, that Variable is
overwritten by a *tombstone*, ``{"schema_version": 2, "state": "moved", "moved_to": ..., ...}``.
Releases up to 0.2.0 refuse it (``state`` is not one they know), so a host still running one
stops loudly instead of seeding a second chain. While the move is under way the tombstone also
holds the sealed record, so the move is one write of the old Variable and a crash in the middle
loses nothing.

No I/O here except reading the Fernet key from Airflow's configuration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_tokenrefresh.errors import ConfigurationError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

SEALED_BY = "airflow-provider-tokenrefresh"
MOVED = "moved"
TOMBSTONE_NOTE = (
    "This connection's token record moved to the Variable named in moved_to (extra store: "
    "sealed_variable). Do not delete this Variable: older releases read it and must keep refusing it."
)

OldKind = Literal["absent", "plain", "moving", "moved"]


@dataclass(frozen=True)
class OldValue:
    """What the old (masked) Variable holds: nothing, a plain record, or a tombstone."""

    kind: OldKind
    #: The sealed record inside a tombstone of a move still under way (``kind == "moving"``).
    sealed: str | None = None
    #: Where a tombstone says the record went.
    moved_to: str | None = None


def classify_old(raw: str | None) -> OldValue:
    """Read the old Variable's value without parsing a record out of it."""
    if raw is None:
        return OldValue("absent")
    try:
        data = json.loads(raw)
    except ValueError:
        return OldValue("plain")  # not ours to judge here: the record parser names the problem
    if not isinstance(data, dict) or data.get("state") != MOVED:
        return OldValue("plain")
    sealed = data.get("sealed")
    moved_to = data.get("moved_to")
    return OldValue(
        "moving" if isinstance(sealed, str) and sealed else "moved",
        sealed=sealed if isinstance(sealed, str) and sealed else None,
        moved_to=moved_to if isinstance(moved_to, str) else None,
    )


def tombstone(moved_to: str, sealed: str | None = None) -> str:
    """The old Variable's value once its record moved (with the sealed record while moving)."""
    data: dict[str, Any] = {
        "schema_version": 2,
        "state": MOVED,
        "moved_to": moved_to,
        "note": TOMBSTONE_NOTE,
    }
    if sealed is not None:
        data["sealed"] = sealed
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def envelope(token: str) -> str:
    """The stored value around a Fernet token."""
    return json.dumps({"fernet": token, "sealed_by": SEALED_BY}, separators=(",", ":"), sort_keys=True)


def envelope_token(raw: str) -> str | None:
    """The Fernet token inside a stored value, or ``None`` if the value is not a sealed record."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("sealed_by") == SEALED_BY and isinstance(data.get("fernet"), str):
        token: str = data["fernet"]
        return token
    return None


class Sealer:
    """Fernet over a ``[core] fernet_key`` value: seal with the first key, unseal with any."""

    def __init__(self, fernet_key: str) -> None:
        from cryptography.fernet import Fernet

        parts = [part.strip() for part in fernet_key.split(",") if part.strip()]
        if not parts:
            raise ConfigurationError(
                "the sealed_variable store needs [core] fernet_key (AIRFLOW__CORE__FERNET_KEY), the same on "
                "every Airflow component, and it is empty here. Set it. Nothing was read or written"
            )
        try:
            self._keys: list[Fernet] = [Fernet(part.encode()) for part in parts]
        except (ValueError, TypeError):
            raise ConfigurationError(
                "the sealed_variable store needs a valid [core] fernet_key (a comma-separated list of "
                "url-safe base64 32-byte keys); the one here is not. Nothing was read or written"
            ) from None

    def seal(self, plain: str) -> str:
        """Encrypt with the primary (first) key."""
        return self._keys[0].encrypt(plain.encode()).decode()

    def unseal(self, token: str) -> tuple[str, bool]:
        """Decrypt with any key; also say whether the primary key sealed it.

        :raises ValueError: no key of the list opens it (a different ``fernet_key``).
        """
        from cryptography.fernet import InvalidToken

        for index, key in enumerate(self._keys):
            try:
                return key.decrypt(token.encode()).decode(), index == 0
            except InvalidToken:
                continue
        raise ValueError("no key of [core] fernet_key opens this sealed record")


_SEALERS: dict[str, Sealer] = {}


def deployment_sealer() -> Sealer:
    """The sealer of this process's ``[core] fernet_key`` (read through Airflow's configuration,
    so ``fernet_key_cmd`` and ``fernet_key_secret`` work as they do for Airflow itself)."""
    from airflow.configuration import conf

    value = str(conf.get("core", "fernet_key", fallback="") or "")
    sealer = _SEALERS.get(value)
    if sealer is None:
        sealer = _SEALERS[value] = Sealer(value)
    return sealer
