"""Every form a vendor document shows, served by its emulator and read by a real RefreshClient.

Where a document shows two forms of one value (iSales ``result`` as ``0`` in its example and
``String`` in its table; IoT ``expiresIn`` as ``Integer`` in its table and quoted in its example),
the emulator serves both (a constructor option) and each one goes end to end here: a real
:class:`RefreshClient` with the dialect preset, over HTTP, against the emulator. The emulator's
record of what it answered (``emulator.answers``) proves which form was on the wire.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_tokenrefresh.client import ClientSettings, RefreshClient
from airflow_provider_tokenrefresh.dialects import PRESETS
from airflow_provider_tokenrefresh.dialects.wire import ClientCredentials
from airflow_provider_tokenrefresh.errors import (
    AmbiguousRejection,
    ConfigurationError,
    RefreshTokenRejected,
    TransientRefreshError,
)
from airflow_provider_tokenrefresh.testing import ManualClock

from .conftest import DIALECTS, EmulatorFactory, closed_after_test

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.dialects.spec import DialectSpec
    from airflow_provider_tokenrefresh.testing import VendorEmulator
    from airflow_provider_tokenrefresh.tokens import TokenSet


def _client(
    emu: VendorEmulator, clock: ManualClock, spec: DialectSpec | None = None, **settings: Any
) -> RefreshClient:
    """A RefreshClient of the emulator's dialect, on the emulator's clock (expiries are exact)."""
    settings.setdefault("credentials", ClientCredentials(emu.client_id, emu.client_secret))
    return closed_after_test(
        RefreshClient(
            spec or PRESETS[emu.name],
            ClientSettings(base_url=emu.base_url, allow_insecure_http=True, backoff_base=0.01, **settings),
            clock=lambda: datetime.fromtimestamp(clock(), UTC),
        )
    )


def _at(clock: ManualClock, seconds: float) -> datetime:
    return datetime.fromtimestamp(clock(), UTC) + timedelta(seconds=seconds)


def _assert_live(emu: VendorEmulator, tokens: TokenSet, old_refresh: str) -> str:
    """The client's new tokens are the emulator's current ones; the old refresh token is dead."""
    assert tokens.refresh_token is not None
    new_refresh = tokens.refresh_token.get_secret_value()
    assert emu.is_access_token_valid(tokens.access_token.get_secret_value())
    assert emu.is_refresh_token_valid(new_refresh)
    assert not emu.is_refresh_token_valid(old_refresh)
    return new_refresh


# ------------------------------------------------------------------------------ iSales result / times


@pytest.mark.parametrize(
    ("result_as_int", "wire_result"),
    [(True, 0), (False, "0")],
    ids=["result-number-0-example", "result-string-0-table"],
)
@pytest.mark.parametrize(
    ("numbers_as_strings", "wire_ttl"),
    [(False, 300), (True, "300")],
    ids=["times-number-example", "times-string-table"],
)
def test_isales_result_and_expiration_forms(
    emulator_factory: EmulatorFactory,
    result_as_int: bool,
    wire_result: object,
    numbers_as_strings: bool,
    wire_ttl: object,
) -> None:
    clock = ManualClock()
    emu = emulator_factory(
        "bearer_json", clock=clock, result_as_int=result_as_int, numbers_as_strings=numbers_as_strings
    )
    seed = emu.issue_tokens()
    client = _client(emu, clock)
    tokens = client.refresh(seed.refresh_token, seed.access_token)
    [answer] = emu.answers
    body = answer.json()
    assert body["result"] == wire_result and type(body["result"]) is type(wire_result)
    assert body["resultData"]["tokenExpirationTime"] == wire_ttl
    assert type(body["resultData"]["refreshExpirationTime"]) is type(wire_ttl)
    assert tokens.expires_at == _at(clock, 300)
    assert tokens.refresh_expires_at == _at(clock, 3600)
    new_refresh = _assert_live(emu, tokens, seed.refresh_token)
    # A second success in the same form, with the rotated pair.
    again = client.refresh(new_refresh, tokens.access_token.get_secret_value())
    assert emu.answers[-1].json()["result"] == wire_result
    _assert_live(emu, again, new_refresh)

    # A failure in the same form is a failure: result 403 (number or string) is not success.
    with pytest.raises(RefreshTokenRejected) as info:
        client.refresh(seed.refresh_token, again.access_token.get_secret_value())
    assert emu.answers[-1].json() == {"result": 403 if result_as_int else "403"}
    assert "HTTP 403 code=403" in str(info.value)
    assert emu.families_revoked == 1  # the retired token was reused: reuse detection


@pytest.mark.parametrize("result_as_int", [True, False], ids=["number", "string"])
def test_isales_http_200_with_a_failure_result_is_not_success(
    emulator_factory: EmulatorFactory, result_as_int: bool
) -> None:
    clock = ManualClock()
    emu = emulator_factory("bearer_json", clock=clock, result_as_int=result_as_int)
    seed = emu.issue_tokens()
    emu.inject("ok_with_error_body")
    with pytest.raises(TransientRefreshError) as info:
        _client(emu, clock, max_attempts=1).refresh(seed.refresh_token, seed.access_token)
    assert emu.answers[-1].status == 200
    assert emu.answers[-1].json() == {"result": 1 if result_as_int else "1"}
    assert "result=1" in str(info.value)
    assert emu.is_refresh_token_valid(seed.refresh_token)


# ------------------------------------------------------------------------------ iSales Authentication


def test_isales_expired_access_token_is_refused_by_default(emulator_factory: EmulatorFactory) -> None:
    clock = ManualClock()
    emu = emulator_factory("bearer_json", clock=clock)
    seed = emu.issue_tokens()
    client = _client(emu, clock)
    clock.advance(300)  # the access token (300 s) has just expired; the refresh token (3600 s) has not
    assert not emu.is_access_token_valid(seed.access_token)
    assert emu.is_refresh_token_valid(seed.refresh_token)
    with pytest.raises(RefreshTokenRejected) as info:
        client.refresh(seed.refresh_token, seed.access_token)
    # 403 is the document's "Authentication failed": a JSON answer from the vendor, believed as is.
    assert not isinstance(info.value, AmbiguousRejection)
    assert info.value.status_code == 403
    assert "Authentication header" in str(info.value)
    assert seed.access_token not in str(info.value) and seed.refresh_token not in str(info.value)
    assert emu.answers[-1].status == 403 and emu.answers[-1].json() == {"result": "403"}
    assert emu.counters["bad_auth_header:expired"] == 1 and "ok" not in emu.counters
    assert emu.is_refresh_token_valid(seed.refresh_token)  # nothing consumed at the vendor


def test_isales_expired_access_token_accepted_when_lenient(emulator_factory: EmulatorFactory) -> None:
    clock = ManualClock()
    emu = emulator_factory("bearer_json", clock=clock, accept_expired_access_token=True)
    seed = emu.issue_tokens()
    clock.advance(3000)
    assert not emu.is_access_token_valid(seed.access_token)
    tokens = _client(emu, clock).refresh(seed.refresh_token, seed.access_token)
    _assert_live(emu, tokens, seed.refresh_token)
    assert tokens.expires_at == _at(clock, 300)
    assert tokens.refresh_expires_at == _at(clock, 3600)  # rotated: a fresh hour


def test_isales_refresh_just_before_access_expiry_works_by_default(emulator_factory: EmulatorFactory) -> None:
    clock = ManualClock()
    emu = emulator_factory("bearer_json", clock=clock)
    seed = emu.issue_tokens()
    clock.advance(299)
    tokens = _client(emu, clock).refresh(seed.refresh_token, seed.access_token)
    _assert_live(emu, tokens, seed.refresh_token)
    assert "bad_auth_header" not in emu.counters


# ------------------------------------------------------------------------------ expiry: number/string


@pytest.mark.parametrize(
    ("name", "option", "as_string", "lifetime"),
    [
        ("appid_json", "expires_as_string", False, 3600),  # the table: expiresIn Integer
        ("appid_json", "expires_as_string", True, 3600),  # the example: "expiresIn": "*******"
        ("query_basic", "expires_as_string", False, 3600),  # the document gives no type
        ("query_basic", "expires_as_string", True, 3600),
    ],
    ids=["iot-integer", "iot-string", "babelbird-number", "babelbird-string"],
)
def test_expiry_seconds_as_number_and_as_string(
    emulator_factory: EmulatorFactory, name: str, option: str, as_string: bool, lifetime: int
) -> None:
    clock = ManualClock()
    emu = emulator_factory(name, clock=clock, **{option: as_string})
    seed = emu.issue_tokens()
    tokens = _client(emu, clock).refresh(seed.refresh_token, seed.access_token)
    field = "expiresIn" if name == "appid_json" else "expires_in"
    wire = emu.answers[-1].json()[field]
    assert wire == (str(lifetime) if as_string else lifetime)
    assert isinstance(wire, str) is as_string
    assert tokens.expires_at == _at(clock, lifetime)
    assert tokens.refresh_expires_at == _at(clock, 30 * 86400)  # "valid for one month" / "30 days"
    _assert_live(emu, tokens, seed.refresh_token)


@pytest.mark.parametrize(("name", "expires_in"), [("oauth2_basic", 7199), ("oauth2_post", 7200)])
def test_oauth2_expires_in_is_the_documented_number(
    emulator_factory: EmulatorFactory, name: str, expires_in: int
) -> None:
    clock = ManualClock()
    emu = emulator_factory(name, clock=clock)
    seed = emu.issue_tokens()
    tokens = _client(emu, clock).refresh(seed.refresh_token)
    wire = emu.answers[-1].json()["expires_in"]
    assert wire == expires_in and type(wire) is int  # basic: the example's 7199; post: "Long"
    assert tokens.expires_at == _at(clock, expires_in)
    _assert_live(emu, tokens, seed.refresh_token)


# ------------------------------------------------------------------------------ + / = in tokens


@pytest.mark.parametrize("name", DIALECTS)
def test_tokens_with_plus_slash_equals_go_end_to_end(emulator_factory: EmulatorFactory, name: str) -> None:
    clock = ManualClock()
    emu = emulator_factory(name, clock=clock, token_charset="base64")
    seed = emu.issue_tokens()
    assert {"+", "/", "="} <= set(seed.refresh_token)
    client = _client(emu, clock)
    refresh, access = seed.refresh_token, seed.access_token
    for _ in range(2):  # the second refresh presents a rotated token, also full of + / =
        tokens = client.refresh(refresh, access)
        sent = emu.requests[-1]
        if name == "query_basic":
            # In the URL: percent-encoded on the wire, exactly the token once decoded.
            assert "%2B" in sent.query and "%2F" in sent.query and "%3D" in sent.query
            assert "+" not in sent.query and "/" not in sent.query
            assert sent.query_params()["refresh_token"] == [refresh]
            assert sent.body == b""
        elif name in ("oauth2_basic", "oauth2_post"):
            raw = sent.body.decode("ascii")
            assert "%2B" in raw and "%2F" in raw and "%3D" in raw and "+" not in raw
            assert sent.form()["refresh_token"] == [refresh]
            assert sent.query == ""
        else:
            json_field = "refreshToken"
            assert sent.json()[json_field] == refresh
        if name == "bearer_json":
            assert sent.header("Authentication") == f"Bearer {access}"
        new_refresh = _assert_live(emu, tokens, refresh)
        assert {"+", "/", "="} <= set(new_refresh)
        refresh, access = new_refresh, tokens.access_token.get_secret_value()
    assert emu.counters["ok"] == 2 and "invalid_grant" not in emu.counters


# ------------------------------------------------------------------------------ IoT 50400


def test_iot_50400_for_a_dead_refresh_token_is_ambiguous(emulator_factory: EmulatorFactory) -> None:
    clock = ManualClock()
    emu = emulator_factory("appid_json", clock=clock)
    seed = emu.issue_tokens()
    clock.advance(30 * 86400)
    with pytest.raises(AmbiguousRejection) as info:
        _client(emu, clock).refresh(seed.refresh_token)
    assert emu.answers[-1].json() == {"error_code": "50400", "error_desc": "The input is invalid."}
    assert emu.counters["invalid_grant:expired"] == 1
    assert "malformed" in str(info.value) and "refresh token" in str(info.value)


def test_iot_50400_for_a_malformed_request_is_ambiguous_and_consumes_nothing(
    emulator_factory: EmulatorFactory,
) -> None:
    """The document's 50400 "An input parameter is invalid": here a field over String(256)."""
    clock = ManualClock()
    emu = emulator_factory("appid_json", clock=clock)
    seed = emu.issue_tokens()
    too_long = ClientCredentials(emu.client_id, "s" * 257)
    with pytest.raises(AmbiguousRejection):
        _client(emu, clock, credentials=too_long).refresh(seed.refresh_token)
    assert emu.answers[-1].status == 400 and emu.answers[-1].json()["error_code"] == "50400"
    assert emu.counters["bad_request"] == 1 and "invalid_grant" not in emu.counters
    # Asked again correctly, the same refresh token works: 50400 did not mean a dead token here.
    tokens = _client(emu, clock).refresh(seed.refresh_token)
    _assert_live(emu, tokens, seed.refresh_token)


