"""Identity providers as the sign-in reads them."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from api.oidc import ProviderConfig

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
        "SELECT p.slug, p.display_name, m.slug, m.name FROM identity_providers p "
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
            "login_url": f"/auth/login/{slug}",
        }
        for slug, name, m_slug, m_name in await cur.fetchall()
    ]
