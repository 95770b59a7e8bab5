"""Staff sign-in with OpenID Connect against real identity providers (oidc-provider from the
npm registry, run with Node): one for Aarhus, one for Odder. What an attacker, a careless
colleague or a mis-issued account would try: a forged, expired or replayed token, a token
or code of the other municipality's provider, a person without a role, a cross-site write.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from api import oidc
from api.app import create_app
from domain.registry import sync_device_models
from models.db_roles import API, STAFF, enable_logins, role_url
from models.settings import Settings
from tests.identity.idp import (
    IdentityProvider,
    complete_sign_in_at_provider,
    node_unavailable,
    provider_package_dir,
    start_provider,
)
from tests.staff.test_staff_api import Tenant, _tenant

# In CI (.ci/run installs Node) a missing Node fails instead of skipping.
pytestmark = pytest.mark.skipif(
    node_unavailable() is not None and not os.environ.get("CI"), reason=str(node_unavailable())
)

BASE = "https://testserver"
CALLBACK = f"{BASE}/auth/callback"
ROLE_SCOPES = {"iot-admin": ["admin"], "iot-reader": ["read-private"]}


@pytest.fixture(scope="module")
def package_dir() -> Path:
    return provider_package_dir()


@pytest.fixture(scope="module")
def idps(package_dir: Path, tmp_path_factory) -> Iterator[dict[str, IdentityProvider]]:
    aarhus = start_provider(
        package_dir,
        "aarhus",
        [CALLBACK],
        {
            "anna": {"name": "Anna Andersen", "email": "anna@aarhus.dk", "roles": ["iot-admin"],
                     "municipality": "aarhus"},
            "rasmus": {"name": "Rasmus Reader", "roles": ["iot-reader"],
                       "municipality": "aarhus"},
            "nora": {"name": "Nora No-Role", "roles": ["canteen"], "municipality": "aarhus"},
            # an account of the shared directory that belongs to another municipality
            "otto": {"name": "Otto Odder", "roles": ["iot-admin"], "municipality": "odder"},
        },
        tmp_path_factory.mktemp("idp-aarhus"),
    )  # fmt: skip
    odder = start_provider(
        package_dir,
        "odder",
        [CALLBACK],
        {"olga": {"name": "Olga Olsen", "roles": ["iot-admin"], "municipality": "odder"}},
        tmp_path_factory.mktemp("idp-odder"),
    )
    yield {"aarhus": aarhus, "odder": odder}
    aarhus.stop()
    odder.stop()


@pytest.fixture
def tenants(db: psycopg.Connection, idps) -> tuple[Tenant, Tenant]:
    sync_device_models(db)
    a = _tenant(db, "aarhus", "a81758fffe0a0001", 1)
    b = _tenant(db, "odder", "a81758fffe0b0001", 2)
    for tenant, idp, extra in (
        (a, idps["aarhus"], {"municipality_claim": "municipality",
                             "municipality_values": ["aarhus"]}),
        (b, idps["odder"], {}),
    ):  # fmt: skip
        config = {
            "issuer": idp.issuer,
            "client_id": idp.client_id,
            "client_secret_env": f"IOT_TEST_OIDC_SECRET_{tenant.slug.upper()}",
            "scopes": ["openid", "profile", "email", "roles"],
            "role_scopes": ROLE_SCOPES,
            **extra,
        }
        oidc.validate_config(config)
        db.execute(
            "INSERT INTO identity_providers (municipality_id, slug, display_name, config) "
            "VALUES (%s, %s, %s, %s)",
            (tenant.id, f"{tenant.slug}-idp", f"{tenant.slug.title()} login", Jsonb(config)),
        )
    return a, b


@pytest.fixture
def client(database_url: str, db: psycopg.Connection, idps, monkeypatch) -> Iterator[TestClient]:
    """The app as deployed (iot_api and iot_staff roles) at an https address."""
    for slug, idp in idps.items():
        monkeypatch.setenv(f"IOT_TEST_OIDC_SECRET_{slug.upper()}", idp.client_secret)
    enable_logins(db, {})
    settings = Settings(
        database_url=role_url(database_url, API),
        staff_database_url=role_url(database_url, STAFF),
        public_base_url=BASE,
    )
    with TestClient(create_app(settings), base_url=BASE) as test_client:
        yield test_client


def sign_in(client: TestClient, provider: str, login: str):
    """The whole sign-in: our login route, the provider's forms, our callback."""
    started = client.get(f"/auth/login/{provider}", follow_redirects=False)
    assert started.status_code == 302, started.text
    back = complete_sign_in_at_provider(started.headers["location"], login)
    assert back.startswith(CALLBACK), back
    return client.get(back.removeprefix(BASE), follow_redirects=False)


