"""Each emulator follows its vendor document: path, method, credentials, body, answer, errors."""

from __future__ import annotations

import base64
import json
import socket
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from airflow_provider_tokenrefresh.testing import (
    BabelBirdEmulator,
    IotAppIdEmulator,
    IsalesBearerEmulator,
    ManualClock,
    OAuth2BasicEmulator,
    OAuth2PostEmulator,
)

if TYPE_CHECKING:
    from tests.emulators.conftest import StartEmulator

FORM = "application/x-www-form-urlencoded"
BASIC = "Basic " + base64.b64encode(b"demo-client:demo-secret").decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ----------------------------------------------------------------------------------------- oauth2_basic


class TestOAuth2Basic:
    def test_paths_and_defaults(self) -> None:
        assert OAuth2BasicEmulator.name == "oauth2_basic"
        assert OAuth2BasicEmulator.token_path == "/api/v1/oauth2/token"
        emulator = OAuth2BasicEmulator()
        assert emulator.access_ttl == 7200 and emulator.refresh_ttl == 30 * 86400

    def test_happy_path_exact_wire(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_basic")
        seed = emu.issue_tokens()
        body = f"grant_type=refresh_token&refresh_token={seed.refresh_token}"
        r = client.post(
            emu.base_url + "/api/v1/oauth2/token",
            headers={"Authorization": BASIC, "Content-Type": FORM},
            content=body.encode(),
        )
        assert r.status_code == 200
        data = r.json()
        assert list(data) == ["access_token", "token_type", "refresh_token", "expires_in", "scope"]
        assert data["token_type"] == "Bearer"
        assert data["expires_in"] == 7199 and isinstance(data["expires_in"], int)
        assert data["scope"] == "get_user_info"
        assert data["refresh_token"] != seed.refresh_token
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["content-type"].startswith("application/json")
        [rec] = emu.requests
        assert rec.method == "POST" and rec.path == "/api/v1/oauth2/token" and rec.query == ""
        assert rec.header("Authorization") == BASIC
        assert rec.body == body.encode()
        assert rec.form() == {"grant_type": ["refresh_token"], "refresh_token": [seed.refresh_token]}

    def test_expires_in_is_lifetime_minus_one(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_basic", access_ttl=600)
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            data={"grant_type": "refresh_token", "refresh_token": seed.refresh_token},
        )
        assert r.json()["expires_in"] == 599

    def test_unsupported_grant_type(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_basic")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            data={"grant_type": "password", "refresh_token": seed.refresh_token},
        )
        assert r.status_code == 400
        assert r.json() == {"error": "unsupported_grant_type", "error_description": "Unsupported grant type"}
        assert emu.is_refresh_token_valid(seed.refresh_token)
        assert emu.counters["unsupported_grant_type"] == 1

    def test_invalid_refresh_token_is_echoed(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_basic")
        r = client.post(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            data={"grant_type": "refresh_token", "refresh_token": "wuGzSMMTjb4YhRUOjXHj-t-QD84"},
        )
        assert r.status_code == 400
        assert r.json() == {
            "error": "invalid_grant",
            "error_description": "Invalid refresh token: wuGzSMMTjb4YhRUOjXHj-t-QD84",
        }
        assert emu.counters["invalid_grant"] == 1 and emu.counters["invalid_grant:unknown"] == 1

    @pytest.mark.parametrize("auth", [None, ("demo-client", "wrong"), ("other", "demo-secret")])
    def test_bad_basic_credentials(
        self, start: StartEmulator, client: httpx.Client, auth: tuple[str, str] | None
    ) -> None:
        emu = start("oauth2_basic")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            auth=auth or httpx.USE_CLIENT_DEFAULT,
            data={"grant_type": "refresh_token", "refresh_token": seed.refresh_token},
        )
        assert r.status_code == 401
        assert r.json()["error"] == "invalid_client"
        assert r.headers["www-authenticate"].startswith("Basic")
        assert emu.is_refresh_token_valid(seed.refresh_token)
        assert emu.counters["bad_client"] == 1

    def test_garbled_basic_header(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_basic")
        r = client.post(
            emu.token_url,
            headers={"Authorization": "Basic %%%notbase64"},
            data={"grant_type": "refresh_token", "refresh_token": "x"},
        )
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"

    def test_client_secret_post_style_is_refused(self, start: StartEmulator, client: httpx.Client) -> None:
        """A preset that puts the credentials in the body (wrong for this vendor) is caught."""
        emu = start("oauth2_basic")
        seed = emu.issue_tokens()
        form = {
            "grant_type": "refresh_token",
            "refresh_token": seed.refresh_token,
            "client_id": "demo-client",
            "client_secret": "demo-secret",
        }
        r = client.post(emu.token_url, data=form)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        r = client.post(emu.token_url, auth=("demo-client", "demo-secret"), data=form)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        assert emu.is_refresh_token_valid(seed.refresh_token)

    def test_json_body_is_refused(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_basic")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            json={"grant_type": "refresh_token", "refresh_token": seed.refresh_token},
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        assert emu.counters["bad_request"] == 1

    def test_missing_refresh_token_and_grant_type(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_basic")
        r = client.post(
            emu.token_url, auth=("demo-client", "demo-secret"), data={"grant_type": "refresh_token"}
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        r = client.post(emu.token_url, auth=("demo-client", "demo-secret"), data={"refresh_token": "x"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"

    def test_refresh_token_in_query_is_refused(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_basic")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            params={"grant_type": "refresh_token", "refresh_token": seed.refresh_token},
            headers={"Content-Type": FORM},
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        assert emu.is_refresh_token_valid(seed.refresh_token)

    def test_repeated_parameter_is_refused(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_basic")
        seed = emu.issue_tokens()
        body = f"grant_type=refresh_token&refresh_token={seed.refresh_token}&refresh_token=x"
        r = client.post(
            emu.token_url, auth=("demo-client", "demo-secret"), content=body, headers={"Content-Type": FORM}
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"

    def test_omit_refresh_token(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_basic", rotation=False, omit_refresh_token=True)
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            data={"grant_type": "refresh_token", "refresh_token": seed.refresh_token},
        )
        assert r.status_code == 200 and "refresh_token" not in r.json()
        assert emu.is_refresh_token_valid(seed.refresh_token)
        with pytest.raises(ValueError, match="rotation=False"):
            OAuth2BasicEmulator(omit_refresh_token=True)

    def test_custom_credentials(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_basic", client_id="RqB2HJtkzlU", client_secret="s3cr:et")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            auth=("RqB2HJtkzlU", "s3cr:et"),
            data={"grant_type": "refresh_token", "refresh_token": seed.refresh_token},
        )
        assert r.status_code == 200


# ----------------------------------------------------------------------------------------- oauth2_post


class TestOAuth2Post:
    def test_happy_path_exact_wire(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_post")
        assert emu.token_url.endswith("/api/v1/oauth2/token")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            data={
                "client_id": "demo-client",
                "client_secret": "demo-secret",
                "refresh_token": seed.refresh_token,
                "grant_type": "refresh_token",
            },
        )
        assert r.status_code == 200
        data = r.json()
        assert list(data) == ["access_token", "token_type", "expires_in", "scope", "refresh_token"]
        assert (
            data["token_type"] == "Bearer" and data["expires_in"] == 7200 and data["scope"] == "get_user_info"
        )
        [rec] = emu.requests
        assert rec.header("authorization") is None
        assert rec.header("content-type") == FORM
        assert rec.form() == {
            "client_id": ["demo-client"],
            "client_secret": ["demo-secret"],
            "refresh_token": [seed.refresh_token],
            "grant_type": ["refresh_token"],
        }

    def test_invalid_refresh_token_not_echoed(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_post")
        r = client.post(
            emu.token_url,
            data={
                "client_id": "demo-client",
                "client_secret": "demo-secret",
                "refresh_token": "e8e-secret-7e3",
                "grant_type": "refresh_token",
            },
        )
        assert r.status_code == 400
        assert r.json() == {"error": "invalid_grant", "error_description": "Invalid refresh token"}
        assert "e8e-secret-7e3" not in r.text

    def test_basic_header_is_refused(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_post")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            data={"refresh_token": seed.refresh_token, "grant_type": "refresh_token"},
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_client"
        assert emu.is_refresh_token_valid(seed.refresh_token)

    @pytest.mark.parametrize(
        "creds", [{}, {"client_id": "demo-client"}, {"client_id": "demo-client", "client_secret": "nope"}]
    )
    def test_bad_body_credentials(
        self, start: StartEmulator, client: httpx.Client, creds: dict[str, str]
    ) -> None:
        emu = start("oauth2_post")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url, data={**creds, "refresh_token": seed.refresh_token, "grant_type": "refresh_token"}
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_client"
        assert emu.counters["bad_client"] == 1

    def test_grant_type_and_missing_token(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_post")
        creds = {"client_id": "demo-client", "client_secret": "demo-secret"}
        r = client.post(
            emu.token_url, data={**creds, "refresh_token": "x", "grant_type": "client_credentials"}
        )
        assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
        r = client.post(emu.token_url, data={**creds, "grant_type": "refresh_token"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"

    def test_json_body_is_refused(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_post")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            json={
                "client_id": "demo-client",
                "client_secret": "demo-secret",
                "refresh_token": seed.refresh_token,
                "grant_type": "refresh_token",
            },
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"

    def test_omit_refresh_token(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("oauth2_post", rotation=False, omit_refresh_token=True)
        seed = emu.issue_tokens()
        form = {
            "client_id": "demo-client",
            "client_secret": "demo-secret",
            "refresh_token": seed.refresh_token,
            "grant_type": "refresh_token",
        }
        first = client.post(emu.token_url, data=form)
        assert first.status_code == 200 and "refresh_token" not in first.json()
        second = client.post(emu.token_url, data=form)  # the same (unrotated) refresh token still works
        assert second.status_code == 200 and "refresh_token" not in second.json()
        assert second.json()["access_token"] != first.json()["access_token"]
        assert emu.is_refresh_token_valid(seed.refresh_token)
        # A rotating vendor must hand back the new refresh token: the combination is refused.
        with pytest.raises(ValueError, match="omit_refresh_token needs rotation=False"):
            OAuth2PostEmulator(omit_refresh_token=True)


# ----------------------------------------------------------------------------------------- query_basic


class TestBabelBird:
    def test_happy_path_exact_wire(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("query_basic")
        assert emu.token_path == "/api/refreshToken.do"
        seed = emu.issue_tokens()
        r = client.post(
            emu.base_url
            + f"/api/refreshToken.do?grant_type=refresh_token&refresh_token={seed.refresh_token}",
            headers={"Authorization": BASIC},
        )
        assert r.status_code == 200
        data = r.json()
        # exactly the document's "Return results": access_token, refresh_token, expires_in
        assert list(data) == ["access_token", "refresh_token", "expires_in"]
        assert data["expires_in"] == 3600 and isinstance(data["expires_in"], int)
        [rec] = emu.requests
        assert rec.method == "POST" and rec.path == "/api/refreshToken.do"
        assert rec.query_params() == {"grant_type": ["refresh_token"], "refresh_token": [seed.refresh_token]}
        assert rec.body == b""

    def test_refresh_token_in_body_is_refused(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("query_basic")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            data={"grant_type": "refresh_token", "refresh_token": seed.refresh_token},
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        r = client.post(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            params={"grant_type": "refresh_token"},
            data={"refresh_token": seed.refresh_token},
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        assert emu.is_refresh_token_valid(seed.refresh_token)

    def test_bad_basic(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("query_basic")
        seed = emu.issue_tokens()
        params = {"grant_type": "refresh_token", "refresh_token": seed.refresh_token}
        for auth in (None, ("demo-client", "bad")):
            r = client.post(emu.token_url, auth=auth or httpx.USE_CLIENT_DEFAULT, params=params)
            assert r.status_code == 401 and r.json()["error"] == "invalid_client"
            assert r.headers["www-authenticate"].startswith("Basic")
        assert emu.counters["bad_client"] == 2

    def test_bad_token_and_grant(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("query_basic")
        auth = ("demo-client", "demo-secret")
        r = client.post(
            emu.token_url, auth=auth, params={"grant_type": "refresh_token", "refresh_token": "nope"}
        )
        assert r.status_code == 400
        assert r.json() == {"error": "invalid_grant", "error_description": "Invalid refresh token"}
        r = client.post(emu.token_url, auth=auth, params={"grant_type": "password", "refresh_token": "nope"})
        assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"

    def test_get_is_refused(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("query_basic")
        seed = emu.issue_tokens()
        r = client.get(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            params={"grant_type": "refresh_token", "refresh_token": seed.refresh_token},
        )
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        assert emu.is_refresh_token_valid(seed.refresh_token)

    def test_base64_tokens_need_percent_encoding(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("query_basic", token_charset="base64")
        seed = emu.issue_tokens()
        assert {"+", "/", "="} <= set(seed.refresh_token)
        raw = client.post(
            emu.base_url
            + f"/api/refreshToken.do?grant_type=refresh_token&refresh_token={seed.refresh_token}",
            auth=("demo-client", "demo-secret"),
        )
        assert raw.status_code == 400  # '+' decodes to a space: the unencoded token is wrong
        encoded = client.post(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            params={"grant_type": "refresh_token", "refresh_token": seed.refresh_token},
        )
        assert encoded.status_code == 200

    def test_refresh_token_lives_thirty_days(
        self, start: StartEmulator, client: httpx.Client, clock: ManualClock
    ) -> None:
        emu = start("query_basic", clock=clock)
        seed = emu.issue_tokens()
        clock.advance(30 * 86400 - 1)
        assert emu.is_refresh_token_valid(seed.refresh_token)
        clock.advance(2)
        r = client.post(
            emu.token_url,
            auth=("demo-client", "demo-secret"),
            params={"grant_type": "refresh_token", "refresh_token": seed.refresh_token},
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        assert emu.counters["invalid_grant:expired"] == 1
        assert "ok" not in emu.counters and emu.families_revoked == 0  # expired, not revoked
        # "refresh_token is used to refresh access_token, valid for 30 days"; expires_in "is 3600"
        defaults = BabelBirdEmulator()
        assert (defaults.refresh_ttl, defaults.access_ttl) == (30 * 86400, 3600)


# ----------------------------------------------------------------------------------------- appid_json


class TestIotAppId:
    def _body(self, refresh_token: str, **overrides: object) -> dict[str, object]:
        return {"appId": "demo-client", "secret": "demo-secret", "refreshToken": refresh_token, **overrides}

    def test_happy_path_exact_wire(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("appid_json")
        seed = emu.issue_tokens()
        r = client.post(
            emu.base_url + "/iocm/app/sec/v1.1.0/refreshToken", json=self._body(seed.refresh_token)
        )
        assert r.status_code == 200
        data = r.json()
        assert list(data) == ["accessToken", "tokenType", "expiresIn", "refreshToken", "scope"]
        assert data["tokenType"] == "Bearer" and data["scope"] == "default"
        assert data["expiresIn"] == "3600"
        [rec] = emu.requests
        assert rec.header("content-type") == "application/json"
        assert rec.json() == self._body(seed.refresh_token)

    def test_expires_in_as_int(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("appid_json", expires_as_string=False, access_ttl=1800)
        seed = emu.issue_tokens()
        assert client.post(emu.token_url, json=self._body(seed.refresh_token)).json()["expiresIn"] == 1800

    @pytest.mark.parametrize(
        "body",
        [
            {"appId": "demo-client", "secret": "demo-secret"},
            {"appId": "demo-client", "secret": "", "refreshToken": "x"},
            {"appId": None, "secret": "demo-secret", "refreshToken": "x"},
            {"app_id": "demo-client", "secret": "demo-secret", "refresh_token": "x"},
        ],
    )
    def test_required_parameter(
        self, start: StartEmulator, client: httpx.Client, body: dict[str, object]
    ) -> None:
        emu = start("appid_json")
        r = client.post(emu.token_url, json=body)
        assert r.status_code == 400
        assert r.json() == {"error_code": "102202", "error_desc": "Required Parameter is null or empty."}

    def test_wrong_app_secret(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("appid_json")
        seed = emu.issue_tokens()
        r = client.post(emu.token_url, json=self._body(seed.refresh_token, secret="wrong"))
        assert r.status_code == 401
        assert r.json() == {"error_code": "100208", "error_desc": "AppId or secret is not right."}
        assert emu.is_refresh_token_valid(seed.refresh_token)

    def test_frozen(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("appid_json")
        assert isinstance(emu, IotAppIdEmulator)
        seed = emu.issue_tokens()
        emu.frozen = True
        r = client.post(emu.token_url, json=self._body(seed.refresh_token))
        assert r.status_code == 400
        assert r.json() == {"error_code": "100449", "error_desc": "The device is freezed cant operate."}
        assert emu.is_refresh_token_valid(seed.refresh_token)
        emu.frozen = False
        assert client.post(emu.token_url, json=self._body(seed.refresh_token)).status_code == 200
        assert emu.counters["frozen"] == 1

    def test_invalid_refresh_token(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("appid_json")
        r = client.post(emu.token_url, json=self._body("not-a-token"))
        assert r.status_code == 400
        assert r.json() == {"error_code": "50400", "error_desc": "The input is invalid."}

    def test_form_body_and_bad_json_are_invalid_input(
        self, start: StartEmulator, client: httpx.Client
    ) -> None:
        emu = start("appid_json")
        seed = emu.issue_tokens()
        r = client.post(emu.token_url, data=self._body(seed.refresh_token))
        assert r.status_code == 400 and r.json()["error_code"] == "50400"
        r = client.post(emu.token_url, content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error_code"] == "50400"
        r = client.post(emu.token_url, json=self._body(seed.refresh_token, appId=7))
        assert r.status_code == 400 and r.json()["error_code"] == "50400"
        assert emu.is_refresh_token_valid(seed.refresh_token)

    def test_charset_parameter_accepted(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("appid_json")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            content=json.dumps(self._body(seed.refresh_token)).encode(),
            headers={"Content-Type": "application/json;charset=UTF-8"},
        )
        assert r.status_code == 200

    def test_custom_port(self, start: StartEmulator, client: httpx.Client) -> None:
        port = _free_port()
        emu = start("appid_json", port=port)
        assert emu.port == port and emu.base_url == f"http://127.0.0.1:{port}"
        seed = emu.issue_tokens()
        assert client.post(emu.token_url, json=self._body(seed.refresh_token)).status_code == 200

    def test_sample_app_key(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("appid_json")
        assert emu.sample_path == "/iocm/app/sample"
        seed = emu.issue_tokens()
        auth = {"Authorization": f"Bearer {seed.access_token}"}
        assert client.get(emu.sample_url, headers=auth).status_code == 200
        assert client.get(emu.sample_url, headers={**auth, "app_key": "demo-client"}).json() == {
            "ok": True,
            "vendor": "appid_json",
        }
        assert client.get(emu.sample_url, headers={**auth, "app_key": "someone-else"}).status_code == 401


# ----------------------------------------------------------------------------------------- bearer_json


class TestIsalesBearer:
    def _refresh(self, client: httpx.Client, url: str, access: str, refresh: str) -> httpx.Response:
        return client.post(
            url, headers={"Authentication": f"Bearer {access}"}, json={"refreshToken": refresh}
        )

    def test_happy_path_exact_wire(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("bearer_json")
        seed = emu.issue_tokens()
        r = self._refresh(
            client,
            emu.base_url + "/rest/isales/v1/openapi/obs/auth/refresh",
            seed.access_token,
            seed.refresh_token,
        )
        assert r.status_code == 200
        data = r.json()
        assert data["result"] == "0"
        assert list(data["resultData"]) == [
            "token",
            "tokenExpirationTime",
            "refreshToken",
            "refreshExpirationTime",
        ]
        assert data["resultData"]["tokenExpirationTime"] == 300
        assert data["resultData"]["refreshExpirationTime"] == 3600
        [rec] = emu.requests
        assert rec.header("Authentication") == f"Bearer {seed.access_token}"
        assert rec.header("Authorization") is None
        assert rec.json() == {"refreshToken": seed.refresh_token}

    def test_result_as_int_and_numbers_as_strings(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("bearer_json", result_as_int=True, numbers_as_strings=True)
        seed = emu.issue_tokens()
        data = self._refresh(client, emu.token_url, seed.access_token, seed.refresh_token).json()
        assert data["result"] == 0
        assert data["resultData"]["tokenExpirationTime"] == "300"
        assert data["resultData"]["refreshExpirationTime"] == "3600"
        r = self._refresh(client, emu.token_url, seed.access_token, "bogus")
        assert r.json()["result"] == 403

    def test_authorization_header_is_not_authentication(
        self, start: StartEmulator, client: httpx.Client
    ) -> None:
        emu = start("bearer_json")
        seed = emu.issue_tokens()
        r = client.post(
            emu.token_url,
            headers={"Authorization": f"Bearer {seed.access_token}"},
            json={"refreshToken": seed.refresh_token},
        )
        assert r.status_code == 403
        assert r.json() == {"result": "403"}
        assert emu.is_refresh_token_valid(seed.refresh_token)
        r = client.post(
            emu.token_url,
            headers={"Authentication": seed.access_token},
            json={"refreshToken": seed.refresh_token},
        )
        assert r.status_code == 403  # no "Bearer " prefix
        assert emu.counters["bad_auth_header"] == 2

    def test_expired_access_token_refused_by_default(
        self, start: StartEmulator, client: httpx.Client, clock: ManualClock
    ) -> None:
        emu = start("bearer_json", clock=clock)
        seed = emu.issue_tokens()
        clock.advance(299)
        assert emu.is_access_token_valid(seed.access_token)
        clock.advance(1)
        assert not emu.is_access_token_valid(seed.access_token)
        r = self._refresh(client, emu.token_url, seed.access_token, seed.refresh_token)
        assert r.status_code == 403 and r.json() == {"result": "403"}
        assert emu.counters["bad_auth_header:expired"] == 1 and "ok" not in emu.counters
        assert emu.is_refresh_token_valid(seed.refresh_token)  # nothing consumed

    def test_expired_access_token_accepted_when_lenient(
        self, start: StartEmulator, client: httpx.Client, clock: ManualClock
    ) -> None:
        emu = start("bearer_json", clock=clock, accept_expired_access_token=True)
        seed = emu.issue_tokens()
        clock.advance(301)
        assert not emu.is_access_token_valid(seed.access_token)
        r = self._refresh(client, emu.token_url, seed.access_token, seed.refresh_token)
        assert r.status_code == 200 and r.json()["result"] == "0"
        assert not emu.is_refresh_token_valid(seed.refresh_token)  # rotated
        assert "bad_auth_header" not in emu.counters

    def test_error_descriptions_option(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("bearer_json", error_descriptions=True)
        seed = emu.issue_tokens()
        r = self._refresh(client, emu.token_url, seed.access_token, "bogus")
        assert r.status_code == 403
        assert r.json() == {"result": "403", "resultDesc": "Authentication failed."}

    def test_older_access_token_is_refused(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("bearer_json")
        seed = emu.issue_tokens()
        data = self._refresh(client, emu.token_url, seed.access_token, seed.refresh_token).json()[
            "resultData"
        ]
        r = self._refresh(client, emu.token_url, seed.access_token, data["refreshToken"])
        assert r.status_code == 403
        assert emu.is_refresh_token_valid(data["refreshToken"])  # nothing consumed
        other = emu.issue_tokens()
        r = self._refresh(client, emu.token_url, other.access_token, data["refreshToken"])
        assert r.status_code == 403  # another family's access token
        assert self._refresh(client, emu.token_url, data["token"], data["refreshToken"]).status_code == 200

    def test_bad_body(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("bearer_json")
        seed = emu.issue_tokens()
        auth = {"Authentication": f"Bearer {seed.access_token}"}
        cases: list[dict[str, Any]] = [
            {"json": {}},
            {"json": {"refresh_token": seed.refresh_token}},
            {"json": {"refreshToken": ""}},
            {"content": b"{oops", "headers": {**auth, "Content-Type": "application/json"}},
            {"data": {"refreshToken": seed.refresh_token}},
        ]
        for kwargs in cases:
            kwargs.setdefault("headers", auth)
            r = client.post(emu.token_url, **kwargs)
            assert r.status_code == 400, kwargs
            assert r.json()["result"] == "400"
        assert emu.is_refresh_token_valid(seed.refresh_token)

    def test_account_suspended(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("bearer_json")
        assert isinstance(emu, IsalesBearerEmulator)
        seed = emu.issue_tokens()
        emu.account_suspended = True
        r = self._refresh(client, emu.token_url, seed.access_token, seed.refresh_token)
        assert r.status_code == 401 and r.json()["result"] == "401"
        assert emu.counters["account_suspended"] == 1
        assert emu.is_refresh_token_valid(seed.refresh_token)

    def test_other_path_is_404(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("bearer_json")
        seed = emu.issue_tokens()
        r = self._refresh(
            client,
            emu.base_url + "/rest/isales/v1/openapi/obs/auth/refreshToken",
            seed.access_token,
            seed.refresh_token,
        )
        assert r.status_code == 404 and r.json()["result"] == "404"
        assert emu.refresh_requests == 0

    def test_refresh_token_lives_one_hour(
        self, start: StartEmulator, client: httpx.Client, clock: ManualClock
    ) -> None:
        emu = start("bearer_json", clock=clock)
        seed = emu.issue_tokens()
        clock.advance(3601)
        r = self._refresh(client, emu.token_url, seed.access_token, seed.refresh_token)
        assert r.status_code == 403

    def test_rotation_off_reports_remaining_lifetime(
        self, start: StartEmulator, client: httpx.Client, clock: ManualClock
    ) -> None:
        emu = start("bearer_json", clock=clock, rotation=False)
        seed = emu.issue_tokens()
        clock.advance(200)  # the access token (300 s) is still valid
        data = self._refresh(client, emu.token_url, seed.access_token, seed.refresh_token).json()[
            "resultData"
        ]
        assert data["refreshToken"] == seed.refresh_token
        assert data["refreshExpirationTime"] == 3400

    def test_sample_accepts_either_header(self, start: StartEmulator, client: httpx.Client) -> None:
        emu = start("bearer_json")
        seed = emu.issue_tokens()
        assert (
            client.get(emu.sample_url, headers={"Authorization": f"Bearer {seed.access_token}"}).status_code
            == 200
        )
        assert (
            client.get(emu.sample_url, headers={"Authentication": f"Bearer {seed.access_token}"}).status_code
            == 200
        )
