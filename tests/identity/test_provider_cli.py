"""Configuring identity providers with the admin CLI, as docs/staff.md tells a newcomer to."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.identity.saml_idp import start_saml_idp


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", "admin", *args],
        env={"IOT_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_oidc_providers_are_added_listed_and_disabled(db: psycopg.Connection, database_url):
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('aarhus', 'Aarhus Kommune')")
    base = ["add-oidc-provider", "--municipality", "aarhus", "--slug", "aarhus-entra",
            "--name", "Aarhus (Entra ID)", "--client-id", "c1"]  # fmt: skip
    issuer = ["--issuer", "https://login.microsoftonline.com/tenant/v2.0"]
    roles = ["--role-scopes", json.dumps({"IoT.Admin": ["admin"]})]
    insecure = _cli(database_url, *base, "--issuer", "http://evil.example", *roles)
    assert insecure.returncode != 0 and "https" in insecure.stderr
    unknown_scope = _cli(database_url, *base, *issuer, "--role-scopes", '{"x": ["root"]}')
    assert unknown_scope.returncode != 0 and "scopes" in unknown_scope.stderr
    added = _cli(database_url, *base, *issuer, *roles, "--client-secret-env", "IOT_OIDC_AARHUS")
    assert added.returncode == 0, added.stderr
    assert "/auth/callback" in added.stdout
    again = _cli(database_url, *base, *issuer, *roles)
    assert again.returncode != 0 and "exists" in again.stderr
    config = db.execute("SELECT config FROM identity_providers").fetchone()[0]
    assert config["client_secret_env"] == "IOT_OIDC_AARHUS" and "client_secret" not in config
    listed = _cli(database_url, "list-providers").stdout
    assert "aarhus-entra\taarhus\toidc\tenabled" in listed
    assert _cli(database_url, "disable-provider", "aarhus-entra").returncode == 0
    assert "disabled" in _cli(database_url, "list-providers").stdout


@pytest.mark.skipif(shutil.which("xmlsec1") is None, reason="xmlsec1 is not installed")
def test_a_saml_provider_is_added_from_the_idps_metadata(db, database_url, tmp_path: Path):
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('odder', 'Odder Kommune')")
    idp = start_saml_idp(tmp_path, "kombit", _minimal_sp_metadata())
    metadata_file = tmp_path / "idp.xml"
    metadata_file.write_text(idp.metadata_xml)
    base = ["add-saml-provider", "--municipality", "odder", "--slug", "odder-kombit",
            "--name", "KOMBIT", "--idp-metadata", str(metadata_file),
            "--role-scopes", '{"http://roles/admin": ["admin"]}']  # fmt: skip
    no_cvr = _cli(database_url, *base)
    assert no_cvr.returncode != 0 and "cvr" in no_cvr.stderr
    added = _cli(database_url, *base, "--cvr", "32264328")
    assert added.returncode == 0, added.stderr
    assert "/auth/saml/metadata" in added.stdout
    kind, config = db.execute("SELECT kind, config FROM identity_providers").fetchone()
    assert kind == "saml" and config["cvr"] == "32264328"
    assert config["idp_metadata_xml"] == idp.metadata_xml


def _minimal_sp_metadata() -> str:
    return (
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        'entityID="https://sp.test/auth/saml/metadata"><md:SPSSODescriptor '
        'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        '<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" '
        'Location="https://sp.test/auth/saml/acs" index="1"/></md:SPSSODescriptor>'
        "</md:EntityDescriptor>"
    )
