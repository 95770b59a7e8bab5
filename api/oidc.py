"""OpenID Connect sign-in (authorization code flow with PKCE) against a municipality's
identity provider, and mapping the person's claims to scopes.

A provider is a row of ``identity_providers`` (configured with ``python -m cli admin
add-oidc-provider``); its ``config`` holds:

* ``issuer``: the provider's issuer URL (its discovery document is
  ``<issuer>/.well-known/openid-configuration``);
* ``client_id`` and, for confidential clients, ``client_secret_env``: the name of the
  environment variable holding the secret (secrets stay out of the database);
* ``scopes``: requested scopes (default ``openid profile email``);
* ``roles_claim``: the claim listing the person's roles (default ``roles``) and
  ``role_scopes``: role -> kommune-iot scopes, e.g. ``{"IoT.Admin": ["admin"]}``;
* optionally ``municipality_claim`` and ``municipality_values``: a provider shared by
  several municipalities names the person's municipality in that claim, and only these
  values are let in;
* ``name_claim``: the display name's claim (default ``name``).

The municipality a person acts for is always the provider's: a token is checked against
the issuer, client and keys of the provider the sign-in started at, so a token of another
municipality's provider never verifies.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from api.auth import SCOPES

# Asymmetric signatures only: "none" and HMAC (keyed with the public client secret, or
# worse with a public key mistaken for one) are refused.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
CLOCK_LEEWAY_S = 60
METADATA_TTL_S = 3600.0
HTTP_TIMEOUT_S = 10.0


class SignInError(Exception):
    """The sign-in cannot go on; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ProviderConfig:
    id: int
    slug: str
    municipality_id: int
    display_name: str
    issuer: str
    client_id: str
    client_secret_env: str | None = None
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    roles_claim: str = "roles"
    role_scopes: dict[str, list[str]] = field(default_factory=dict)
    municipality_claim: str | None = None
    municipality_values: tuple[str, ...] = ()
    name_claim: str = "name"

    @classmethod
    def from_row(
        cls, id: int, slug: str, municipality_id: int, display_name: str, config: dict
    ) -> ProviderConfig:
        return cls(
            id=id,
            slug=slug,
            municipality_id=municipality_id,
            display_name=display_name,
            issuer=config["issuer"].rstrip("/"),
            client_id=config["client_id"],
            client_secret_env=config.get("client_secret_env"),
            scopes=tuple(config.get("scopes") or ("openid", "profile", "email")),
            roles_claim=config.get("roles_claim", "roles"),
            role_scopes=dict(config.get("role_scopes") or {}),
            municipality_claim=config.get("municipality_claim"),
            municipality_values=tuple(config.get("municipality_values") or ()),
            name_claim=config.get("name_claim", "name"),
        )

    def client_secret(self) -> str | None:
        if not self.client_secret_env:
            return None
        secret = os.environ.get(self.client_secret_env)
        if not secret:
            raise SignInError(
                503, f"the sign-in is not configured: {self.client_secret_env} is not set"
            )
        return secret


def validate_config(config: dict[str, Any]) -> None:
    """Raise ValueError naming what is wrong with a provider's `config`."""
    for required in ("issuer", "client_id"):
        if not isinstance(config.get(required), str) or not config[required]:
            raise ValueError(f"{required} is required")
    if not config["issuer"].startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ValueError("issuer must be an https:// URL")
    role_scopes = config.get("role_scopes")
    if not isinstance(role_scopes, dict) or not role_scopes:
        raise ValueError('role_scopes is required, e.g. {"IoT.Admin": ["admin"]}')
    for role, scopes in role_scopes.items():
        unknown = set(scopes) - SCOPES.keys()
        if not isinstance(scopes, list) or unknown:
            raise ValueError(f"role {role!r}: scopes must be a list of {sorted(SCOPES)}")


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class ProviderDirectory:
    """Discovery documents and signing keys of the providers, fetched and cached."""

    def __init__(self) -> None:
        self._metadata: dict[str, tuple[float, dict[str, Any]]] = {}
        self._keys: dict[str, jwt.PyJWKSet] = {}

    async def metadata(self, issuer: str) -> dict[str, Any]:
        cached = self._metadata.get(issuer)
        if cached and time.monotonic() - cached[0] < METADATA_TTL_S:
            return cached[1]
        document = await _get_json(f"{issuer}/.well-known/openid-configuration")
        if document.get("issuer", "").rstrip("/") != issuer:
            raise SignInError(502, "the identity provider's discovery names another issuer")
        self._metadata[issuer] = (time.monotonic(), document)
        return document

    async def signing_key(self, issuer: str, kid: str | None) -> jwt.PyJWK:
        """The provider's key `kid`; the key set is fetched again once for an unknown kid
        (the provider rotated its keys)."""
        for refresh in (False, True):
            if refresh or issuer not in self._keys:
                metadata = await self.metadata(issuer)
                self._keys[issuer] = jwt.PyJWKSet.from_dict(await _get_json(metadata["jwks_uri"]))
            keys = [k for k in self._keys[issuer].keys if kid is None or k.key_id == kid]
            if len(keys) == 1:
                return keys[0]
        raise SignInError(401, "the ID token is signed with a key the provider does not publish")


