"""The token health page on real components: an api-server (SimpleAuthManager, multi-team mode),
emulated vendors on 127.0.0.1, records written by real ``airflow-tokenrefresh refresh`` runs.

Connections in several states: valid, expiring (refresh token inside the horizon), re-authorization
required (family revoked at the vendor), a refresh in flight (the vendor holds the request on a
manual clock while the page is read), misconfigured (a field missing), an unreadable store record,
and two connections owned by teams. Two more live outside the metastore: one in an
``AIRFLOW_CONN_*`` variable and one in a secrets backend (Airflow's local-file backend), named in
``[tokenrefresh] connections`` with a third id that no backend holds. Users: ``admin`` (admin), ``opa`` (role op, team ``teama``),
``viewer`` (role viewer). SimpleAuthManager gives connection reads to op and above, and in
multi-team mode only for connections of the user's teams (or of no team): so ``opa`` may read every
connection but ``hp_teamb``, and ``viewer`` none.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from airflow_provider_tokenrefresh.testing import (
    BabelBirdEmulator,
    IotAppIdEmulator,
    ManualClock,
    OAuth2BasicEmulator,
    OAuth2PostEmulator,
)
from airflow_provider_tokenrefresh.testing.connections import emulator_connection
from airflow_provider_tokenrefresh.testing.stack import AirflowStack

from .conftest import ROOT
from .leakscan import Canaries

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_tokenrefresh.testing import VendorEmulator

pytestmark = pytest.mark.airflow

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "images"
USERS = "admin:admin,opa:op:teama,viewer:viewer"
TEAMS = (
    "from airflow.models.team import Team\n"
    "from airflow.utils.session import create_session\n"
    "with create_session() as session:\n"
    "    session.add_all([Team(name='teama'), Team(name='teamb')])\n"
)
#: First what a task process does at start (the Task SDK loads the plugins: which modules came
#: with them?), then ``airflow-tokenrefresh refresh ID --force`` for each ID; prints both as JSON.
REFRESH_EACH = (
    "import contextlib, json, sys\n"
    "from airflow.sdk import plugins_manager\n"
    "plugins_manager.integrate_macros_plugins()\n"
    "names = ('airflow_provider_tokenrefresh.plugins.health', 'airflow_provider_tokenrefresh.plugins.health_app', 'fastapi')\n"
    "loaded = {m: m in sys.modules for m in names}\n"
    "from airflow_provider_tokenrefresh.cli import main\n"
    "codes = {}\n"
    "for conn_id in sys.argv[1:]:\n"
    "    with contextlib.redirect_stdout(sys.stderr):\n"
    "        codes[conn_id] = main(['refresh', conn_id, '--force'])\n"
    "print(json.dumps({'loaded': loaded, 'codes': codes}))\n"
)
PAGE = "/tokenrefresh/health"
JSON = "/tokenrefresh/health.json"
EXPECTED = {
    "hp_valid": "ok",
    "hp_expiring": "expiring",
    "hp_reauth": "reauth_required",
    "hp_inflight": "refreshing",
    "hp_misconfigured": "misconfigured",
    "hp_badstore": "store_error",
    "hp_teama": "ok",
    "hp_teamb": "ok",
    "hp_env": "ok",
    "hp_vaulted": "ok",
    "hp_nowhere": "misconfigured",
}


@dataclass
class HealthStack:
    stack: AirflowStack
    emulators: list[VendorEmulator]
    seeds: list[Any]
    passwords: dict[str, str]
    #: Modules present in a process after the Task SDK loaded the plugins (as at a task's start).
    plugin_modules: dict[str, bool]
    #: Every answer the tests received, for the canary scan: location -> text.
    answers: dict[str, str] = field(default_factory=dict)
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str) -> str:
        if user not in self._tokens:
            response = httpx.post(
                f"{self.stack.base_url}/auth/token",
                json={"username": user, "password": self.passwords[user]},
                timeout=30,
            )
            response.raise_for_status()
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    def get(self, path: str, user: str | None = None, *, bearer: str | None = None) -> httpx.Response:
        headers = {}
        if user is not None:
            bearer = self.token(user)
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        response = httpx.get(self.stack.base_url + path, headers=headers, timeout=120, follow_redirects=False)
        self.answers[f"{path} as {user or bearer or 'anonymous'} (HTTP {response.status_code})"] = (
            response.text
        )
        return response

    def rows(self, user: str) -> dict[str, dict[str, Any]]:
        response = self.get(JSON, user)
        assert response.status_code == 200, response.text
        return {row["conn_id"]: row for row in response.json()["connections"]}

    def canaries(self) -> Canaries:
        found = Canaries()
        for emu in self.emulators:
            found.add(f"{emu.name} client secret", emu.client_secret, emu.client_id)
            for family in emu.families():
                snap = emu.current_tokens(family)
                found.add(f"{emu.name} access token", snap.access_token)
                found.add(f"{emu.name} refresh token", snap.refresh_token)
        for i, seed in enumerate(self.seeds):
            found.add(f"seed {i} access token", seed.access_token)
            found.add(f"seed {i} refresh token", seed.refresh_token)
        return found


def _cli(stack: AirflowStack, *args: str) -> subprocess.Popen[str]:
    exe = str(Path(sys.executable).with_name("airflow-tokenrefresh"))
    return subprocess.Popen(
        [exe, *args], env=stack.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def health(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HealthStack]:
    home = tmp_path_factory.mktemp("health_home")
    dags = tmp_path_factory.mktemp("health_dags")
    clock = ManualClock()
    basic = OAuth2BasicEmulator(client_secret="CANARY-basic-secret-7d1e4f").start()
    post = OAuth2PostEmulator(client_secret="CANARY-post-secret-2b9c0a", refresh_ttl=2 * 86400).start()
    query = BabelBirdEmulator(client_secret="CANARY-query-secret-5e3f81").start()
    held = IotAppIdEmulator(
        client_secret="CANARY-appid-secret-9a6d2c", clock=clock, wait_on_clock=True
    ).start()
    emulators: list[VendorEmulator] = [basic, post, query, held]
    seeds: list[Any] = []
    # Outside the metastore: an environment variable and Airflow's local-file secrets backend.
    env_seed, vaulted_seed = basic.issue_tokens(), basic.issue_tokens()
    seeds += [env_seed, vaulted_seed]
    backend_file = home / "secret-connections.json"
    backend_file.write_text(
        json.dumps(
            {
                "hp_vaulted": {
                    "conn_type": "tokenrefresh_oauth2_basic",
                    **emulator_connection(basic, vaulted_seed.refresh_token, vaulted_seed.access_token),
                }
            }
        )
    )
    stack = AirflowStack(
        home=home,
        dags_folder=dags,
        extra_env={
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": USERS,
            "AIRFLOW__CORE__MULTI_TEAM": "True",
            "AIRFLOW_CONN_HP_ENV": json.dumps(
                {
                    "conn_type": "tokenrefresh_oauth2_basic",
                    **emulator_connection(basic, env_seed.refresh_token, env_seed.access_token),
                }
            ),
            "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"connections_file_path": str(backend_file)}),
            "AIRFLOW__TOKENREFRESH__CONNECTIONS": "hp_vaulted, hp_nowhere",
        },
    )
    timings: dict[str, float] = {}
    in_flight: subprocess.Popen[str] | None = None
    plugin_modules: dict[str, bool] = {}

    def seed(conn_id: str, conn_type: str, emu: VendorEmulator, **kwargs: Any) -> Any:
        tokens = emu.issue_tokens()
        seeds.append(tokens)
        fields = emulator_connection(
            emu, tokens.refresh_token, tokens.access_token, **kwargs.pop("extra", {})
        )
        stack.put_connection(conn_id, conn_type, **fields, **kwargs)
        return tokens

    try:
        t0 = time.monotonic()
        stack.migrate()
        timings["migrate"] = time.monotonic() - t0
        # The teams must be in the metastore before the api-server starts: its auth manager
        # refuses to start on teams the database does not have (creating them while it started
        # lost that race once in a loaded CI run: "Teams defined in the auth manager ({'teama'})
        # are not present in the database").
        teams = subprocess.run(
            [sys.executable, "-c", TEAMS],
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert teams.returncode == 0, teams.stderr[-3000:]
        stack.start(components=("api-server",))
        timings["api-server"] = time.monotonic() - t0
        # A 2-day refresh token renewed at each refresh is fine just after one (a quarter of its
        # life is the horizon); a chain capped at 2 days (oauth2_basic's fixed maximum) is not.
        seed("hp_valid", "tokenrefresh_oauth2_post", post, extra={"refresh_token_ttl": 2 * 86400})
        seed("hp_expiring", "tokenrefresh_oauth2_basic", basic, extra={"refresh_token_ttl": 2 * 86400})
        revoked = seed("hp_reauth", "tokenrefresh_query_basic", query)
        query.revoke_family(revoked.family_id, "user removed the app")
        seed("hp_inflight", "tokenrefresh_appid_json", held, extra={"timeout": 300})
        # bearer_json sends the current access token with every refresh: without one it is misconfigured.
        orphan = basic.issue_tokens()
        seeds.append(orphan)
        stack.put_connection(
            "hp_misconfigured",
            "tokenrefresh_bearer_json",
            host=basic.base_url,
            extra={"refresh_token": orphan.refresh_token, "allow_insecure_http": True},
        )
        seed("hp_badstore", "tokenrefresh_oauth2_basic", basic)
        with stack.api() as api:
            api.post(
                "/api/v2/variables",
                json={"key": "tokenrefresh_token__hp_badstore", "value": "not a token record"},
            ).raise_for_status()
        seed("hp_teama", "tokenrefresh_oauth2_basic", basic, team_name="teama")
        seed("hp_teamb", "tokenrefresh_oauth2_basic", basic, team_name="teamb")

        timings["connections"] = time.monotonic() - t0
        # Real refreshes; the vendor holds hp_inflight's (on the manual clock) until teardown.
        held.inject("slow", delay=3600)
        in_flight = _cli(stack, "refresh", "hp_inflight", "--force")
        # One process refreshes the other three in turn (one Airflow import instead of three).
        batch = subprocess.run(
            [
                sys.executable,
                "-c",
                REFRESH_EACH,
                "hp_valid",
                "hp_expiring",
                "hp_reauth",
                "hp_env",
                "hp_vaulted",
            ],
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        result = json.loads(batch.stdout.strip().splitlines()[-1]) if batch.stdout.strip() else {}
        assert result.get("codes") == {
            "hp_valid": 0,
            "hp_expiring": 0,
            "hp_reauth": 2,
            "hp_env": 0,
            "hp_vaulted": 0,
        }, batch.stderr[-3000:]
        plugin_modules = result["loaded"]
        clock.wait_for_sleepers(1, timeout=180)
        timings["refreshes"] = time.monotonic() - t0
        print("health stack setup (cumulative s):", {k: round(v, 1) for k, v in timings.items()})
        yield HealthStack(stack, emulators, seeds, stack_passwords(stack), plugin_modules)
    finally:
        if in_flight is not None:
            clock.advance(3601)  # the vendor answers; the CLI writes the record while the stack stops
        stack.stop()
        if in_flight is not None:
            try:
                in_flight.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                in_flight.kill()
                in_flight.communicate(timeout=10)
        for emu in emulators:
            emu.stop()


def stack_passwords(stack: AirflowStack) -> dict[str, str]:
    passwords: dict[str, str] = json.loads(
        (stack.home / "simple_auth_manager_passwords.json.generated").read_text()
    )
    return passwords


def test_unauthenticated_requests_are_refused(health: HealthStack) -> None:
    page = health.get(PAGE)
    assert page.status_code == 302, page.text
    assert "/auth/login" in page.headers["location"] and "next=" in page.headers["location"]
    assert health.get(JSON).status_code == 401
    assert health.get(JSON, bearer="not-a-jwt").status_code == 403
    assert "hp_" not in page.text


def test_a_viewer_may_not_read_connections(health: HealthStack) -> None:
    page = health.get(PAGE, "viewer")
    assert page.status_code == 403 and "hp_" not in page.text
    assert health.get(JSON, "viewer").status_code == 403
    # Airflow's own connections list refuses the viewer the same way.
    assert health.get("/api/v2/connections", "viewer").status_code == 403


def test_admin_sees_every_connection_in_its_state(health: HealthStack) -> None:
    rows = health.rows("admin")
    assert {c: r["health"] for c, r in rows.items()} == EXPECTED
    valid = rows["hp_valid"]
    assert valid["state"] == "valid" and valid["generation"] == 1 and valid["fix"] is None
    assert valid["access_expires_in"] > 3000 and valid["last_refresh_at"] and valid["store"] == "variable"
    assert valid["lock"]
    assert 86400 < valid["refresh_expires_in"] <= 2 * 86400  # inside 7 days, yet ok: renewed per refresh
    expiring = rows["hp_expiring"]
    assert 0 < expiring["refresh_expires_in"] <= 2 * 86400 and "hp_expiring" in expiring["fix"]
    reauth = rows["hp_reauth"]
    assert reauth["state"] == "reauth_required" and reauth["reason"]
    assert "extra 'refresh_token'" in reauth["fix"]
    flight = rows["hp_inflight"]
    assert flight["in_flight_by"] and flight["in_flight_since"] and flight["in_flight_for"] >= 0
    bad = rows["hp_misconfigured"]
    assert bad["error_field"] == "extra 'access_token'" and "hp_misconfigured" in bad["fix"]
    for outside in ("hp_env", "hp_vaulted"):
        assert rows[outside]["state"] == "valid" and rows[outside]["generation"] == 1, rows[outside]
    nowhere = rows["hp_nowhere"]
    assert "no secrets backend holds it" in nowhere["last_error"] and "hp_nowhere" in nowhere["fix"], nowhere
    store = rows["hp_badstore"]
    assert "tokenrefresh_token__hp_badstore" in store["last_error"] and "fernet_key" in store["fix"]
    page = health.get(PAGE, "admin")
    assert page.status_code == 200
    for conn_id, state in EXPECTED.items():
        assert f'data-conn-id="{conn_id}" data-health="{state}"' in page.text


def test_op_of_teama_sees_only_the_connections_it_may_read(health: HealthStack) -> None:
    rows = health.rows("opa")
    assert set(rows) == set(EXPECTED) - {"hp_teamb"}
    assert rows["hp_teama"]["health"] == "ok"
    page = health.get(PAGE, "opa")
    assert page.status_code == 200 and "hp_teama" in page.text and "hp_teamb" not in page.text
    # The auth manager draws the same line for Airflow's own route.
    assert health.get("/api/v2/connections/hp_teamb", "opa").status_code == 403
    assert health.get("/api/v2/connections/hp_teama", "opa").status_code == 200


def test_the_menu_entry_is_registered(health: HealthStack) -> None:
    response = health.get("/api/v2/plugins", "admin")
    assert response.status_code == 200
    (plugin,) = [p for p in response.json()["plugins"] if p["name"] == "tokenrefresh_health"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/tokenrefresh"
    (view,) = plugin["external_views"]
    assert (view["href"], view["url_route"], view["category"]) == (PAGE, "token_health", "browse")


def _browser(pw: Any) -> Any:
    return pw.chromium.launch(
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


def _shot(page: Any, name: str, **kwargs: Any) -> None:
    """A screenshot under docs/images, reduced to 64 colours (a third of the size, still legible)."""
    from PIL import Image

    path = SHOTS / name
    page.screenshot(path=str(path), **kwargs)
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)
    assert path.stat().st_size < 200_000, (name, path.stat().st_size)


def _sign_in(browser: Any, health: HealthStack, user: str, path: str) -> Any:
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(health.stack.base_url + path)  # redirected to the login page, then back
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(health.passwords[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{path}", timeout=90_000)
    return page


def test_the_page_in_chromium(health: HealthStack) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: run scripts/install-system-deps.sh (apt-get install chromium)"
        )
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = _sign_in(browser, health, "admin", PAGE)
            rows = page.locator("tr[data-conn-id]")
            rows.first.wait_for(state="visible")
            assert rows.count() == len(EXPECTED)
            shown = {
                rows.nth(i).get_attribute("data-conn-id"): rows.nth(i).get_attribute("data-health")
                for i in range(rows.count())
            }
            assert shown == EXPECTED
            assert page.locator('tr[data-conn-id="hp_reauth"]').inner_text().count("Re-authorize") == 1
            health.answers["chromium admin page"] = page.content()
            _shot(page, "token-health.png", full_page=True)

            # Inside the Airflow UI: the Browse menu entry opens the page in the UI's frame.
            page.goto(health.stack.base_url + "/plugin/token_health")
            frame = page.frame_locator("iframe").first
            frame.locator('tr[data-conn-id="hp_valid"]').wait_for(state="visible", timeout=90_000)
            _shot(page, "token-health-in-airflow.png")

            op = _sign_in(browser, health, "opa", PAGE)
            op.locator("tr[data-conn-id]").first.wait_for(state="visible")
            assert op.locator('tr[data-conn-id="hp_teamb"]').count() == 0
            assert op.locator("tr[data-conn-id]").count() == len(EXPECTED) - 1
            health.answers["chromium opa page"] = op.content()
            _shot(op, "token-health-op.png", full_page=True)
        finally:
            browser.close()


def test_status_lists_the_connections_outside_the_metastore(health: HealthStack) -> None:
    proc = _cli(health.stack, "status", "--json")
    out, err = proc.communicate(timeout=300)
    health.answers["airflow-tokenrefresh status --json"] = out + err
    rows = {row["conn_id"]: row for row in json.loads(out)}
    assert set(EXPECTED) <= set(rows), sorted(rows)
    assert rows["hp_env"]["state"] == "valid" and rows["hp_vaulted"]["state"] == "valid"
    assert rows["hp_nowhere"]["state"] == "error" and "hp_nowhere" in rows["hp_nowhere"]["last_error"]


def test_no_secret_in_any_answer(health: HealthStack) -> None:
    for user in ("admin", "opa"):
        health.get(PAGE, user)
        health.get(JSON, user)
    canaries = health.canaries()
    assert len(canaries) >= 4 + 2 * len(EXPECTED)
    texts = dict(health.answers)
    assert sum(1 for k in texts if "(HTTP 200)" in k) >= 4
    leaks = canaries.scan_all(texts)
    assert not leaks, "\n".join(map(str, leaks))
    print(
        f"canary scan: {len(canaries)} secrets, {canaries.piece_count} pieces, {len(texts)} answers, "
        f"{sum(map(len, texts.values()))} characters"
    )


def test_a_task_process_loads_the_plugin_without_the_web_app(health: HealthStack) -> None:
    """The Task SDK loads plugins in every task process: the plugin must not pull in FastAPI there."""
    assert health.plugin_modules == {
        "airflow_provider_tokenrefresh.plugins.health": True,
        "airflow_provider_tokenrefresh.plugins.health_app": False,
        "fastapi": False,
    }
