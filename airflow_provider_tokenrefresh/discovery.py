"""Which ``tokenrefresh_*`` connections exist: pure functions over the environment and config text.

The metadata database lists its own connections, but a connection can also live only in an
``AIRFLOW_CONN_<ID>`` environment variable or in a secrets backend (Vault, AWS, a local file), and
no secrets backend can be listed. So the status command and the health page add:

* every ``AIRFLOW_CONN_*`` variable whose value (URI or JSON) has a ``tokenrefresh_*`` type, and
* the ids named in ``[tokenrefresh] connections`` (``AIRFLOW__TOKENREFRESH__CONNECTIONS``), a
  comma- or whitespace-separated list, for connections held in a secrets backend.

Nothing here reads a connection's secret fields: only its type.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: Airflow's environment-variables secrets backend prefix (``AIRFLOW_CONN_{CONN_ID.upper()}``).
ENV_PREFIX = "AIRFLOW_CONN_"
TYPE_PREFIX = "tokenrefresh_"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-_]*)://")


def conn_type_of(value: str) -> str | None:
    """The connection type of an ``AIRFLOW_CONN_*`` value: a JSON object's ``conn_type``, else the
    URI scheme with ``-`` read as ``_`` (as Airflow parses it); ``None`` when it has neither."""
    text = value.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return None
        conn_type = parsed.get("conn_type") if isinstance(parsed, dict) else None
        return conn_type if isinstance(conn_type, str) else None
    match = _SCHEME.match(text)
    return match.group(1).replace("-", "_").lower() if match else None


def env_conn_ids(environ: Mapping[str, str]) -> list[str]:
    """Ids of the ``tokenrefresh_*`` connections defined by ``AIRFLOW_CONN_*`` variables, sorted.

    Airflow finds ``AIRFLOW_CONN_MY_API`` for the id ``my_api`` (it upper-cases the id it looks
    up), so the id is the variable's suffix in lower case."""
    found = []
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or len(name) == len(ENV_PREFIX):
            continue
        conn_type = conn_type_of(value)
        if conn_type is not None and conn_type.startswith(TYPE_PREFIX):
            found.append(name[len(ENV_PREFIX) :].lower())
    return sorted(set(found))


def configured_conn_ids(value: str | None) -> list[str]:
    """The ids in ``[tokenrefresh] connections`` (commas or whitespace between them), in order."""
    if not value:
        return []
    return list(dict.fromkeys(part for part in re.split(r"[\s,]+", value) if part))


def merge_conn_ids(*sources: Iterable[str]) -> list[str]:
    """Every id once, in the order first seen (metastore first, then environment, then config)."""
    merged: dict[str, None] = {}
    for source in sources:
        merged.update(dict.fromkeys(source))
    return list(merged)


def extra_conn_ids(environ: Mapping[str, str], configured: str | None) -> list[str]:
    """The ids the metadata database cannot list: environment variables, then the configured list."""
    return merge_conn_ids(env_conn_ids(environ), configured_conn_ids(configured))


def configured_setting() -> str | None:
    """``[tokenrefresh] connections`` from Airflow's config (``None`` when unset)."""
    from airflow.configuration import conf

    value = conf.get("tokenrefresh", "connections", fallback=None)
    return value if isinstance(value, str) else None