async def _get_json(url: str) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
            response = await client.get(url)
            response.raise_for_status()
            return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise SignInError(502, f"the identity provider cannot be reached: {exc}") from None


def authorization_url(
    metadata: dict[str, Any],
    provider: ProviderConfig,
    redirect_uri: str,
    state: str,
    nonce: str,
    code_challenge: str,
) -> str:
    query = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(provider.scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    return f"{metadata['authorization_endpoint']}?{urlencode(query)}"


async def exchange_code(
    metadata: dict[str, Any],
    provider: ProviderConfig,
    code: str,
    redirect_uri: str,
    code_verifier: str,
) -> str:
    """The ID token for `code`, from the provider's token endpoint."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
        "client_id": provider.client_id,
    }
    secret = provider.client_secret()
    auth = httpx.BasicAuth(provider.client_id, secret) if secret else None
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
            response = await client.post(metadata["token_endpoint"], data=form, auth=auth)
    except httpx.HTTPError as exc:
        raise SignInError(502, f"the identity provider cannot be reached: {exc}") from None
    if response.status_code != 200:
        raise SignInError(401, f"the identity provider refused the sign-in code: {response.text}")
    id_token = response.json().get("id_token")
    if not isinstance(id_token, str):
        raise SignInError(401, "the identity provider sent no ID token")
    return id_token


async def verify_id_token(
    directory: ProviderDirectory, provider: ProviderConfig, id_token: str, nonce: str
) -> dict[str, Any]:
    """The claims of `id_token` when the provider signed it for our client, it is current,
    and it answers this sign-in (`nonce`); SignInError(401) otherwise."""
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError:
        raise SignInError(401, "the ID token is malformed") from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise SignInError(401, f"the ID token's signature algorithm {algorithm!r} is refused")
    key = await directory.signing_key(provider.issuer, header.get("kid"))
    try:
        claims = jwt.decode(
            id_token,
            key=key.key,
            algorithms=[algorithm],
            audience=provider.client_id,
            issuer=[provider.issuer, provider.issuer + "/"],
            leeway=CLOCK_LEEWAY_S,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise SignInError(401, "the ID token has expired; sign in again") from None
    except jwt.PyJWTError as exc:
        raise SignInError(401, f"the ID token is not valid: {exc}") from None
    if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
        raise SignInError(401, "the ID token does not answer this sign-in (nonce)")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != provider.client_id:
        raise SignInError(401, "the ID token was issued to another client (azp)")
    return claims


def roles_of(claims: dict[str, Any], claim: str) -> list[str]:
    value = claims.get(claim)
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def scopes_for(provider: ProviderConfig, claims: dict[str, Any]) -> frozenset[str]:
    """The scopes the person's roles map to, after checking their municipality claim."""
    if provider.municipality_claim:
        said = claims.get(provider.municipality_claim)
        if said is None or str(said) not in provider.municipality_values:
            raise SignInError(
                403, "your account belongs to another municipality than this sign-in's"
            )
    roles = roles_of(claims, provider.roles_claim)
    scopes = {s for role in roles for s in provider.role_scopes.get(role, ())}
    if not scopes:
        raise SignInError(
            403,
            "you are signed in, but none of your roles gives access to kommune-iot; ask your "
            "IT department for a role",
        )
    return frozenset(scopes)
