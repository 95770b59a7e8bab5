"""Staff sign-in with SAML 2.0 as KOMBIT Adgangsstyring does it (OIOSAML: signed assertions,
roles as "brugersystemroller" in a privilege profile scoped to the municipality's CVR
number), against a real SAML identity provider built with pysaml2. What must fail: an
assertion signed by another key (forged, or another municipality's IdP), a tampered, an
expired or a replayed one, roles granted by another municipality, a person without a role.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from api import saml
from api.app import create_app
from domain.registry import sync_device_models
from models.db_roles import API, STAFF, enable_logins, role_url
from models.settings import Settings
from tests.identity.saml_idp import (
    PRIVILEGES,
    SamlIdentityProvider,
    privilege_profile,
    start_saml_idp,
    write_key_pair,
)
from tests.staff.test_staff_api import Tenant, _tenant

pytestmark = pytest.mark.skipif(
    shutil.which("xmlsec1") is None, reason="xmlsec1 is not installed (.ci/run installs it)"
)

BASE = "https://testserver"
AARHUS_CVR, ODDER_CVR = "55133018", "32264328"
ADMIN_ROLE = "http://kommune-iot.dk/roles/usersystemrole/admin/1"
READER_ROLE = "http://kommune-iot.dk/roles/usersystemrole/read/1"


@pytest.fixture(scope="module")
def sp_settings(tmp_path_factory) -> dict[str, str]:
    key_file, cert_file = write_key_pair(tmp_path_factory.mktemp("sp"), "kommune-iot-sp")
    return {"saml_sp_key_file": str(key_file), "saml_sp_cert_file": str(cert_file)}


@pytest.fixture(scope="module")
def sp_metadata(sp_settings) -> str:
    return saml.sp_metadata(Settings(public_base_url=BASE, **sp_settings))


@pytest.fixture(scope="module")
def idps(sp_metadata, tmp_path_factory) -> dict[str, SamlIdentityProvider]:
    workdir = tmp_path_factory.mktemp("idps")
    return {
        "aarhus": start_saml_idp(workdir, "aarhus", sp_metadata),
        "odder": start_saml_idp(workdir, "odder", sp_metadata),
        # an impostor claiming Aarhus's IdP entity ID, with a key of its own
        "forger": start_saml_idp(workdir, "forger", sp_metadata, "https://idp.aarhus.test/saml"),
    }


@pytest.fixture
def tenants(db: psycopg.Connection, idps) -> tuple[Tenant, Tenant]:
    sync_device_models(db)
    a = _tenant(db, "aarhus", "a81758fffe0a0001", 1)
    b = _tenant(db, "odder", "a81758fffe0b0001", 2)
    for tenant, cvr in ((a, AARHUS_CVR), (b, ODDER_CVR)):
        config = {
            "idp_metadata_xml": idps[tenant.slug].metadata_xml,
            "roles_attribute": PRIVILEGES,
            "roles_format": "oiosaml-bpp",
            "cvr": cvr,
            "role_scopes": {ADMIN_ROLE: ["admin"], READER_ROLE: ["read-private"]},
            "name_attribute": "cn",
        }
        saml.validate_config(config)
        db.execute(
            "INSERT INTO identity_providers (municipality_id, slug, kind, display_name, config) "
            "VALUES (%s, %s, 'saml', %s, %s)",
            (tenant.id, f"{tenant.slug}-kombit", f"{tenant.slug} KOMBIT", Jsonb(config)),
        )
    return a, b


@pytest.fixture
def client(database_url, db, sp_settings) -> Iterator[TestClient]:
    enable_logins(db, {})
    settings = Settings(
        database_url=role_url(database_url, API),
        staff_database_url=role_url(database_url, STAFF),
        public_base_url=BASE,
        **sp_settings,
    )
    with TestClient(create_app(settings), base_url=BASE) as test_client:
        yield test_client


def start(client: TestClient, provider: str, idp: SamlIdentityProvider) -> tuple[str, str]:
    """Our login route: (AuthnRequest id as the IdP parsed it, RelayState)."""
    response = client.get(f"/auth/saml/login/{provider}", follow_redirects=False)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(idp.sso_url)
    query = parse_qs(urlsplit(location).query)
    assert "Signature" in query  # the AuthnRequest is signed (OIOSAML requires it)
    request = idp.parse_request(query["SAMLRequest"][0])
    return request.message.id, query["RelayState"][0]


def attributes(name: str, groups: dict[str, list[str]]) -> dict[str, list[str]]:
    return {"cn": [name], PRIVILEGES: [privilege_profile(groups)]}


def post_assertion(client: TestClient, relay_state: str, saml_response: str):
    return client.post(
        "/auth/saml/acs",
        data={"SAMLResponse": saml_response, "RelayState": relay_state},
        follow_redirects=False,
    )


def sign_in(client, idps, provider="aarhus-kombit", idp="aarhus", subject="anna",
            groups=None, signer=None, **respond):  # fmt: skip
    request_id, relay_state = start(client, provider, idps[idp])
    response = (signer or idps[idp]).respond(
        request_id,
        f"{BASE}/auth/saml/acs",
        saml.sp_entity_id(Settings(public_base_url=BASE)),
        subject,
        attributes(subject.title(), groups or {AARHUS_CVR: [ADMIN_ROLE]}),
        **respond,
    )
    return post_assertion(client, relay_state, response), relay_state, response


def test_the_service_provider_metadata_names_our_endpoints_and_key(client, sp_settings):
    response = client.get("/auth/saml/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/samlmetadata+xml")
    xml = response.text
    assert f'entityID="{BASE}/auth/saml/metadata"' in xml
    assert f'Location="{BASE}/auth/saml/acs"' in xml and 'AuthnRequestsSigned="true"' in xml
    cert = Path(sp_settings["saml_sp_cert_file"]).read_text().splitlines()[1]
    assert cert[:40] in xml


def test_a_kombit_user_signs_in_with_roles_of_the_municipality(client, tenants, idps, db):
    a, _ = tenants
    response, _, _ = sign_in(client, idps, subject="anna")
    assert response.status_code == 303, response.text
    assert "kiot_session" in response.headers.get("set-cookie", "")
    me = client.get("/api/v1/staff/me").json()
    assert me["municipality_slug"] == "aarhus" and me["scopes"] == ["admin"]
    csrf = {"X-CSRF-Token": client.cookies.get("kiot_csrf")}
    patched = client.patch(
        f"/api/v1/staff/sensors/{a.sensor}", json={"is_public": True}, headers=csrf
    )
    assert patched.status_code == 200
    events = db.execute("SELECT action, actor_id, actor_name FROM audit_events ORDER BY id")
    assert events.fetchall() == [
        ("session.login", "aarhus-kombit:anna", "Anna"),
        ("sensor.update", "aarhus-kombit:anna", "Anna"),
    ]


def test_roles_granted_by_another_municipality_give_nothing_here(client, tenants, idps, db):
    """KOMBIT scopes each role to an organisation: an Odder role is no Aarhus role."""
    response, _, _ = sign_in(client, idps, groups={ODDER_CVR: [ADMIN_ROLE]})
    assert response.status_code == 403 and "roles" in response.json()["detail"]
    assert client.get("/api/v1/staff/me").status_code == 401
    reader, _, _ = sign_in(client, idps, groups={AARHUS_CVR: [READER_ROLE],
                                                 ODDER_CVR: [ADMIN_ROLE]})  # fmt: skip
    assert reader.status_code == 303
    assert client.get("/api/v1/staff/me").json()["scopes"] == ["read-private"]


def test_a_person_without_a_role_gets_no_session(client, tenants, idps, db):
    response, _, _ = sign_in(client, idps, groups={AARHUS_CVR: ["http://other/system/role"]})
    assert response.status_code == 403
    assert "kiot_session" not in response.headers.get("set-cookie", "")
    refused = db.execute("SELECT actor_id FROM audit_events WHERE action = 'session.refused'")
    assert refused.fetchall() == [("aarhus-kombit:anna",)]


def test_an_assertion_signed_by_another_key_is_refused(client, tenants, idps, db):
    """A forger who knows the IdP's entity ID but not its key."""
    response, _, _ = sign_in(client, idps, signer=idps["forger"])
    assert response.status_code == 401, response.text
    assert client.get("/api/v1/staff/me").status_code == 401


