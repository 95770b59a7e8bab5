"""Identity providers as the sign-in reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from api.oidc import ProviderConfig
from api.saml import SamlProviderConfig

_PROVIDER = (
    "SELECT id, slug, municipality_id, display_name, config FROM identity_providers "
    "WHERE enabled AND kind = 'oidc' "
)


async def provider_by_slug(conn: AsyncConnection, slug: str) -> ProviderConfig | None:
    cur = await conn.execute(_PROVIDER + "AND slug = %s", (slug,))
    row = await cur.fetchone()
    return ProviderConfig.from_row(*row) if row else None


async def provider_by_id(conn: AsyncConnection, provider_id: int) -> ProviderConfig | None:
    cur = await conn.execute(_PROVIDER + "AND id = %s", (provider_id,))
    row = await cur.fetchone()
    return ProviderConfig.from_row(*row) if row else None


async def list_providers(conn: AsyncConnection, municipality: str | None) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT p.slug, p.display_name, m.slug, m.name, p.kind FROM identity_providers p "
        "JOIN municipalities m ON m.id = p.municipality_id "
        "WHERE p.enabled AND (%s::text IS NULL OR m.slug = %s) ORDER BY m.name, p.display_name",
        (municipality, municipality),
    )
    return [
        {
            "slug": slug,
            "display_name": name,
            "municipality": m_slug,
            "municipality_name": m_name,
            "kind": kind,
            "login_url": f"/auth/saml/login/{slug}" if kind == "saml" else f"/auth/login/{slug}",
        }
        for slug, name, m_slug, m_name, kind in await cur.fetchall()
    ]


async def provider_kind(conn: AsyncConnection, slug: str) -> str | None:
    """'oidc' or 'saml' for an enabled provider named `slug`; None when there is none."""
    cur = await conn.execute(
        "SELECT kind FROM identity_providers WHERE enabled AND slug = %s", (slug,)
    )
    row = await cur.fetchone()
    return row[0] if row else None


_SAML_PROVIDER = (
    "SELECT id, slug, municipality_id, display_name, config FROM identity_providers "
    "WHERE enabled AND kind = 'saml' "
)


async def saml_provider_by_slug(conn: AsyncConnection, slug: str) -> SamlProviderConfig | None:
    cur = await conn.execute(_SAML_PROVIDER + "AND slug = %s", (slug,))
    row = await cur.fetchone()
    return SamlProviderConfig.from_row(*row) if row else None


async def saml_provider_by_id(conn: AsyncConnection, provider_id: int) -> SamlProviderConfig | None:
    cur = await conn.execute(_SAML_PROVIDER + "AND id = %s", (provider_id,))
    row = await cur.fetchone()
    return SamlProviderConfig.from_row(*row) if row else None


@dataclass(frozen=True, slots=True)
class LoginState:
    provider_id: int
    browser_hash: bytes
    nonce: str  # OIDC nonce, or the SAML AuthnRequest's id
    code_verifier: str
    fresh: bool


async def store_login_state(
    conn: AsyncConnection,
    state_hash: bytes,
    provider_id: int,
    municipality_id: int,
    browser_hash: bytes,
    nonce: str,
    code_verifier: str,
) -> None:
    await conn.execute(
        "INSERT INTO login_states (state_hash, provider_id, municipality_id, browser_hash, "
        "nonce, code_verifier) VALUES (%s, %s, %s, %s, %s, %s)",
        (state_hash, provider_id, municipality_id, browser_hash, nonce, code_verifier),
    )


async def take_login_state(
    conn: AsyncConnection, state_hash: bytes, timeout_s: int
) -> LoginState | None:
    """The sign-in under way with this state, consumed (a state works once)."""
    cur = await conn.execute(
        "DELETE FROM login_states WHERE state_hash = %s "
        "RETURNING provider_id, browser_hash, nonce, code_verifier, "
        "created_at > now() - make_interval(secs => %s)",
        (state_hash, timeout_s),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return LoginState(row[0], bytes(row[1]), row[2], row[3], row[4])
