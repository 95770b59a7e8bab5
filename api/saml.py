"""SAML 2.0 service provider for staff sign-in (KOMBIT Adgangsstyring, OIOSAML profile).

The API is one service provider: entity ID ``<IOT_PUBLIC_BASE_URL>/auth/saml/metadata``,
assertion consumer ``<IOT_PUBLIC_BASE_URL>/auth/saml/acs`` (HTTP-POST), signing its
authentication requests with the key pair in IOT_SAML_SP_KEY_FILE/IOT_SAML_SP_CERT_FILE.
``GET /auth/saml/metadata`` is what an administrator hands to KOMBIT (or another IdP).

A SAML provider is a row of ``identity_providers`` with kind ``saml``; its ``config``:

* ``idp_metadata_xml``: the identity provider's metadata (its signing certificate and
  single sign-on address), as published by the IdP;
* ``roles_attribute``: the attribute carrying the person's roles. With ``roles_format``
  ``oiosaml-bpp`` (KOMBIT's default) it is the OIOSAML Basic Privilege Profile, base64 XML
  of privilege groups, each scoped to an organisation (``urn:dk:gov:saml:
  cvrNumberIdentifier:<CVR>``) and listing the user-system roles ("brugersystemroller")
  granted there; only groups scoped to the provider's ``cvr`` count, so a role granted by
  another municipality is no role here. With ``plain`` the attribute's values are roles;
* ``role_scopes``: role (e.g. the brugersystemrolle's entity ID) -> kommune-iot scopes;
* ``name_attribute``: the display name's attribute (default ``urn:oid:2.5.4.3``, cn).

Assertions must be signed by the IdP's key from its metadata, addressed to this SP
(audience), current, and answer an authentication request this browser started.
"""

from __future__ import annotations

import base64
import binascii
import shutil
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import ParseError

from defusedxml.ElementTree import fromstring
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_PERSISTENT

from api.auth import SCOPES
from api.oidc import SignInError
from models.settings import Settings

BPP_NAMESPACE = "http://itst.dk/oiosaml/basic_privilege_profile"
CVR_SCOPE_PREFIX = "urn:dk:gov:saml:cvrNumberIdentifier:"
KOMBIT_PRIVILEGES = "dk:gov:saml:attribute:Privileges_intermediate"


@dataclass(frozen=True)
class SamlProviderConfig:
    id: int
    slug: str
    municipality_id: int
    display_name: str
    idp_metadata_xml: str
    roles_attribute: str = KOMBIT_PRIVILEGES
    roles_format: str = "oiosaml-bpp"
    cvr: str | None = None
    role_scopes: dict[str, list[str]] = field(default_factory=dict)
    name_attribute: str = "urn:oid:2.5.4.3"

    @classmethod
    def from_row(
        cls, id: int, slug: str, municipality_id: int, display_name: str, config: dict
    ) -> SamlProviderConfig:
        return cls(
            id=id,
            slug=slug,
            municipality_id=municipality_id,
            display_name=display_name,
            idp_metadata_xml=config["idp_metadata_xml"],
            roles_attribute=config.get("roles_attribute", KOMBIT_PRIVILEGES),
            roles_format=config.get("roles_format", "oiosaml-bpp"),
            cvr=config.get("cvr"),
            role_scopes=dict(config.get("role_scopes") or {}),
            name_attribute=config.get("name_attribute", "urn:oid:2.5.4.3"),
        )


def validate_config(config: dict[str, Any]) -> None:
    """Raise ValueError naming what is wrong with a SAML provider's `config`."""
    metadata = config.get("idp_metadata_xml")
    if not isinstance(metadata, str) or "EntityDescriptor" not in metadata:
        raise ValueError("idp_metadata_xml must be the identity provider's metadata XML")
    if config.get("roles_format", "oiosaml-bpp") not in ("oiosaml-bpp", "plain"):
        raise ValueError("roles_format must be oiosaml-bpp or plain")
    if config.get("roles_format", "oiosaml-bpp") == "oiosaml-bpp" and not config.get("cvr"):
        raise ValueError("cvr (the municipality's CVR number) is required for oiosaml-bpp roles")
    role_scopes = config.get("role_scopes")
    if not isinstance(role_scopes, dict) or not role_scopes:
        raise ValueError("role_scopes is required")
    for role, scopes in role_scopes.items():
        if not isinstance(scopes, list) or set(scopes) - SCOPES.keys():
            raise ValueError(f"role {role!r}: scopes must be a list of {sorted(SCOPES)}")


