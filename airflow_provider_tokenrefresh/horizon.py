"""``[tokenrefresh] refresh_token_horizon``: how far ahead a lapsing refresh token is warned about.

Its own small module: every keeper looks it up after its first token (``TokenKeeper.warn_if_lapsing``),
so it must not pull in :mod:`airflow_provider_tokenrefresh.schedule` (the keeper DAG's interval
rules, about 1 ms to import) into every task process that only wants a token.
"""

from __future__ import annotations

import logging

from airflow_provider_tokenrefresh.tokens import DEFAULT_REFRESH_TOKEN_HORIZON

log = logging.getLogger(__name__)


def configured_refresh_token_horizon() -> float:
    """``[tokenrefresh] refresh_token_horizon`` (seconds) from Airflow's configuration; 7 days when
    unset.

    A process that has not loaded Airflow's configuration (a keeper used as a library, a script)
    reads only ``AIRFLOW__TOKENREFRESH__REFRESH_TOKEN_HORIZON``: importing Airflow for one setting
    costs about a second of CPU per process, which a herd of fresh processes paid on its first
    call (benchmarks/herd.py: round 0 took 53 s for 64 processes on 2 cores)."""
    import os
    import sys

    try:
        if "airflow.configuration" in sys.modules:
            from airflow.configuration import conf

            return float(
                conf.getfloat("tokenrefresh", "refresh_token_horizon", fallback=DEFAULT_REFRESH_TOKEN_HORIZON)
            )
        return float(
            os.environ.get("AIRFLOW__TOKENREFRESH__REFRESH_TOKEN_HORIZON") or DEFAULT_REFRESH_TOKEN_HORIZON
        )
    except (ValueError, TypeError):
        log.warning(
            "[tokenrefresh] refresh_token_horizon is not a number of seconds; using %.0f",
            DEFAULT_REFRESH_TOKEN_HORIZON,
        )
        return DEFAULT_REFRESH_TOKEN_HORIZON
