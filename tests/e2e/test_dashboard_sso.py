"""Signing in to the dashboard through the municipality's identity provider, in a real
headless Chromium: the provider's login and consent pages, the session cookie, a refused
person, and signing out. The provider is oidc-provider from the npm registry, run with Node.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.e2e.test_dashboard import CHROMIUM, _seed, _wait_until
from tests.identity.idp import (
    IdentityProvider,
    node_unavailable,
    provider_package_dir,
    start_provider,
)
from tests.processes import child_env, free_port, wait_for_port

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run does)"
    ),
    pytest.mark.skipif(
        node_unavailable() is not None and not os.environ.get("CI"),
        reason=str(node_unavailable()),
    ),
]

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic"]


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
def idp(api_port: int, tmp_path: Path) -> Iterator[IdentityProvider]:
    provider = start_provider(
        provider_package_dir(),
        "silkeborg",
        [f"http://127.0.0.1:{api_port}/auth/callback"],
        {
            "sofie": {"name": "Sofie Skov", "roles": ["iot-reader"]},
            "karl": {"name": "Karl Kantine", "roles": ["canteen"]},
        },
        tmp_path,
    )
    yield provider
    provider.stop()


@pytest.fixture
def signed_in_api(
    database_url: str, db: psycopg.Connection, idp: IdentityProvider, api_port: int
) -> Iterator[str]:
    _seed(db)
    db.execute(
        "INSERT INTO identity_providers (municipality_id, slug, display_name, config) "
        "SELECT id, 'silkeborg-login', 'Silkeborg medarbejderlogin', %s FROM municipalities "
        "WHERE slug = 'silkeborg'",
        (
            Jsonb(
                {
                    "issuer": idp.issuer,
                    "client_id": idp.client_id,
                    "client_secret_env": "IOT_TEST_OIDC_SECRET",
                    "scopes": ["openid", "profile", "roles"],
                    "role_scopes": {"iot-reader": ["read-private"]},
                }
            ),
        ),
    )
    base = f"http://127.0.0.1:{api_port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "api", "--port", str(api_port)],
        env=child_env(
            IOT_DATABASE_URL=database_url,
            IOT_PUBLIC_BASE_URL=base,
            IOT_TEST_OIDC_SECRET=idp.client_secret,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(api_port, 30)
        yield base
    finally:
        process.terminate()
        process.wait(20)


def _sign_in_at_provider(page, login: str) -> None:
    page.wait_for_selector("input[name=login]", timeout=20000)
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "whatever")
    page.click("button[type=submit]")
    page.wait_for_selector("button[type=submit]", timeout=20000)  # consent
    page.click("button[type=submit]")


def test_staff_sign_in_through_their_provider_and_sign_out(db, signed_in_api) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(signed_in_api + "/")
        page.wait_for_selector("#providers a", timeout=20000)
        assert "Silkeborg medarbejderlogin" in page.inner_text("[data-testid=sso]")
        page.click("#providers a")
        _sign_in_at_provider(page, "sofie")
        page.wait_for_selector("body[data-loaded=true]", timeout=20000)
        assert page.url == signed_in_api + "/"
        assert "Silkeborg Kommune" in page.inner_text("[data-testid=who]")
        assert len(page.query_selector_all("#rooms tbody tr")) == 3
        cookies = {c["name"]: c for c in page.context.cookies()}
        session = cookies["kiot_session"]
        assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
        # The page's script cannot read the session token, only the CSRF token.
        assert "kiot_session" not in page.evaluate("document.cookie")

        page.click("#logout")
        _wait_until(page, "!document.getElementById('login').hidden")
        revoked = db.execute("SELECT revoked_at IS NOT NULL FROM staff_sessions").fetchall()
        assert revoked == [(True,)]
        page.reload()
        page.wait_for_selector("#providers a", timeout=20000)
        assert page.is_hidden("#dashboard")
        browser.close()
    actions = [r[0] for r in db.execute("SELECT action FROM audit_events ORDER BY id")]
    assert actions == ["session.login", "session.logout"]


def test_a_person_without_a_role_is_told_so_and_gets_no_dashboard(db, signed_in_api) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(signed_in_api + "/")
        page.wait_for_selector("#providers a", timeout=20000)
        page.click("#providers a")
        _sign_in_at_provider(page, "karl")
        page.wait_for_load_state()
        _wait_until(page, "document.body.innerText.includes('role')")
        assert "none of your roles" in page.inner_text("body")
        assert "kiot_session" not in {c["name"] for c in page.context.cookies()}
        browser.close()
