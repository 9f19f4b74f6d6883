"""The token health page's FastAPI app, mounted by the api-server under ``/tokenrefresh``.

* ``GET /tokenrefresh/health``: server-rendered HTML.
* ``GET /tokenrefresh/health.json``: the same rows as JSON.

Both are protected by Airflow's auth manager (plugin routes are not protected by default): the
caller must be signed in (``_token`` cookie or ``Authorization: Bearer``) and allowed to read
connections (Airflow's own ``requires_access_connection("GET")``, the check of the connections
list); an unauthenticated browser is sent to the login page, an API client gets 401. Each row is
shown only when the auth manager's ``is_authorized_connection`` allows that user to read that
connection (with its team in multi-team mode), and its store is read only then.

Only the api-server imports this module (it needs FastAPI and the auth manager).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_connection
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_tokenrefresh.plugins.health_page import render_page, render_refusal
from airflow_provider_tokenrefresh.plugins.health_rows import (
    DEFAULT_REFRESH_TOKEN_HORIZON,
    DEFAULT_STALLED_AFTER,
    HealthRow,
    row_from_error,
    row_from_status,
    summary,
)

if TYPE_CHECKING:
    from datetime import datetime

    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from fastapi.responses import Response

log = logging.getLogger(__name__)

_SENSITIVE_EXTRA = ("token", "secret", "password", "key", "credential")


@dataclass
class _Fields:
    """What the page reads of one connection row (values in clear: never rendered)."""

    conn_id: str
    conn_type: str
    host: str | None = None
    login: str | None = None
    password: str | None = None
    extra: str | None = None
    port: int | None = None
    schema: str | None = None
    unreadable: str | None = None
    failure: BaseException | None = None

    def secrets(self) -> list[str | None]:
        """The connection's own secret values (client secret, seeded tokens), for redaction."""
        import json

        found: list[str | None] = [self.password]
        try:
            extra = json.loads(self.extra) if self.extra else {}
        except ValueError:
            extra = {}
        if isinstance(extra, dict):
            found += [
                str(v)
                for k, v in extra.items()
                if isinstance(v, str) and any(w in k.lower() for w in _SENSITIVE_EXTRA)
            ]
        return found


def _settings() -> tuple[float, float]:
    from airflow.configuration import conf

    horizon = conf.getfloat("tokenrefresh", "refresh_token_horizon", fallback=DEFAULT_REFRESH_TOKEN_HORIZON)
    stalled = conf.getfloat("tokenrefresh", "health_stalled_after", fallback=DEFAULT_STALLED_AFTER)
    return horizon, stalled


def _fields_of(conn: Any) -> _Fields:
    fields = _Fields(conn_id=conn.conn_id, conn_type=conn.conn_type)
    for name in ("host", "login", "password", "extra", "port", "schema"):
        try:
            setattr(fields, name, getattr(conn, name))
        except Exception as exc:  # noqa: BLE001 - e.g. a value encrypted with another Fernet key
            fields.unreadable, fields.failure = name, exc
            break
    return fields


