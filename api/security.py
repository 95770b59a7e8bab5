"""Staff authentication: `require_scope(scope)` turns an API key into a Principal.

The key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Missing or
refused keys answer 401; a key without the scope answers 403 naming it; a client that
failed too often recently answers 429 with Retry-After (api.auth.FailureLimiter), counted
per client address (api.client_address: a trusted proxy's forwarded address) and key prefix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.auth import SCOPES, FailureLimiter, Principal, authenticate, key_prefix
from api.client_address import client_address, parse_networks
from api.deps import Conn

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


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting keys that carry `scope` (admin carries every scope)."""
    if scope not in SCOPES:
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
        if not token:
            raise HTTPException(
                401, "an API key is required: send 'Authorization: Bearer <key>'", _CHALLENGE
            )
        principal = await authenticate(conn, token)
        if principal is None:
            limiter.record_failure(client, prefix)
            raise HTTPException(401, "the API key is unknown, expired or revoked", _CHALLENGE)
        if not principal.has(scope):
            raise HTTPException(403, f"this API key lacks the '{scope}' scope")
        return principal

    return dependency


ReadPrivate = Annotated[Principal, Depends(require_scope("read-private"))]
WriteSensors = Annotated[Principal, Depends(require_scope("write-sensors"))]
ManageAlerts = Annotated[Principal, Depends(require_scope("manage-alerts"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]
