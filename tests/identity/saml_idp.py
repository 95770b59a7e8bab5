"""A real SAML 2.0 identity provider for the tests, built with pysaml2's IdP (saml2.server):
it reads our service provider's metadata, parses the signed AuthnRequest the API sends,
and issues signed assertions with OIOSAML/KOMBIT-style attributes, as KOMBIT
Adgangsstyring does (a privilege profile of "brugersystemroller" scoped to a CVR number).
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.assertion import Policy
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server

PRIVILEGES = "dk:gov:saml:attribute:Privileges_intermediate"
PASSWORD = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


def write_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed RSA certificate and its key as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = directory / f"{name}.key", directory / f"{name}.crt"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def privilege_profile(groups: dict[str, list[str]]) -> str:
    """OIOSAML Basic Privilege Profile, base64: CVR number -> privileges granted there."""
    body = "".join(
        f'<PrivilegeGroup Scope="urn:dk:gov:saml:cvrNumberIdentifier:{cvr}">'
        + "".join(f"<Privilege>{p}</Privilege>" for p in privileges)
        + "</PrivilegeGroup>"
        for cvr, privileges in groups.items()
    )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><bpp:PrivilegeList '
        f'xmlns:bpp="http://itst.dk/oiosaml/basic_privilege_profile">{body}</bpp:PrivilegeList>'
    )
    return base64.b64encode(xml.encode()).decode()


@dataclass
class SamlIdentityProvider:
    entity_id: str
    sso_url: str
    server: Server
    metadata_xml: str

    def parse_request(self, saml_request: str):
        return self.server.parse_authn_request(saml_request, BINDING_HTTP_REDIRECT)

    def respond(
        self,
        request_id: str,
        acs_url: str,
        sp_entity_id: str,
        subject: str,
        attributes: dict[str, list[str]],
        lifetime_minutes: int = 5,
    ) -> str:
        """A signed SAML response (base64, as the HTTP-POST binding carries it)."""
        policy = Policy(
            {"default": {"lifetime": {"minutes": lifetime_minutes}, "name_form": NAME_FORMAT_URI,
                         "attribute_restrictions": None}},
            self.server.metadata,
        )  # fmt: skip
        response = self.server.create_authn_response(
            attributes,
            in_response_to=request_id,
            destination=acs_url,
            sp_entity_id=sp_entity_id,
            name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=subject),
            authn={"class_ref": PASSWORD, "authn_auth": self.entity_id},
            sign_assertion=True,
            sign_response=False,
            release_policy=policy,
        )
        return base64.b64encode(str(response).encode()).decode()


def start_saml_idp(
    workdir: Path, name: str, sp_metadata_xml: str, entity_id: str | None = None
) -> SamlIdentityProvider:
    key_file, cert_file = write_key_pair(workdir, f"idp-{name}")
    entity_id = entity_id or f"https://idp.{name}.test/saml"
    sso_url = f"https://idp.{name}.test/sso"
    sp_metadata = workdir / f"sp-for-{name}.xml"
    sp_metadata.write_text(sp_metadata_xml)
    config = IdPConfig()
    config.load(
        {
            "entityid": entity_id,
            "xmlsec_binary": shutil.which("xmlsec1"),
            "key_file": str(key_file),
            "cert_file": str(cert_file),
            "metadata": {"local": [str(sp_metadata)]},
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [
                            (sso_url, BINDING_HTTP_REDIRECT),
                            (sso_url, BINDING_HTTP_POST),
                        ]
                    },
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                    "policy": {"default": {"lifetime": {"minutes": 5},
                                           "name_form": NAME_FORMAT_URI}},
                }
            },
        }
    )  # fmt: skip
    server = Server(config=config)
    metadata_xml = create_metadata_string(None, config=config, valid=24)
    if isinstance(metadata_xml, bytes):
        metadata_xml = metadata_xml.decode()
    return SamlIdentityProvider(entity_id, sso_url, server, metadata_xml)
