"""The five built-in dialects, one per vendor document in ``shared/vendor-docs``.

Each preset is a :class:`DialectSpec` instance; the comments cite the document line that forced
each choice. Where a document is silent (BabelBird's errors, the IoT error body's field names) the
choice is the vendor family's usual one and is said so here.
"""

from __future__ import annotations

from airflow_provider_tokenrefresh.dialects.spec import (
    DialectSpec,
    ErrorRule,
    RequestSpec,
    ResponseSpec,
    SuccessSpec,
)

DAY = 86400.0

# RFC 6749 section 5.2 error codes shared by both OAuth2 documents and BabelBird.
_OAUTH2_ERRORS = [
    ErrorRule(
        code=["invalid_grant"],
        outcome="reauth",
        meaning="the refresh token is invalid, expired, revoked or was already rotated; re-authorize and "
        "re-seed the connection's refresh_token",
    ),
    ErrorRule(
        code=["invalid_client", "unauthorized_client"],
        outcome="configuration",
        meaning="the vendor rejected the client id/secret; check the connection's login and password",
    ),
    ErrorRule(
        code=["unsupported_grant_type", "invalid_request", "invalid_scope"],
        outcome="configuration",
        meaning="the vendor rejected the request format; check the dialect and endpoint",
    ),
    ErrorRule(
        code=["server_error", "temporarily_unavailable"],
        outcome="transient",
        meaning="the vendor reported a temporary failure; a later attempt may succeed",
    ),
]

OAUTH2_BASIC = DialectSpec(
    name="oauth2_basic",
    title="OAuth2 refresh, client_secret_basic",
    document="oauth2-client-secret-basic.txt",
    # "POST https://{your_domain}/api/v1/oauth2/token"; "Authorization: Basic base64(client_id:client_secret)";
    # "Content-Type: application/x-www-form-urlencoded"; "grant_type=refresh_token&refresh_token=...".
    request=RequestSpec(
        path="/api/v1/oauth2/token",
        client_auth="basic",
        params_in="body",
        encoding="form",
        static_params={"grant_type": "refresh_token"},
    ),
    # "default validity period of an Access Token is 2 hours (7200 seconds)";
    # "The refresh token has a maximum validity of 30 days".
    response=ResponseSpec(default_expires_in=7200, refresh_token_lifetime=30 * DAY),
    errors=_OAUTH2_ERRORS,
)

OAUTH2_POST = DialectSpec(
    name="oauth2_post",
    title="OAuth2 refresh, client_secret_post",
    document="oauth2-client-secret-post.txt",
    # "POST /api/v1/oauth2/token Content-Type: application/x-www-form-urlencoded client_id=...&
    # client_secret=...&refresh_token=...&grant_type=refresh_token".
    request=RequestSpec(
        path="/api/v1/oauth2/token",
        client_auth="body",
        params_in="body",
        encoding="form",
        static_params={"grant_type": "refresh_token"},
    ),
    # "expires_in Long ... Unit: second"; the document gives no refresh-token lifetime.
    response=ResponseSpec(default_expires_in=7200),
    errors=_OAUTH2_ERRORS,
)

QUERY_BASIC = DialectSpec(
    name="query_basic",
    title="BabelBird refreshToken.do (query string, HTTP Basic)",
    document="babelbird-query-basic.txt",
    # "Interface path: /api/refreshToken.do  HTTP method: POST"; "Basic Auth ... Base64Encode(client_id +
    # ":" + client_secret)"; "URL parameters ... /api/refreshToken.do?grant_type=refresh_token&refresh_token=xxx".
    # Nothing goes in a body, so none is sent. The refresh token is in the URL: every URL is redacted.
    request=RequestSpec(
        path="/api/refreshToken.do",
        client_auth="basic",
        params_in="query",
        encoding="none",
        static_params={"grant_type": "refresh_token"},
    ),
    # "refresh_token ... valid for 30 days"; "The validity time of expires_in access_token is 3600, the unit is s".
    response=ResponseSpec(default_expires_in=3600, refresh_token_lifetime=30 * DAY),
    # The document lists no error answers; BabelBird speaks OAuth2 field names, so read OAuth2 errors.
    errors=_OAUTH2_ERRORS,
)

