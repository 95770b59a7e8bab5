"""Staff authentication: `require_scope(scope)` turns an API key or a signed-in person's
session cookie (api/sessions.py) into a Principal, and names it as the actor of the
request's audit context (api/audit.py).

The key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; without one, the
session cookie is used, and a write with it must carry the CSRF token. Missing or
refused keys answer 401; a key without the scope answers 403 naming it; a client that
failed too often recently answers 429 with Retry-After (api.auth.FailureLimiter), counted
per client address (api.client_address: a trusted proxy's forwarded address) and key prefix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from psycopg import AsyncConnection

from api import audit
from api.audit import Actor
from api.auth import SCOPES, FailureLimiter, Principal, authenticate, key_prefix
from api.client_address import client_address, parse_networks
from api.deps import Conn
from api.sessions import (
    CSRF_HEADER,
    SAFE_METHODS,
    SESSION_COOKIE,
    authenticate_session,
    csrf_matches,
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="kommune-iot staff"'}


def _limiter(request: Request) -> FailureLimiter:
    state = request.app.state
    if not hasattr(state, "auth_failures"):
        state.auth_failures = FailureLimiter()
    return state.auth_failures


def _client(request: Request) -> str:
    state = request.app.state
    if not hasattr(state, "trusted_proxies"):
        state.trusted_proxies = parse_networks(state.settings.trusted_proxies)
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"), state.trusted_proxies)


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def require_scope(scope: str | None) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting keys and sessions that carry `scope` (admin carries every
    scope); None admits any valid key or session."""
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request, conn: Conn) -> Principal:
        limiter = _limiter(request)
        client = _client(request)
        token = _token(request)
        prefix = key_prefix(token)
        wait_s = limiter.blocked_for_s(client, prefix)
        if wait_s:
            raise HTTPException(
                429,
                "too many refused API keys from this address; wait and retry",
                headers={"Retry-After": str(int(wait_s) + 1)},
            )
        session = request.cookies.get(SESSION_COOKIE)
        if not token and session:
            principal = await _session_principal(request, conn, session)
            if scope is not None and not principal.has(scope):
                raise HTTPException(
                    403, f"your roles do not grant the '{scope}' scope; ask your IT department"
                )
            await audit.bind_actor(request, _actor(principal), client)
            return principal
        if not token:
            raise HTTPException(
                401,
                "an API key is required: send 'Authorization: Bearer <key>', or sign in",
                _CHALLENGE,
            )
        principal = await authenticate(conn, token)
        if principal is None:
            limiter.record_failure(client, prefix)
            raise HTTPException(401, "the API key is unknown, expired or revoked", _CHALLENGE)
        if scope is not None and not principal.has(scope):
            raise HTTPException(403, f"this API key lacks the '{scope}' scope")
        await audit.bind_actor(request, _actor(principal), client)
        return principal

    return dependency


async def _session_principal(request: Request, conn: AsyncConnection, token: str) -> Principal:
    """The signed-in person of the session cookie; writes must echo the CSRF token."""
    found = await authenticate_session(conn, token, request.app.state.settings)
    if found is None:
        raise HTTPException(401, "your session has ended; sign in again", _CHALLENGE)
    principal, csrf_hash = found
    if request.method not in SAFE_METHODS and not csrf_matches(
        csrf_hash, request.headers.get(CSRF_HEADER)
    ):
        raise HTTPException(
            403, "header 'X-CSRF-Token' is missing or wrong: send the kiot_csrf cookie's value"
        )
    return principal


def _actor(principal: Principal) -> Actor:
    return Actor(
        kind=principal.actor_kind,
        id=principal.actor_id,
        name=principal.actor_name,
        municipality_id=principal.municipality_id,
    )


ReadPrivate = Annotated[Principal, Depends(require_scope("read-private"))]
WriteSensors = Annotated[Principal, Depends(require_scope("write-sensors"))]
ManageAlerts = Annotated[Principal, Depends(require_scope("manage-alerts"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]
SignedIn = Annotated[Principal, Depends(require_scope(None))]
