"""Connections pointing at started emulators: fields for the REST API, and ready-to-paste
``airflow connections add`` lines (``airflow-tokenrefresh emulate`` prints them).

Only ever with an emulator's throwaway demo credentials and tokens: nothing here touches Airflow.
"""

from __future__ import annotations

import json
import shlex
from typing import Any


def emulator_connection(
    emulator: Any, refresh_token: str, access_token: str | None, **extra: Any
) -> dict[str, Any]:
    """Connection fields (host, login, password, extra) pointing at a started emulator."""
    fields: dict[str, Any] = {
        "host": emulator.base_url,
        "extra": {
            "refresh_token": refresh_token,
            "allow_insecure_http": emulator.base_url.startswith("http://"),
            **({"access_token": access_token} if access_token else {}),
            **extra,
        },
    }
    if emulator.name != "bearer_json":
        fields["login"] = emulator.client_id
        fields["password"] = emulator.client_secret
    return fields


def connections_add_command(conn_id: str, emulator: Any, refresh_token: str, access_token: str | None) -> str:
    """One shell line, ``airflow connections add ...``, for the emulator's dialect (quoted for a
    POSIX shell)."""
    fields = emulator_connection(emulator, refresh_token, access_token)
    argv = ["airflow", "connections", "add", conn_id, "--conn-type", f"tokenrefresh_{emulator.name}"]
    argv += ["--conn-host", fields["host"]]
    if "login" in fields:
        argv += ["--conn-login", fields["login"], "--conn-password", fields["password"]]
    argv += ["--conn-extra", json.dumps(fields["extra"], separators=(",", ":"))]
    return shlex.join(argv)


__all__ = ["connections_add_command", "emulator_connection"]
