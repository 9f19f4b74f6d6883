"""The Add Connection form in the real React UI, in headless Chromium (Debian's /usr/bin/chromium).

For each connection type: the type is offered, the form shows our labels and the extra fields,
and a screenshot is saved under ``.artifacts/screenshots/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .conftest import ROOT, Deployment

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.airflow

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / ".artifacts" / "screenshots"

FORMS = {
    "tokenrefresh_oauth2_basic": (
        "Token Refresh: OAuth2 (client secret basic)",
        ["Client ID", "Client secret"],
    ),
    "tokenrefresh_oauth2_post": (
        "Token Refresh: OAuth2 (client secret post)",
        ["Client ID", "Client secret"],
    ),
    "tokenrefresh_query_basic": ("Token Refresh: BabelBird (query string)", ["Client ID", "Client secret"]),
    "tokenrefresh_appid_json": ("Token Refresh: IoT platform (appId/secret JSON)", ["App ID", "Secret"]),
    "tokenrefresh_bearer_json": ("Token Refresh: iSales (bearer JSON)", []),
    "tokenrefresh_custom": (
        "Token Refresh (custom dialect)",
        ["Client ID", "Client secret", "Dialect spec (JSON)"],
    ),
}
EXTRA_LABELS = [
    "Refresh token",
    "Access token",
    "Endpoint path",
    "TLS verification",
    "Refresh margin (s)",
    "Token store",
    "Refresh lock",
]


@pytest.fixture(scope="module")
def page(deployment: Deployment) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: run scripts/install-system-deps.sh (apt-get install chromium)"
        )
    password = json.loads(
        (deployment.stack.home / "simple_auth_manager_passwords.json.generated").read_text()
    )["admin"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(deployment.stack.base_url + "/connections")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/connections", timeout=60_000)
            yield page
        finally:
            browser.close()


@pytest.mark.parametrize("conn_type", sorted(FORMS))
def test_add_connection_form_shows_the_dialect_fields(page: Any, conn_type: str) -> None:
    hook_name, login_labels = FORMS[conn_type]
    page.get_by_role("button", name="Add Connection").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").click()
    page.keyboard.type(hook_name)
    page.get_by_role("option", name=hook_name, exact=True).click()
    dialog.get_by_text("Extra Fields", exact=True).click()
    dialog.locator("label", has_text="Lock timeout (s)").wait_for(state="visible")
    labels = [label.strip() for label in dialog.locator("label").all_inner_texts()]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"add_connection_{conn_type}.png"), full_page=True)
    assert "Base URL" in labels
    for expected in login_labels:
        assert expected in labels, (expected, labels)
    if conn_type == "tokenrefresh_bearer_json":
        assert "Client ID" not in labels and "Login" not in labels and "Password" not in labels
    for expected in EXTRA_LABELS:
        assert expected in labels, (expected, labels)
    assert dialog.get_by_placeholder("https://", exact=False).count() >= 1
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