def _readable_connections(user: BaseUser) -> list[_Fields]:
    """Every ``tokenrefresh_*`` connection that ``user`` may read: the metastore's (one query),
    then those only in ``AIRFLOW_CONN_*`` variables or named in ``[tokenrefresh] connections``
    (a secrets backend cannot be listed), read through Airflow's secrets backends."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_tokenrefresh.discovery import configured_setting, extra_conn_ids

    auth_manager = get_auth_manager()

    def allowed(conn_id: str, team_name: str | None) -> bool:
        details = ConnectionDetails(conn_id=conn_id, team_name=team_name)
        return bool(auth_manager.is_authorized_connection(method="GET", details=details, user=user))

    found: list[_Fields] = []
    in_metastore: set[str] = set()
    with create_session() as session:
        rows = session.scalars(
            select(Connection).where(Connection.conn_type.like("tokenrefresh%")).order_by(Connection.conn_id)
        )
        for conn in rows:
            if not str(conn.conn_type or "").startswith("tokenrefresh_"):
                continue
            in_metastore.add(conn.conn_id)
            if allowed(conn.conn_id, getattr(conn, "team_name", None)):
                found.append(_fields_of(conn))
    for conn_id in extra_conn_ids(os.environ, configured_setting()):
        if conn_id in in_metastore or not allowed(conn_id, None):
            continue
        try:
            conn = Connection.get_connection_from_secrets(conn_id)
        except Exception as exc:  # noqa: BLE001 - a named connection no backend holds is a row too
            from airflow_provider_tokenrefresh.errors import ConfigurationError

            missing = ConfigurationError(
                f"named in [tokenrefresh] connections, but no secrets backend holds it "
                f"({type(exc).__name__}): add the connection, or remove it from that list",
                conn_id=conn_id,
            )
            found.append(_Fields(conn_id=conn_id, conn_type="tokenrefresh", failure=missing))
            continue
        if str(conn.conn_type or "").startswith("tokenrefresh_"):
            found.append(_fields_of(conn))
    return found


def _row(fields: _Fields, now: datetime, horizon: float, stalled: float) -> HealthRow:
    """One connection's row; any failure becomes an error row naming the connection and field."""
    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
    from airflow_provider_tokenrefresh.settings import settings_from_fields

    secrets = fields.secrets()
    if fields.failure is not None and fields.unreadable is None:
        return row_from_error(fields.conn_id, fields.failure, conn_type=fields.conn_type, secrets=secrets)
    if fields.unreadable is not None:
        assert fields.failure is not None
        return row_from_error(
            fields.conn_id,
            fields.failure,
            conn_type=fields.conn_type,
            secrets=secrets,
            field_name=fields.unreadable,
        )
    try:
        settings = settings_from_fields(
            fields.conn_id,
            fields.conn_type,
            host=fields.host,
            login=fields.login,
            password=fields.password,
            extra=fields.extra,
            port=fields.port,
            schema=fields.schema,
        )
    except Exception as exc:  # noqa: BLE001 - one bad connection must not hide the others
        return row_from_error(fields.conn_id, exc, conn_type=fields.conn_type, secrets=secrets)
    hook = TokenRefreshHook(fields.conn_id)
    # The connection is already read (with its team, which a team-less lookup by id would miss):
    # hand the hook its settings, as TokenRefreshHook.aload does, instead of reading it again.
    hook.__dict__["settings"] = settings
    store = lock = None
    try:
        keeper = hook.keeper
        store, lock = keeper.store.name, keeper.lock.name
        record = keeper.current()
        secrets += list(record.secrets())
        status: dict[str, Any] = hook.status_of(record, now)
        return row_from_status(
            status,
            conn_type=fields.conn_type,
            now=now,
            secrets=secrets,
            refresh_token_horizon=horizon,
            stalled_after=stalled,
        )
    except Exception as exc:  # noqa: BLE001 - one bad connection must not hide the others
        return row_from_error(
            fields.conn_id,
            exc,
            conn_type=fields.conn_type,
            secrets=secrets,
            dialect=settings.dialect.name,
            store=store,
            lock=lock,
        )
    finally:
        try:
            hook.close()
        except Exception:  # noqa: BLE001 - closing must not turn a row into an error page
            log.warning("Closing the hook of %s failed", fields.conn_id)


def collect_rows(user: BaseUser) -> tuple[str, list[HealthRow], float]:
    """The rows ``user`` may see, the time they were taken and the refresh-token horizon."""
    from airflow_provider_tokenrefresh.tokens import utcnow

    os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")
    horizon, stalled = _settings()
    now = utcnow()
    rows = [_row(fields, now, horizon, stalled) for fields in _readable_connections(user)]
    return now.isoformat(timespec="seconds"), rows, horizon


def _wants_html(request: Request) -> bool:
    return not request.url.path.endswith(".json")


async def _refused(request: Request, exc: Exception) -> Response:
    """401 → the login page for a browser (JSON 401 for the JSON endpoint); 403 → a short page."""
    assert isinstance(exc, StarletteHTTPException)
    if not _wants_html(request):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    if exc.status_code == 401:
        from airflow.api_fastapi.app import get_auth_manager

        from airflow_provider_tokenrefresh.plugins.health import base_path

        login = get_auth_manager().get_url_login(next_url=str(request.url))
        if login.startswith("/") and not login.startswith(base_path("/")):
            login = base_path(login)
        return RedirectResponse(login, status_code=302)
    message = "you may not read connections" if exc.status_code == 403 else str(exc.detail)
    return HTMLResponse(render_refusal(exc.status_code, message), status_code=exc.status_code)


_READ_CONNECTIONS = [Depends(requires_access_connection("GET"))]
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def health_page(request: Request, user: GetUserDep) -> HTMLResponse:
    """The token health page (HTML)."""
    generated_at, rows, horizon = collect_rows(user)
    html = render_page(
        rows,
        generated_at=generated_at,
        user=user.get_name(),
        json_href="health.json",
        refresh_token_horizon=horizon,
    )
    return HTMLResponse(html, headers=_HEADERS)


def health_json(user: GetUserDep) -> JSONResponse:
    """The token health rows (JSON)."""
    generated_at, rows, horizon = collect_rows(user)
    return JSONResponse(
        {
            "generated_at": generated_at,
            "user": user.get_name(),
            "refresh_token_horizon": horizon,
            "summary": summary(rows),
            "connections": [row.to_json() for row in rows],
        },
        headers=_HEADERS,
    )


def create_app() -> FastAPI:
    """The FastAPI app the plugin mounts under ``/tokenrefresh``."""
    app = FastAPI(title="Token health", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(StarletteHTTPException, _refused)
    app.add_api_route(
        "/health", health_page, methods=["GET"], response_class=HTMLResponse, dependencies=_READ_CONNECTIONS
    )
    app.add_api_route(
        "/health.json",
        health_json,
        methods=["GET"],
        response_class=JSONResponse,
        dependencies=_READ_CONNECTIONS,
        name="health_json",
    )
    return app
