"""The token health plugin: a page in the Airflow UI listing every ``tokenrefresh_*`` connection.

Registered through the ``airflow.plugins`` entry point. On Airflow 3.1+ it adds a FastAPI app
under the api-server (``/tokenrefresh/health`` for HTML, ``/tokenrefresh/health.json`` beside it)
and an ``external_views`` entry in the Browse menu that shows the page inside the UI.

Airflow imports this module in every process that loads plugins, task processes included, so it
imports only the Task SDK's plugin base class: the FastAPI app (:mod:`.health_app`) is built the first
time ``fastapi_apps`` is read, which only the api-server (and ``airflow plugins``) does.
"""

from __future__ import annotations

from typing import Any

# The SDK's base class: a task process has it loaded already (it loads plugins); Airflow checks a
# plugin's base by name, so the api-server accepts it too (core's airflow.plugins_manager imports it).
from airflow.sdk.plugins_manager import AirflowPlugin

#: Where the app is mounted under the api-server.
URL_PREFIX = "/tokenrefresh"
#: The UI route of the page inside the Airflow UI (``/plugin/token_health``).
UI_ROUTE = "token_health"


def base_path(path: str) -> str:
    """``path`` under the path of ``[api] base_url`` (``/airflow/tokenrefresh/...`` behind a prefix)."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="/") or "/"
    prefix = urlsplit(base).path if base.startswith(("http://", "https://")) else base
    return prefix.rstrip("/") + path


class _FastAPIApps:
    """``fastapi_apps``, built on first read (the api-server's), then kept."""

    _built: list[dict[str, Any]] | None = None

    def __get__(self, obj: object, objtype: type | None = None) -> list[dict[str, Any]]:
        if _FastAPIApps._built is None:
            from airflow_provider_tokenrefresh.plugins.health_app import create_app

            _FastAPIApps._built = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Token health"}]
        return _FastAPIApps._built


class _ExternalViews:
    """``external_views``: the Browse menu entry (its href depends on ``[api] base_url``)."""

    def __get__(self, obj: object, objtype: type | None = None) -> list[dict[str, Any]]:
        return [
            {
                "name": "Token health",
                "href": base_path(f"{URL_PREFIX}/health"),
                "destination": "nav",
                "category": "browse",
                "url_route": UI_ROUTE,
            }
        ]


class TokenHealthPlugin(AirflowPlugin):
    """Token health page: state, expiries, errors, refreshes in flight and one-line fixes."""

    name = "tokenrefresh_health"
    fastapi_apps = _FastAPIApps()
    external_views = _ExternalViews()