APPID_JSON = DialectSpec(
    name="appid_json",
    title="IoT platform refreshToken (appId/secret JSON)",
    document="iot-appid-secret-json.txt",
    # "https://server:port/iocm/app/sec/v1.1.0/refreshToken"; "Content-Type: application/json";
    # body {"appId", "secret", "refreshToken"}.
    request=RequestSpec(
        path="/iocm/app/sec/v1.1.0/refreshToken",
        client_auth="body",
        client_id_field="appId",
        client_secret_field="secret",
        refresh_token_field="refreshToken",
        params_in="body",
        encoding="json",
    ),
    # Answer {"accessToken","tokenType","expiresIn","refreshToken","scope"}; expiresIn "Integer" but quoted
    # in the example: numbers and numeric strings are both read. "A refreshToken is valid for one month."
    # The error table gives codes but not the body's field names; the platform answers
    # {"error_code": ..., "error_desc": ...}.
    response=ResponseSpec(
        access_token="accessToken",
        token_type="tokenType",
        refresh_token="refreshToken",
        expires_in="expiresIn",
        scope="scope",
        error_code="error_code",
        error_message="error_desc",
        default_expires_in=3600,
        refresh_token_lifetime=30 * DAY,
    ),
    errors=[
        ErrorRule(
            status=[401],
            code=["100208"],
            outcome="configuration",
            meaning="appId or secret is incorrect; check the connection's login (App ID) and password (secret), "
            "and the host",
        ),
        ErrorRule(
            code=["100449"],
            outcome="configuration",
            meaning="the application is frozen or lacks permission for this API; check it on the IoT platform",
        ),
        ErrorRule(
            code=["102202"],
            outcome="configuration",
            meaning="a mandatory parameter is null or empty; check login, password and refresh_token",
        ),
        ErrorRule(
            code=["50400"],
            outcome="reauth",
            # The document's "input invalid" also covers a malformed request, not only a dead token.
            ambiguous=True,
            meaning="the platform rejected an input parameter; with appId and secret accepted this is the refresh "
            "token (expired, revoked or rotated): re-authorize and re-seed the connection's refresh_token",
        ),
        ErrorRule(
            code=["50252"],
            outcome="transient",
            meaning="internal error on the IoT platform; a later attempt may succeed",
        ),
    ],
)

BEARER_JSON = DialectSpec(
    name="bearer_json",
    title="iSales refresh (Authentication: Bearer, result/resultData)",
    document="isales-bearer-json.txt",
    # "https://Domain name/rest/isales/v1/openapi/obs/auth/refresh"; header "Authentication: Bearer <token>"
    # (Authentication, not Authorization); body {"refreshToken": ...}.
    request=RequestSpec(
        path="/rest/isales/v1/openapi/obs/auth/refresh",
        client_auth="none",
        refresh_token_field="refreshToken",
        params_in="body",
        encoding="json",
        access_token_header="Authentication",
        access_token_prefix="Bearer ",
    ),
    # {"result": 0 | "0", "resultData": {"token", "tokenExpirationTime" (seconds), "refreshToken",
    # "refreshExpirationTime" (seconds)}}; "0: success, Other values: failure", even with HTTP 200.
    response=ResponseSpec(
        access_token="resultData.token",
        token_type=None,
        refresh_token="resultData.refreshToken",
        expires_in="resultData.tokenExpirationTime",
        refresh_expires_in="resultData.refreshExpirationTime",
        scope=None,
        success=SuccessSpec(path="result", equals=["0"]),
        error_code="result",
        error_message="resultDesc",
    ),
    errors=[
        ErrorRule(
            status=[403],
            outcome="reauth",
            meaning="Authentication failed: the vendor rejected the refresh token or the access token in the "
            "Authentication header (expired, revoked or rotated); re-authorize and re-seed the connection's "
            "refresh_token and access_token",
        ),
        ErrorRule(
            status=[401],
            outcome="configuration",
            meaning="unauthorized operation: check that the related services are purchased and the account is "
            "active",
        ),
        ErrorRule(
            status=[400], outcome="configuration", meaning="incorrect request: check the path and parameters"
        ),
        ErrorRule(
            status=[404], outcome="configuration", meaning="not found: check the host and the endpoint path"
        ),
        ErrorRule(
            status=[500],
            outcome="transient",
            meaning="business failure reported by the vendor; if it persists, check the refresh token",
        ),
    ],
)

PRESETS: dict[str, DialectSpec] = {
    d.name: d for d in (OAUTH2_BASIC, OAUTH2_POST, QUERY_BASIC, APPID_JSON, BEARER_JSON)
}
