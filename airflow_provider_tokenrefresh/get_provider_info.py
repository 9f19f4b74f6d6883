"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """Return the provider description Airflow uses to discover connection types and hooks."""
    return {
        "package-name": "airflow-provider-tokenrefresh",
        "name": "Token Refresh",
        "description": "Keeps vendor access tokens valid; persists rotated refresh tokens.",
        "versions": ["0.1.0"],
    }
