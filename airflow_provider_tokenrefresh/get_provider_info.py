"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

Connection forms are declarative (``conn-fields`` and ``ui-field-behaviour``), so the React UI
draws a form per dialect without importing the hook. Field names avoid the words Airflow treats as
sensitive unless the value *is* a secret (``endpoint``, not ``token_url``), because Airflow masks
the values of such fields.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_tokenrefresh import __version__

PACKAGE = "airflow-provider-tokenrefresh"
VERSION = __version__
_HOOKS = "airflow_provider_tokenrefresh.hooks.tokenrefresh"

_STR = {"type": ["string", "null"]}
_SECRET = {"type": ["string", "null"], "format": "password"}


def _field(label: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"label": label, "schema": schema, "description": description}


def _common_fields(*, access_token_required: bool) -> dict[str, Any]:
    access = (
        "Initial access token. Required: this vendor wants the current access token with every refresh."
        if access_token_required
        else "Optional initial access token (used until its first refresh)."
    )
    return {
        "refresh_token": _field(
            "Refresh token",
            _SECRET,
            "Initial refresh token. Later (rotated) tokens live in the store; put a new one here to re-seed.",
        ),
        "access_token": _field("Access token", _SECRET, access),
        "endpoint": _field(
            "Endpoint path", _STR, "Overrides the documented refresh path, e.g. /api/v1/oauth2/token."
        ),
        "verify": _field(
            "TLS verification", _STR, "true (default), false, or the path of a CA bundle for a private CA."
        ),
        "client_cert": _field("Client certificate path", _STR, "PEM certificate for mutual TLS."),
        "client_key": _field(
            "Client key path", _STR, "PEM private key for mutual TLS, if not in the certificate file."
        ),
        "allow_insecure_http": _field(
            "Allow plain http://",
            {"type": ["boolean", "null"], "default": False},
            "Only for local emulators and tests: tokens would travel unencrypted.",
        ),
        "refresh_margin": _field(
            "Refresh margin (s)",
            {"type": ["number", "null"], "default": 300},
            "Refresh when less than this many seconds of validity are left.",
        ),
        "refresh_lifetime": _field(
            "Refresh-token lifetime (s)",
            {"type": ["number", "null"]},
            "Used when the vendor does not state how long a refresh token lives.",
        ),
        "store": _field(
            "Token store",
            {
                "type": ["string", "null"],
                "enum": ["variable", "sealed_variable", "file", "vault", "aws", None],
                "default": "variable",
            },
            "Where the evolving token record is kept (sealed_variable: encrypted with [core] fernet_key under a "
            "name Airflow does not mask; fast with many connections per task or trigger).",
        ),
        "store_path": _field(
            "Store key", _STR, "Key (Variable name or secret path); defaults per connection."
        ),
        "store_conn_id": _field("Store connection id", _STR, "Connection of the secrets store (vault/aws)."),
        "lock": _field(
            "Refresh lock",
            {
                "type": ["string", "null"],
                "enum": ["auto", "file", "redis", "postgres", None],
                "default": "auto",
            },
            "Spares waiters a spin (the stored record is the lease): auto = the Celery broker's Redis when "
            "there is one, else file (one machine); redis/postgres need a lock connection id.",
        ),
        "lock_conn_id": _field("Lock connection id", _STR, "Connection of the lock server (redis/postgres)."),
        "lock_timeout": _field(
            "Lock timeout (s)",
            {"type": ["number", "null"], "default": 60},
            "Longest wait for the refresh lock, or for another process's refresh in flight.",
        ),
        "refresh_stale_after": _field(
            "Refresh in flight bound (s)",
            {"type": ["number", "null"]},
            "A refresh intent older than this counts as crashed; default: every attempt's timeout plus "
            "the lock lease plus 30 s (about 3 minutes). Never lower it below one refresh's worst case.",
        ),
        "reuse_grace": _field(
            "Vendor reuse window (s)",
            {"type": ["number", "null"], "default": 0},
            "Only if the vendor documents one (Okta, Auth0, Hydra, Cognito, WorkOS): a rotated refresh "
            "token stays usable this long, so a lost answer is asked again inside it. 0 = strict.",
        ),
    }