def sp_entity_id(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/") + "/auth/saml/metadata"


def acs_url(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/") + "/auth/saml/acs"


def _sp_config(settings: Settings, idp_metadata_xml: str | None) -> SPConfig:
    if not settings.saml_sp_key_file or not settings.saml_sp_cert_file:
        raise SignInError(
            404,
            "SAML sign-in is not configured on this server (IOT_SAML_SP_KEY_FILE and "
            "IOT_SAML_SP_CERT_FILE are unset)",
        )
    xmlsec = shutil.which("xmlsec1")
    if xmlsec is None:
        raise SignInError(503, "SAML sign-in needs the xmlsec1 program (Debian: xmlsec1)")
    config: dict[str, Any] = {
        "entityid": sp_entity_id(settings),
        "xmlsec_binary": xmlsec,
        "key_file": settings.saml_sp_key_file,
        "cert_file": settings.saml_sp_cert_file,
        "encryption_keypairs": [
            {"key_file": settings.saml_sp_key_file, "cert_file": settings.saml_sp_cert_file}
        ],
        "allow_unknown_attributes": True,
        "service": {
            "sp": {
                "endpoints": {
                    "assertion_consumer_service": [(acs_url(settings), BINDING_HTTP_POST)]
                },
                "authn_requests_signed": True,
                "want_assertions_signed": True,
                "want_response_signed": False,
                "allow_unsolicited": False,
                "name_id_format": NAMEID_FORMAT_PERSISTENT,
            }
        },
    }
    if idp_metadata_xml:
        config["metadata"] = {"inline": [idp_metadata_xml]}
    sp_config = SPConfig()
    sp_config.load(config)
    return sp_config


def sp_metadata(settings: Settings) -> str:
    """The service provider's metadata XML, to hand to the identity provider."""
    xml = create_metadata_string(None, config=_sp_config(settings, None), valid=24 * 365)
    return xml.decode() if isinstance(xml, bytes) else xml


def _client(settings: Settings, provider: SamlProviderConfig) -> Saml2Client:
    return Saml2Client(config=_sp_config(settings, provider.idp_metadata_xml))


def start_sign_in(
    settings: Settings, provider: SamlProviderConfig, relay_state: str
) -> tuple[str, str]:
    """(request id, URL of the IdP with the signed AuthnRequest) for a new sign-in."""
    client = _client(settings, provider)
    idps = list(client.metadata.identity_providers())
    if len(idps) != 1:
        raise SignInError(503, "the provider's metadata must describe one identity provider")
    request_id, info = client.prepare_for_authenticate(
        entityid=idps[0], relay_state=relay_state, binding=BINDING_HTTP_REDIRECT
    )
    location = dict(info["headers"])["Location"]
    return request_id, location


@dataclass(frozen=True)
class SamlPerson:
    subject: str
    name: str
    email: str | None
    attributes: dict[str, list[str]]


def finish_sign_in(
    settings: Settings, provider: SamlProviderConfig, saml_response: str, request_id: str
) -> SamlPerson:
    """The person of a signed, current assertion answering `request_id`; SignInError(401)
    for anything else (unsigned, signed by another key, tampered, expired, unsolicited,
    for another service provider)."""
    client = _client(settings, provider)
    try:
        response = client.parse_authn_request_response(
            saml_response, BINDING_HTTP_POST, outstanding={request_id: "/"}
        )
    except Exception as exc:  # pysaml2 raises many types; every one is a refusal
        raise SignInError(401, f"the SAML response was refused: {type(exc).__name__}") from None
    if response is None or response.assertion is None:
        raise SignInError(401, "the SAML response holds no assertion")
    attributes = {k: [str(v) for v in vs] for k, vs in (response.ava or {}).items()}
    subject = str(response.name_id.text) if response.name_id is not None else ""
    if not subject:
        raise SignInError(401, "the SAML assertion names nobody")
    names = attributes.get(provider.name_attribute) or [subject]
    emails = attributes.get("urn:oid:0.9.2342.19200300.100.1.3") or attributes.get("email")
    return SamlPerson(subject, names[0], emails[0] if emails else None, attributes)


def roles_of(provider: SamlProviderConfig, attributes: dict[str, list[str]]) -> list[str]:
    values = attributes.get(provider.roles_attribute, [])
    if provider.roles_format == "plain":
        return values
    roles: list[str] = []
    for value in values:
        roles += bpp_roles(value, provider.cvr or "")
    return roles


def bpp_roles(encoded: str, cvr: str) -> list[str]:
    """The privileges of an OIOSAML Basic Privilege Profile granted in organisation `cvr`."""
    try:
        document = fromstring(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ParseError, ValueError):
        return []
    roles = []
    for group in document.iter():
        if group.tag.rsplit("}", 1)[-1] != "PrivilegeGroup":
            continue
        if group.get("Scope") != CVR_SCOPE_PREFIX + cvr:
            continue
        roles += [
            (p.text or "").strip()
            for p in group
            if p.tag.rsplit("}", 1)[-1] == "Privilege" and (p.text or "").strip()
        ]
    return roles


def scopes_for(provider: SamlProviderConfig, attributes: dict[str, list[str]]) -> frozenset[str]:
    roles = roles_of(provider, attributes)
    scopes = {s for role in roles for s in provider.role_scopes.get(role, ())}
    if not scopes:
        raise SignInError(
            403,
            "you are signed in, but none of your roles (brugersystemroller) in this "
            "municipality gives access to kommune-iot; ask your IT department for a role",
        )
    return frozenset(scopes)
