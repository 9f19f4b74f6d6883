"""The peer pattern users write today, for the benchmarks and the cluster figure: refresh with the
client credentials (``client_secret_basic``) and keep the answer as a small JSON document (in a
Variable). No lock, no intent, no read-back: what our keeper is measured against."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


def peer_refresh(
    http: httpx.Client, token_url: str, refresh_token: str, client_id: str, client_secret: str
) -> dict[str, Any]:
    """POST the ``refresh_token`` grant; the token document to store: ``access_token``,
    ``refresh_token`` (the one sent when the vendor returns none) and ``expires_at`` (epoch s).

    :raises httpx.HTTPStatusError: the vendor refused (a reused or revoked token, for example).
    """
    answer = http.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(client_id, client_secret),
    )
    answer.raise_for_status()
    body = answer.json()
    return {
        "access_token": body["access_token"],
        "refresh_token": body.get("refresh_token", refresh_token),
        "expires_at": time.time() + float(body["expires_in"]),
    }
