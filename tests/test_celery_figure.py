"""The cluster figure's pure parts: times to token read from task logs, and their percentiles."""

from __future__ import annotations

from airflow_provider_tokenrefresh.testing.celery_herd import percentile, times_to_token


def test_times_to_token_are_read_from_every_printed_line_and_sorted() -> None:
    logs = "x time_to_token_ms=12.5\nnoise time_to_token_ms=3.0 more\n[task] time_to_token_ms=100.25\n"
    assert times_to_token(logs) == [3.0, 12.5, 100.25]
    assert times_to_token("no figures here") == []


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 65)]  # 64 uses
    assert percentile(values, 50) == 32.0
    assert percentile(values, 99) == 64.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