def test_an_assertion_of_another_municipalitys_idp_is_refused(client, tenants, idps, db):
    response, _, _ = sign_in(client, idps, signer=idps["odder"])
    assert response.status_code == 401, response.text


def test_a_tampered_assertion_is_refused(client, tenants, idps, db):
    request_id, relay_state = start(client, "aarhus-kombit", idps["aarhus"])
    signed = idps["aarhus"].respond(
        request_id, f"{BASE}/auth/saml/acs", saml.sp_entity_id(Settings(public_base_url=BASE)),
        "rasmus", attributes("Rasmus", {AARHUS_CVR: [READER_ROLE]}),
    )  # fmt: skip
    xml = base64.b64decode(signed).decode()
    assert READER_ROLE not in xml  # the roles travel base64-encoded in the profile
    tampered = xml.replace(
        privilege_profile({AARHUS_CVR: [READER_ROLE]}),
        privilege_profile({AARHUS_CVR: [ADMIN_ROLE]}),
    )
    assert tampered != xml
    response = post_assertion(client, relay_state, base64.b64encode(tampered.encode()).decode())
    assert response.status_code == 401, response.text


def test_an_expired_assertion_is_refused(client, tenants, idps, db):
    response, _, _ = sign_in(client, idps, lifetime_minutes=-10)
    assert response.status_code == 401, response.text


