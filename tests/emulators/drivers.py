"""A minimal, independent client per vendor document, for testing the emulators themselves.

Written from the vendor documents (not from the package's dialect presets): each driver sends
exactly what its document says and reads the tokens back out of the documented answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from airflow_provider_tokenrefresh.testing import VendorEmulator

DIALECTS = ["oauth2_basic", "oauth2_post", "query_basic", "appid_json", "bearer_json"]


@dataclass
class Session:
    """The tokens a client currently holds for one emulator."""

    emulator: VendorEmulator
    access_token: str
    refresh_token: str

    @classmethod
    def seeded(cls, emulator: VendorEmulator) -> Session:
        issued = emulator.issue_tokens()
        return cls(emulator, issued.access_token, issued.refresh_token)

    def send(
        self, client: httpx.Client, refresh_token: str | None = None, access_token: str | None = None
    ) -> httpx.Response:
        """Send one refresh exactly as the vendor document describes."""
        return send_refresh(
            client,
            self.emulator,
            refresh_token or self.refresh_token,
            access_token or self.access_token,
        )

    def refresh(self, client: httpx.Client) -> httpx.Response:
        """Refresh and, on success, keep the new tokens."""
        response = self.send(client)
        if response.status_code == 200:
            access, refresh = read_tokens(self.emulator.name, response.json())
            self.access_token = access
            if refresh is not None:
                self.refresh_token = refresh
        return response


def send_refresh(
    client: httpx.Client, emulator: VendorEmulator, refresh_token: str, access_token: str
) -> httpx.Response:
    name = emulator.name
    url = emulator.token_url
    basic = (emulator.client_id, emulator.client_secret)
    if name == "oauth2_basic":
        return client.post(
            url, auth=basic, data={"grant_type": "refresh_token", "refresh_token": refresh_token}
        )
    if name == "oauth2_post":
        return client.post(
            url,
            data={
                "client_id": emulator.client_id,
                "client_secret": emulator.client_secret,
                "refresh_token": refresh_token,
                "grant_type": "refresh_token",
            },
        )
    if name == "query_basic":
        return client.post(
            url, auth=basic, params={"grant_type": "refresh_token", "refresh_token": refresh_token}
        )
    if name == "appid_json":
        return client.post(
            url,
            json={
                "appId": emulator.client_id,
                "secret": emulator.client_secret,
                "refreshToken": refresh_token,
            },
        )
    if name == "bearer_json":
        return client.post(
            url,
            headers={"Authentication": f"Bearer {access_token}"},
            json={"refreshToken": refresh_token},
        )
    raise AssertionError(name)


def read_tokens(name: str, body: Any) -> tuple[str, str | None]:
    """(access token, refresh token or None) out of a successful answer."""
    if name in ("oauth2_basic", "oauth2_post", "query_basic"):
        return body["access_token"], body.get("refresh_token")
    if name == "appid_json":
        return body["accessToken"], body["refreshToken"]
    if name == "bearer_json":
        return body["resultData"]["token"], body["resultData"]["refreshToken"]
    raise AssertionError(name)


def is_token_rejection(name: str, response: httpx.Response) -> bool:
    """Whether the answer is the vendor's 'this refresh token is no good'."""
    if name in ("oauth2_basic", "oauth2_post", "query_basic"):
        return response.status_code == 400 and response.json()["error"] == "invalid_grant"
    if name == "appid_json":
        return response.status_code == 400 and response.json()["error_code"] == "50400"
    if name == "bearer_json":
        return response.status_code == 403 and response.json() == {"result": "403"}
    raise AssertionError(name)


def sample(client: httpx.Client, emulator: VendorEmulator, access_token: str) -> httpx.Response:
    """Call the protected sample API with an access token."""
    return client.get(emulator.sample_url, headers={"Authorization": f"Bearer {access_token}"})