@contextmanager
def another_browser(client: TestClient) -> Iterator[TestClient]:
    """The same app seen from a browser with no cookies of this one (the app's lifespan,
    and so its pools, stay those of `client`)."""
    saved = httpx.Cookies(client.cookies)
    client.cookies.clear()
    try:
        yield client
    finally:
        client.cookies.clear()
        client.cookies.update(saved)


def _set_cookies(response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


def _events(db: psycopg.Connection) -> list[dict]:
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute("SELECT * FROM audit_events ORDER BY id").fetchall()


# --- signing in ------------------------------------------------------------------------------


def test_a_person_signs_in_and_gets_a_secure_http_only_strict_session(client, tenants, db):
    a, _ = tenants
    response = sign_in(client, "aarhus-idp", "anna")
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookies = _set_cookies(response)
    session, csrf = cookies["kiot_session"].lower(), cookies["kiot_csrf"].lower()
    for cookie in (session, csrf):
        assert "secure" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "httponly" in session and "httponly" not in csrf
    me = client.get("/api/v1/staff/me")
    assert me.status_code == 200 and me.json()["municipality_slug"] == "aarhus"
    who = client.get("/auth/session").json()
    assert who["name"] == "Anna Andersen" and who["scopes"] == ["admin"]
    (login,) = _events(db)
    assert (login["action"], login["actor_kind"], login["actor_id"], login["actor_name"]) == (
        "session.login", "person", "aarhus-idp:anna", "Anna Andersen"
    )  # fmt: skip
    assert login["municipality_id"] == a.id and "token_hash" not in login["after"]
    # Only hashes of the tokens are stored.
    token = client.cookies.get("kiot_session")
    stored = db.execute("SELECT token_hash FROM staff_sessions").fetchone()[0]
    assert token and token.encode() not in bytes(stored)


def test_a_persons_writes_need_the_csrf_token_and_are_recorded_as_theirs(client, tenants, db):
    a, _ = tenants
    sign_in(client, "aarhus-idp", "anna")
    url = f"/api/v1/staff/sensors/{a.sensor}"
    # What a cross-site form or script can do: the browser sends the cookie, not the header.
    forged = client.patch(url, json={"is_public": True})
    assert forged.status_code == 403 and "X-CSRF-Token" in forged.json()["detail"]
    wrong = client.patch(url, json={"is_public": True}, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    assert db.execute("SELECT is_public FROM sensors WHERE id = %s", (a.sensor,)).fetchone() == (
        False,
    )
    csrf = client.cookies.get("kiot_csrf")
    done = client.patch(url, json={"is_public": True}, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200, done.text
    update = [e for e in _events(db) if e["action"] == "sensor.update"]
    assert len(update) == 1
    assert (update[0]["actor_id"], update[0]["actor_name"]) == ("aarhus-idp:anna", "Anna Andersen")
    assert update[0]["before"]["is_public"] is False and update[0]["after"]["is_public"] is True


def test_a_person_manages_notification_channels_with_the_csrf_token(client, tenants, db):
    """Outbound writes from the dashboard: a signed-in person, cookie and CSRF header."""
    a, _ = tenants
    sign_in(client, "aarhus-idp", "anna")
    url = "/api/v1/staff/notification-channels"
    channel = {"name": "Drift", "kind": "webhook", "url": "https://drift.aarhus.dk/iot"}
    forged = client.post(url, json=channel)
    assert forged.status_code == 403 and "X-CSRF-Token" in forged.json()["detail"]
    assert db.execute("SELECT count(*) FROM notification_channels").fetchone() == (0,)
    csrf = {"X-CSRF-Token": client.cookies.get("kiot_csrf")}
    created = client.post(url, json=channel, headers=csrf)
    assert created.status_code == 201, created.text
    channel_id = created.json()["id"]
    tested = client.post(f"{url}/{channel_id}/test", headers=csrf)
    assert tested.status_code == 202, tested.text
    switched = client.patch(f"{url}/{channel_id}", json={"enabled": False}, headers=csrf)
    assert switched.status_code == 200, switched.text
    events = [e for e in _events(db) if e["action"].startswith("notification_channel.")]
    assert [(e["action"], e["target_table"], e["operation"]) for e in events] == [
        ("notification_channel.create", "notification_channels", "insert"),
        ("notification_channel.test", "deliveries", "insert"),
        ("notification_channel.update", "notification_channels", "update"),
    ]
    for event in events:
        assert (event["actor_kind"], event["actor_id"], event["actor_name"]) == (
            "person", "aarhus-idp:anna", "Anna Andersen"
        )  # fmt: skip
        assert event["municipality_id"] == a.id
        for side in (event["before"], event["after"]):
            assert side is None or "secret" not in side
    assert created.json()["secret"] not in str([(e["before"], e["after"]) for e in events])


def test_roles_map_to_scopes_and_a_person_without_one_gets_no_session(client, tenants, db):
    a, _ = tenants
    sign_in(client, "aarhus-idp", "rasmus")
    assert client.get("/api/v1/staff/sensors").status_code == 200
    csrf = {"X-CSRF-Token": client.cookies.get("kiot_csrf")}
    refused = client.patch(f"/api/v1/staff/sensors/{a.sensor}", json={"name": "x"}, headers=csrf)
    assert refused.status_code == 403 and "write-sensors" in refused.json()["detail"]
    client.cookies.clear()
    nobody = sign_in(client, "aarhus-idp", "nora")
    assert nobody.status_code == 403 and "role" in nobody.json()["detail"]
    assert "kiot_session" not in _set_cookies(nobody)
    refusal = [e for e in _events(db) if e["action"] == "session.refused"]
    assert [(e["actor_id"], e["municipality_id"]) for e in refusal] == [("aarhus-idp:nora", a.id)]


def test_an_account_of_another_municipality_cannot_sign_in_here(client, tenants, db):
    """A directory shared by municipalities: Otto's account says Odder; Aarhus's sign-in
    admits only accounts whose municipality claim says Aarhus."""
    refused = sign_in(client, "aarhus-idp", "otto")
    assert refused.status_code == 403 and "another municipality" in refused.json()["detail"]
    assert client.get("/api/v1/staff/me").status_code == 401


def test_a_person_sees_and_changes_only_their_municipalitys_things(client, tenants, db):
    a, b = tenants
    sign_in(client, "odder-idp", "olga")
    csrf = {"X-CSRF-Token": client.cookies.get("kiot_csrf")}
    assert client.get(f"/api/v1/staff/sensors/{a.sensor}").status_code == 404
    assert (
        client.patch(
            f"/api/v1/staff/sensors/{a.sensor}", json={"is_public": True}, headers=csrf
        ).status_code
        == 404
    )
    assert client.get(f"/api/v1/staff/sensors/{b.sensor}").status_code == 200
    trail = client.get("/api/v1/staff/audit").json()["items"]
    assert {e["actor_id"] for e in trail} == {"odder-idp:olga"}


# --- codes and tokens that must not work -----------------------------------------------------


def test_a_code_from_another_municipalitys_provider_is_refused(client, tenants, db):
    """Start at Aarhus's sign-in, bring back a code Odder's provider issued."""
    aarhus_start = client.get("/auth/login/aarhus-idp", follow_redirects=False)
    aarhus_state = parse_qs(urlsplit(aarhus_start.headers["location"]).query)["state"][0]
    with another_browser(client) as other_browser:
        odder_start = other_browser.get("/auth/login/odder-idp", follow_redirects=False)
        back = complete_sign_in_at_provider(odder_start.headers["location"], "olga")
    odder_code = parse_qs(urlsplit(back).query)["code"][0]
    response = client.get("/auth/callback", params={"state": aarhus_state, "code": odder_code})
    assert response.status_code == 401, response.text
    assert client.get("/api/v1/staff/me").status_code == 401


def test_a_callback_from_another_browser_or_a_replayed_one_is_refused(client, tenants, db):
    started = client.get("/auth/login/aarhus-idp", follow_redirects=False)
    back = complete_sign_in_at_provider(started.headers["location"], "anna").removeprefix(BASE)
    with another_browser(client) as victim:  # without the kiot_login cookie of this sign-in
        hijacked = victim.get(back, follow_redirects=False)
        assert hijacked.status_code == 400 and "state" in hijacked.json()["detail"]
    assert client.get(back, follow_redirects=False).status_code == 400  # state used up


def _claims(idp: IdentityProvider, **changes) -> dict:
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": idp.client_id, "sub": "anna", "iat": now,
              "exp": now + 300, "nonce": "n-1", "name": "Anna", "roles": ["iot-admin"]}  # fmt: skip
    claims.update(changes)
    return claims


@pytest.fixture
def aarhus_config(idps) -> oidc.ProviderConfig:
    idp = idps["aarhus"]
    return oidc.ProviderConfig(
        id=1, slug="aarhus-idp", municipality_id=1, display_name="Aarhus", issuer=idp.issuer,
        client_id=idp.client_id, role_scopes=ROLE_SCOPES,
    )  # fmt: skip


def _verify(config: oidc.ProviderConfig, token: str) -> dict:
    return asyncio.run(oidc.verify_id_token(oidc.ProviderDirectory(), config, token, "n-1"))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("genuine", None),
        ("expired", "expired"),
        ("other_municipalitys_provider", "does not publish"),
        ("other_provider_key_same_kid", "not valid"),
        ("attacker_key", "not valid"),
        ("claims_other_issuer", "not valid"),
        ("for_another_client", "not valid"),
        ("another_sign_in", "nonce"),
        ("alg_none", "refused"),
        ("hmac_with_client_secret", "refused"),
        ("tampered", "not valid"),
    ],
)
def test_id_tokens_are_checked_against_the_providers_keys_issuer_client_and_time(
    idps, aarhus_config, case, message
) -> None:
    aarhus, odder = idps["aarhus"], idps["odder"]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = {
        "genuine": lambda: aarhus.sign(_claims(aarhus)),
        "expired": lambda: aarhus.sign(
            _claims(aarhus, exp=int(time.time()) - 600, iat=int(time.time()) - 4000)
        ),
        "other_municipalitys_provider": lambda: odder.sign(_claims(odder)),
        "other_provider_key_same_kid": lambda: odder.sign(_claims(aarhus), kid=aarhus.kid),
        "attacker_key": lambda: jwt.encode(
            _claims(aarhus), attacker, algorithm="RS256", headers={"kid": aarhus.kid}
        ),
        "claims_other_issuer": lambda: aarhus.sign(_claims(aarhus, iss=odder.issuer)),
        "for_another_client": lambda: aarhus.sign(_claims(aarhus, aud="someone-else")),
        "another_sign_in": lambda: aarhus.sign(_claims(aarhus, nonce="n-2")),
        "alg_none": lambda: jwt.encode(_claims(aarhus), None, algorithm="none"),
        "hmac_with_client_secret": lambda: jwt.encode(
            _claims(aarhus), aarhus.client_secret, algorithm="HS256", headers={"kid": aarhus.kid}
        ),
        "tampered": lambda: _tamper(aarhus.sign(_claims(aarhus))),
    }
    token = tokens[case]()
    if message is None:
        assert _verify(aarhus_config, token)["sub"] == "anna"
        return
    with pytest.raises(oidc.SignInError, match=message) as refused:
        _verify(aarhus_config, token)
    assert refused.value.status == 401


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = jwt.utils.base64url_decode(payload).replace(b'"anna"', b'"anne"')
    return ".".join((header, jwt.utils.base64url_encode(claims).decode(), signature))


