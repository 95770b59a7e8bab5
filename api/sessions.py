"""Staff sessions after single sign-on: cookies, sliding expiry, CSRF tokens.

A session is two random 256-bit values handed to the browser: the session token in an
HttpOnly cookie (script cannot read it) and a CSRF token in a cookie the dashboard reads
and sends back as ``X-CSRF-Token`` on every write. Both cookies are Secure and
SameSite=Strict. Only SHA-256 hashes of the two are stored. A session ends after
IOT_SESSION_IDLE_MINUTES without a request (each request refreshes it) and at the latest
IOT_SESSION_MAX_HOURS after sign-in, or at sign-out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Response
from psycopg import AsyncConnection

from api.auth import Principal
from models.settings import Settings

SESSION_COOKIE = "kiot_session"
CSRF_COOKIE = "kiot_csrf"
CSRF_HEADER = "x-csrf-token"
# Methods that change nothing: no CSRF token needed.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class NewSession:
    session_id: int
    token: str
    csrf_token: str


@dataclass(frozen=True, slots=True)
class Person:
    """Who signed in, as the identity provider said, with the scopes their roles map to."""

    provider_id: int
    provider_slug: str
    municipality_id: int
    subject: str
    name: str
    email: str | None
    scopes: frozenset[str]


async def create_session(conn: AsyncConnection, person: Person, settings: Settings) -> NewSession:
    """Store a session for `person`; its tokens are handed out only now."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    cur = await conn.execute(
        "INSERT INTO staff_sessions (token_hash, csrf_hash, municipality_id, provider_id, "
        "subject, name, email, scopes, idle_expires_at, expires_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + %s, now() + %s) RETURNING id",
        (
            token_hash(token),
            token_hash(csrf),
            person.municipality_id,
            person.provider_id,
            person.subject,
            person.name,
            person.email,
            sorted(person.scopes),
            timedelta(minutes=settings.session_idle_minutes),
            timedelta(hours=settings.session_max_hours),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return NewSession(row[0], token, csrf)


async def authenticate_session(
    conn: AsyncConnection, token: str, settings: Settings
) -> tuple[Principal, bytes] | None:
    """The principal of a live session and its CSRF hash, refreshing its idle expiry; None
    when the session is unknown, signed out, idle too long or past its maximum age."""
    cur = await conn.execute(
        "UPDATE staff_sessions s SET idle_expires_at = least(s.expires_at, now() + %s) "
        "FROM municipalities m, identity_providers p "
        "WHERE s.token_hash = %s AND m.id = s.municipality_id AND p.id = s.provider_id "
        "AND p.enabled AND s.revoked_at IS NULL AND s.idle_expires_at > now() "
        "AND s.expires_at > now() "
        "RETURNING s.id, s.municipality_id, m.slug, s.scopes, p.slug, s.subject, s.name, "
        "s.csrf_hash",
        (timedelta(minutes=settings.session_idle_minutes), token_hash(token)),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    session_id, municipality_id, slug, scopes, provider, subject, name, csrf_hash = row
    principal = Principal(
        key_id=None,
        municipality_id=municipality_id,
        municipality_slug=slug,
        scopes=frozenset(scopes),
        actor_kind="person",
        actor_id=f"{provider}:{subject}",
        actor_name=name,
        session_id=session_id,
    )
    return principal, bytes(csrf_hash)


def csrf_matches(csrf_hash: bytes, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(csrf_hash, token_hash(sent or ""))


async def end_session(conn: AsyncConnection, session_id: int) -> bool:
    """Sign out: the session's cookie is refused from now on."""
    cur = await conn.execute(
        "UPDATE staff_sessions SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
        (session_id,),
    )
    return cur.rowcount == 1


def set_session_cookies(response: Response, session: NewSession, settings: Settings) -> None:
    max_age = int(settings.session_max_hours * 3600)
    common = {"secure": settings.session_cookie_secure, "samesite": "strict", "path": "/"}
    response.set_cookie(SESSION_COOKIE, session.token, max_age=max_age, httponly=True, **common)
    # Readable by the dashboard's script, which echoes it in X-CSRF-Token; another site
    # can neither read it nor make the browser send it (SameSite=Strict).
    response.set_cookie(CSRF_COOKIE, session.csrf_token, max_age=max_age, **common)


def clear_session_cookies(response: Response, settings: Settings) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(
            name, path="/", secure=settings.session_cookie_secure, samesite="strict"
        )