def _misspelled_refresh_field() -> DialectSpec:
    spec = PRESETS["appid_json"]
    return spec.model_copy(
        update={"request": spec.request.model_copy(update={"refresh_token_field": "refresh_token"})}
    )


@pytest.mark.parametrize(
    ("missing_field_code", "error"),
    [("102202", ConfigurationError), ("50400", AmbiguousRejection)],
    ids=["102202-null-or-empty", "50400-input-invalid"],
)
def test_iot_missing_field_answered_either_way_the_document_allows(
    emulator_factory: EmulatorFactory, missing_field_code: str, error: type[Exception]
) -> None:
    clock = ManualClock()
    emu = emulator_factory("appid_json", clock=clock, missing_field_code=missing_field_code)
    seed = emu.issue_tokens()
    with pytest.raises(error) as info:
        _client(emu, clock, spec=_misspelled_refresh_field()).refresh(seed.refresh_token)
    assert type(info.value) is error
    sent = emu.requests[-1].json()
    assert "refreshToken" not in sent and sent["refresh_token"] == seed.refresh_token
    assert emu.answers[-1].status == 400 and emu.answers[-1].json()["error_code"] == missing_field_code
    assert seed.refresh_token not in str(info.value)
    assert emu.is_refresh_token_valid(seed.refresh_token)
    tokens = _client(emu, clock).refresh(seed.refresh_token)  # the well-formed request then succeeds
    _assert_live(emu, tokens, seed.refresh_token)