# --- sessions: short, refreshed by use, ended by sign-out -------------------------------------


def test_sessions_refresh_with_use_and_end_when_idle_or_too_old(client, tenants, db):
    sign_in(client, "aarhus-idp", "anna")
    db.execute("UPDATE staff_sessions SET idle_expires_at = now() + interval '1 minute'")
    assert client.get("/api/v1/staff/me").status_code == 200
    idle = db.execute("SELECT idle_expires_at - now() FROM staff_sessions").fetchone()[0]
    assert idle > timedelta(minutes=14)  # refreshed to IOT_SESSION_IDLE_MINUTES
    db.execute("UPDATE staff_sessions SET idle_expires_at = now() - interval '1 second'")
    ended = client.get("/api/v1/staff/me")
    assert ended.status_code == 401 and "sign in again" in ended.json()["detail"]
    db.execute(
        "UPDATE staff_sessions SET idle_expires_at = now() + interval '10 minutes', "
        "expires_at = now() - interval '1 second'"
    )
    assert client.get("/api/v1/staff/me").status_code == 401
    row = db.execute("SELECT expires_at FROM staff_sessions").fetchone()[0]
    assert row < datetime.now(UTC)  # use never extends past the maximum age


def test_sign_out_ends_the_session_and_needs_the_csrf_token(client, tenants, db):
    sign_in(client, "aarhus-idp", "anna")
    token = client.cookies.get("kiot_session")
    assert client.post("/auth/logout").status_code == 403  # a cross-site sign-out is refused
    out = client.post("/auth/logout", headers={"X-CSRF-Token": client.cookies.get("kiot_csrf")})
    assert out.status_code == 200
    assert 'kiot_session=""' in out.headers.get("set-cookie", "") or not client.cookies.get(
        "kiot_session"
    )
    with another_browser(client) as replay:
        replay.cookies.set("kiot_session", token)
        assert replay.get("/api/v1/staff/me").status_code == 401
    logout = [e for e in _events(db) if e["action"] == "session.logout"]
    assert len(logout) == 1 and logout[0]["before"]["revoked_at"] is None
    assert logout[0]["after"]["revoked_at"] is not None


def test_a_disabled_provider_ends_its_sessions(client, tenants, db):
    sign_in(client, "aarhus-idp", "anna")
    assert client.get("/api/v1/staff/me").status_code == 200
    db.execute("UPDATE identity_providers SET enabled = false WHERE slug = 'aarhus-idp'")
    assert client.get("/api/v1/staff/me").status_code == 401
    assert client.get("/auth/login/aarhus-idp", follow_redirects=False).status_code == 404


def test_the_sign_in_page_lists_each_municipalitys_providers(client, tenants):
    providers = client.get("/auth/providers").json()
    assert [(p["slug"], p["municipality"]) for p in providers] == [
        ("aarhus-idp", "aarhus"),
        ("odder-idp", "odder"),
    ]
    only = client.get("/auth/providers", params={"municipality": "odder"}).json()
    assert [p["slug"] for p in only] == ["odder-idp"]
