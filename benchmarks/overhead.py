"""Overhead: one refresh through ``RefreshClient.refresh`` versus a bare ``httpx.Client.post``.

Both send the same form body (``grant_type=refresh_token&refresh_token=...``, HTTP Basic client
credentials) to the same non-rotating emulator endpoint over one pooled keep-alive connection
each. Calls alternate in blocks so that drift hits both sides alike.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import median, percentile, ratio, vendor

CALLS = 500
WARMUP = 50
BLOCK = 100


def _stats(samples_ns: list[int]) -> dict[str, float]:
    us = [s / 1e3 for s in samples_ns]
    return {
        "median_us": median(us),
        "p99_us": percentile(us, 0.99),
        "first_block_median_us": median(us[:BLOCK]),
        "last_block_median_us": median(us[-BLOCK:]),
    }


def run(calls: int = CALLS) -> dict[str, Any]:
    """Alternate blocks of ours and bare calls; report per-call median and p99."""
    import httpx

    from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
    from airflow_provider_tokenrefresh.dialects import PRESETS
    from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials

    with vendor(rotation=False, reuse_detection=True) as emulator:
        seed = emulator.issue_tokens()
        ours = RefreshClient(
            PRESETS["oauth2_basic"],
            ClientSettings(
                base_url=emulator.base_url,
                credentials=ClientCredentials(emulator.client_id, emulator.client_secret),
                allow_insecure_http=True,
            ),
        )
        bare = httpx.Client(trust_env=False, verify=ours.ssl_context(), timeout=30)
        form = {"grant_type": "refresh_token", "refresh_token": seed.refresh_token}
        auth = httpx.BasicAuth(emulator.client_id, emulator.client_secret)

        def call_ours() -> int:
            start = time.perf_counter_ns()
            ours.refresh(seed.refresh_token)
            return time.perf_counter_ns() - start

        def call_bare() -> int:
            start = time.perf_counter_ns()
            response = bare.post(emulator.token_url, data=form, auth=auth)
            elapsed = time.perf_counter_ns() - start
            if response.status_code != 200:
                raise RuntimeError(f"bare post answered HTTP {response.status_code}")
            return elapsed

        for _ in range(WARMUP):
            call_ours()
            call_bare()
        samples: dict[str, list[int]] = {"ours": [], "bare": []}
        for block in range(calls // BLOCK):
            order = ("ours", "bare") if block % 2 == 0 else ("bare", "ours")
            for side in order:
                fn = call_ours if side == "ours" else call_bare
                samples[side].extend(fn() for _ in range(BLOCK))
        ours.close()
        bare.close()
        counters = emulator.counters
        assert counters.get("ok", 0) == 2 * (WARMUP + calls // BLOCK * BLOCK), counters
    stats = {side: _stats(values) for side, values in samples.items()}
    return {
        "config": {
            "calls_per_side": calls // BLOCK * BLOCK,
            "warmup_per_side": WARMUP,
            "block": BLOCK,
            "vendor": "OAuth2BasicEmulator(rotation=False), latency 0",
            "ours": "RefreshClient.refresh(refresh_token) (oauth2_basic preset; parse, validate, redaction)",
            "peer": "httpx.Client.post(token_url, data=form, auth=BasicAuth) (body read, not parsed)",
        },
        "ours": stats["ours"],
        "bare": stats["bare"],
        "added_us_median": stats["ours"]["median_us"] - stats["bare"]["median_us"],
        "ratios": {
            "median": ratio(stats["ours"]["median_us"], stats["bare"]["median_us"]),
            "p99": ratio(stats["ours"]["p99_us"], stats["bare"]["p99_us"]),
        },
    }


if __name__ == "__main__":
    from benchmarks.common import child_main

    child_main(run)