def test_a_replayed_or_unsolicited_assertion_is_refused(client, tenants, idps, db):
    first, relay_state, saml_response = sign_in(client, idps)
    assert first.status_code == 303
    client.cookies.clear()
    replayed = post_assertion(client, relay_state, saml_response)
    assert replayed.status_code == 400  # the sign-in it answered is over
    # An assertion answering one sign-in, posted to another one.
    _, relay_one = start(client, "aarhus-kombit", idps["aarhus"])
    this_browser = client.cookies.get("kiot_saml_login")
    other_id, _ = start(client, "aarhus-kombit", idps["aarhus"])
    client.cookies.clear()
    client.cookies.set("kiot_saml_login", this_browser)
    answer = idps["aarhus"].respond(
        other_id, f"{BASE}/auth/saml/acs", saml.sp_entity_id(Settings(public_base_url=BASE)),
        "anna", attributes("Anna", {AARHUS_CVR: [ADMIN_ROLE]}),
    )  # fmt: skip
    assert post_assertion(client, relay_one, answer).status_code == 401


def test_oiosaml_privilege_profiles_are_read_per_organisation() -> None:
    profile = privilege_profile({AARHUS_CVR: [ADMIN_ROLE, READER_ROLE], ODDER_CVR: ["x"]})
    assert saml.bpp_roles(profile, AARHUS_CVR) == [ADMIN_ROLE, READER_ROLE]
    assert saml.bpp_roles(profile, ODDER_CVR) == ["x"]
    assert saml.bpp_roles(profile, "12345678") == []
    assert saml.bpp_roles("not base64!", AARHUS_CVR) == []
    bomb = base64.b64encode(
        b'<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><x>&b;</x>'
    ).decode()
    assert saml.bpp_roles(bomb, AARHUS_CVR) == []  # entities are refused, not expanded


def test_without_a_service_provider_key_saml_is_simply_not_offered(database_url) -> None:
    with TestClient(create_app(Settings(database_url=database_url))) as plain:
        response = plain.get("/auth/saml/metadata")
    assert response.status_code == 404 and "IOT_SAML_SP_KEY_FILE" in response.json()["detail"]