def test_iot_error_field_names_are_a_guess_and_another_spelling_fails_closed(
    emulator_factory: EmulatorFactory,
) -> None:
    """The document gives codes, not field names: with other names the code is unreadable, and the
    client reports a configuration problem rather than a success or a silent retry."""
    clock = ManualClock()
    emu = emulator_factory("appid_json", clock=clock, error_fields=("resultcode", "resultmsg"))
    seed = emu.issue_tokens()
    clock.advance(30 * 86400)
    with pytest.raises(ConfigurationError):
        _client(emu, clock).refresh(seed.refresh_token)
    assert emu.answers[-1].json() == {"resultcode": "50400", "resultmsg": "The input is invalid."}
    assert emu.refresh_requests == 1


# ------------------------------------------------------------------------------ documented fields only

SUCCESS_FIELDS: dict[str, list[str]] = {
    # each list is the document's answer, in its order
    "oauth2_basic": ["access_token", "token_type", "refresh_token", "expires_in", "scope"],
    "oauth2_post": ["access_token", "token_type", "expires_in", "scope", "refresh_token"],
    "query_basic": ["access_token", "refresh_token", "expires_in"],
    "appid_json": ["accessToken", "tokenType", "expiresIn", "refreshToken", "scope"],
    "bearer_json": ["result", "resultData"],
}
ERROR_FIELDS: dict[str, list[str]] = {
    "oauth2_basic": ["error", "error_description"],
    "oauth2_post": ["error", "error_description"],
    "query_basic": ["error", "error_description"],  # undocumented: the OAuth2 guess
    "appid_json": ["error_code", "error_desc"],  # undocumented names for the documented codes
    "bearer_json": ["result"],
}