_DIALECT_FORMS: dict[str, dict[str, Any]] = {
    "oauth2_basic": {
        "hook": "OAuth2BasicTokenHook",
        "name": "Token Refresh: OAuth2 (client secret basic)",
        "relabeling": {"host": "Base URL", "login": "Client ID", "password": "Client secret"},
        "placeholders": {"host": "https://vendor.example"},
        "hidden": ["schema", "port"],
    },
    "oauth2_post": {
        "hook": "OAuth2PostTokenHook",
        "name": "Token Refresh: OAuth2 (client secret post)",
        "relabeling": {"host": "Base URL", "login": "Client ID", "password": "Client secret"},
        "placeholders": {"host": "https://vendor.example"},
        "hidden": ["schema", "port"],
    },
    "query_basic": {
        "hook": "QueryBasicTokenHook",
        "name": "Token Refresh: BabelBird (query string)",
        "relabeling": {"host": "Base URL", "login": "Client ID", "password": "Client secret"},
        "placeholders": {"host": "https://babelbird.example"},
        "hidden": ["schema", "port"],
    },
    "appid_json": {
        "hook": "AppIdJsonTokenHook",
        "name": "Token Refresh: IoT platform (appId/secret JSON)",
        "relabeling": {"host": "Base URL", "login": "App ID", "password": "Secret"},
        "placeholders": {"host": "https://iot.example:8743"},
        "hidden": ["schema", "port"],
    },
    "bearer_json": {
        "hook": "BearerJsonTokenHook",
        "name": "Token Refresh: iSales (bearer JSON)",
        "relabeling": {"host": "Base URL"},
        "placeholders": {"host": "https://service.besclouds.com"},
        "hidden": ["schema", "port", "login", "password"],
    },
    "custom": {
        "hook": "TokenRefreshHook",
        "name": "Token Refresh (custom dialect)",
        "relabeling": {"host": "Base URL", "login": "Client ID", "password": "Client secret"},
        "placeholders": {"host": "https://vendor.example"},
        "hidden": ["schema", "port"],
    },
}


def connection_types() -> list[dict[str, Any]]:
    """The six connection types with their declarative form fields."""
    types = []
    for dialect, form in _DIALECT_FORMS.items():
        fields = _common_fields(access_token_required=dialect == "bearer_json")
        if dialect == "custom":
            fields["dialect"] = _field(
                "Dialect spec (JSON)",
                _STR,
                "The vendor's refresh call as a dialect spec: request, response, errors. See README.",
            )
        types.append(
            {
                "hook-class-name": f"{_HOOKS}.{form['hook']}",
                "hook-name": form["name"],
                "connection-type": f"tokenrefresh_{dialect}",
                "conn-fields": fields,
                "ui-field-behaviour": {
                    "hidden-fields": form["hidden"],
                    "relabeling": form["relabeling"],
                    "placeholders": form["placeholders"],
                },
            }
        )
    return types


def get_provider_info() -> dict[str, Any]:
    """Return the provider description Airflow uses to discover connection types and hooks."""
    return {
        "package-name": PACKAGE,
        "name": "Token Refresh",
        "description": "Keeps vendor access tokens valid: one refresh per expiry across the cluster, rotated "
        "refresh tokens persisted, never a token in a log.",
        "versions": [VERSION],
        "integrations": [{"integration-name": "Token Refresh", "tags": ["service"]}],
        "hooks": [{"integration-name": "Token Refresh", "python-modules": [_HOOKS]}],
        "operators": [
            {
                "integration-name": "Token Refresh",
                "python-modules": ["airflow_provider_tokenrefresh.operators.tokenrefresh"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Token Refresh",
                "python-modules": ["airflow_provider_tokenrefresh.sensors.tokenrefresh"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Token Refresh",
                "python-modules": ["airflow_provider_tokenrefresh.triggers.tokenrefresh"],
            }
        ],
        "connection-types": connection_types(),
    }
