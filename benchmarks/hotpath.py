"""Hot path: asking for a token that is still valid.

Ours: ``TokenKeeper.get_valid_token(min_ttl)`` (a) from the in-process cache, (b) through the
``FileTokenStore`` (``TokenKeeper.clear_cache()`` before each call). Peer: Authlib's
``OAuth2Client.ensure_active_token(token)`` on a valid token, and, as the counterpart of (b), the
same after reading the token from a JSON file. ns/op is the median of ``timeit`` repeats.
"""

from __future__ import annotations

import json
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from benchmarks.common import atomic_write_json, authlib_oauth2_client, median, ratio, vendor

MIN_TTL = 300.0
REPEAT = 7
NUMBERS = {
    "ours_cache": 20_000,
    "ours_store": 2_000,
    "clear_cache": 200_000,
    "peer": 200_000,
    "peer_file": 5_000,
}


def _ns_per_op(fn: Any, number: int, repeat: int = REPEAT) -> dict[str, Any]:
    fn()  # warm
    runs = timeit.Timer(fn).repeat(repeat=repeat, number=number)
    per_op = [total / number * 1e9 for total in runs]
    return {"median_ns": median(per_op), "min_ns": min(per_op), "number": number, "repeat": repeat}


def run() -> dict[str, Any]:
    """Measure all variants against one emulator (only the seeding refresh reaches it)."""
    import ssl

    OAuth2Client = authlib_oauth2_client()
    from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
    from airflow_provider_tokenrefresh.dialects import PRESETS
    from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
    from airflow_provider_tokenrefresh.keeper import Seed, TokenKeeper
    from airflow_provider_tokenrefresh.locks.file import FileRefreshLock
    from airflow_provider_tokenrefresh.stores import FileTokenStore

    with (
        vendor(rotation=True, reuse_detection=True) as emulator,
        tempfile.TemporaryDirectory(prefix="bench-hot-") as tmp,
    ):
        seed = emulator.issue_tokens()
        client = RefreshClient(
            PRESETS["oauth2_basic"],
            ClientSettings(
                base_url=emulator.base_url,
                credentials=ClientCredentials(emulator.client_id, emulator.client_secret),
                allow_insecure_http=True,
            ),
        )
        keeper = TokenKeeper(
            "hot_conn",
            client,
            FileTokenStore(str(Path(tmp) / "store")),
            FileRefreshLock(str(Path(tmp) / "locks")),
            Seed(seed.refresh_token),
            conn_id="hot_conn",
        )
        keeper.refresh(force=True)  # a fresh token, in the store and in the cache
        client.close()
        refreshes = emulator.counters.get("ok", 0)

        def ours_store() -> None:
            TokenKeeper.clear_cache()
            keeper.get_valid_token(MIN_TTL)

        results: dict[str, Any] = {
            "ours_cache": _ns_per_op(lambda: keeper.get_valid_token(MIN_TTL), NUMBERS["ours_cache"]),
            "ours_store": _ns_per_op(ours_store, NUMBERS["ours_store"]),
            "clear_cache": _ns_per_op(TokenKeeper.clear_cache, NUMBERS["clear_cache"]),
        }
        assert emulator.counters.get("ok", 0) == refreshes, "the hot path called the vendor"

        record = keeper.current()
        assert record.access_token is not None and record.refresh_token is not None
        token = {
            "access_token": record.access_token.get_secret_value(),
            "refresh_token": record.refresh_token.get_secret_value(),
            "token_type": "Bearer",
            "expires_at": int(time.time()) + 7000,
        }
        token_file = str(Path(tmp) / "peer-token.json")
        atomic_write_json(token_file, token)
        peer = OAuth2Client(
            client_id=emulator.client_id,
            client_secret=emulator.client_secret,
            token_endpoint_auth_method="client_secret_basic",
            token_endpoint=emulator.token_url,
            token=token,
            verify=ssl.create_default_context(),
            trust_env=False,
        )
        active = peer.token

        def peer_file() -> None:
            with open(token_file) as fh:
                peer.token = json.load(fh)
            peer.ensure_active_token(peer.token)

        results["peer"] = _ns_per_op(lambda: peer.ensure_active_token(active), NUMBERS["peer"])
        results["peer_file"] = _ns_per_op(peer_file, NUMBERS["peer_file"])
        peer.close()
        assert emulator.refresh_requests == 1, "a valid token must not be refreshed"

    ns = {key: value["median_ns"] for key, value in results.items()}
    return {
        "config": {
            "min_ttl_s": MIN_TTL,
            "repeat": REPEAT,
            "numbers": NUMBERS,
            "ours_cache": "TokenKeeper.get_valid_token(min_ttl), in-process cache hit",
            "ours_store": "TokenKeeper.clear_cache(); TokenKeeper.get_valid_token(min_ttl) -> FileTokenStore read",
            "clear_cache": "TokenKeeper.clear_cache() alone (included in ours_store)",
            "peer": "authlib OAuth2Client.ensure_active_token(token), token valid",
            "peer_file": "json.load(token file); client.token = ...; ensure_active_token (extra: peer with a store)",
        },
        "results": results,
        "ratios": {
            "cache_vs_peer": ratio(ns["ours_cache"], ns["peer"]),
            "store_vs_peer": ratio(ns["ours_store"], ns["peer"]),
            "store_vs_peer_file": ratio(ns["ours_store"], ns["peer_file"]),
        },
    }


if __name__ == "__main__":
    from benchmarks.common import child_main

    child_main(run)