@pytest.mark.parametrize("name", DIALECTS)
def test_answers_hold_only_documented_fields(emulator_factory: EmulatorFactory, name: str) -> None:
    clock = ManualClock()
    emu = emulator_factory(name, clock=clock)
    seed = emu.issue_tokens()
    client = _client(emu, clock)
    tokens = client.refresh(seed.refresh_token, seed.access_token)
    body = emu.answers[-1].json()
    assert list(body) == SUCCESS_FIELDS[name]
    if name == "bearer_json":
        assert list(body["resultData"]) == [
            "token",
            "tokenExpirationTime",
            "refreshToken",
            "refreshExpirationTime",
        ]
    with pytest.raises((RefreshTokenRejected, AmbiguousRejection)):
        client.refresh(seed.refresh_token, tokens.access_token.get_secret_value())  # retired: rejected
    assert list(emu.answers[-1].json()) == ERROR_FIELDS[name]


@pytest.mark.parametrize("name", DIALECTS)
def test_extra_fields_option_adds_undocumented_fields_the_client_ignores(
    emulator_factory: EmulatorFactory, name: str
) -> None:
    clock = ManualClock()
    extras = (
        {"x_trace_id": "abc123", "token_type": "bearer"}
        if name == "query_basic"
        else {"x_trace_id": "abc123"}
    )
    emu = emulator_factory(name, clock=clock, extra_fields=extras)
    seed = emu.issue_tokens()
    tokens = _client(emu, clock).refresh(seed.refresh_token, seed.access_token)
    body = emu.answers[-1].json()
    assert list(body) == SUCCESS_FIELDS[name] + [k for k in extras if k not in SUCCESS_FIELDS[name]]
    assert body["x_trace_id"] == "abc123"
    _assert_live(emu, tokens, seed.refresh_token)
