"""Staff single sign-on: OpenID Connect login, callback, session and logout (docs/staff.md).

``GET /auth/login/{provider}`` sends the browser to the municipality's identity provider
with a fresh state, nonce and PKCE challenge, bound to the browser by a short-lived
cookie; ``GET /auth/callback`` checks all of them, exchanges the code, verifies the ID
token, maps the roles to scopes and starts a session (api/sessions.py). Sign-in and
sign-out are in the audit trail; so are refused sign-ins of people the provider knows.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from api import audit, oidc
from api.audit import Actor, AuditContext, audited
from api.client_address import client_address, parse_networks
from api.deps import AppSettings, Conn
from api.queries import identity
from api.security import SignedIn
from api.sessions import (
    Person,
    clear_session_cookies,
    create_session,
    end_session,
    set_session_cookies,
)
from models.schemas import ErrorOut

router = APIRouter(
    prefix="/auth",
    tags=["staff sign-in"],
    responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404, 502, 503)},
)

LOGIN_COOKIE = "kiot_login"
LOGIN_TIMEOUT_S = 600
ProviderSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


def _directory(request: Request) -> oidc.ProviderDirectory:
    state = request.app.state
    if not hasattr(state, "oidc_directory"):
        state.oidc_directory = oidc.ProviderDirectory()
    return state.oidc_directory


def _redirect_uri(request: Request) -> str:
    return request.app.state.settings.public_base_url.rstrip("/") + "/auth/callback"


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@router.get("/providers", summary="The identity providers staff can sign in with")
async def list_providers(
    conn: Conn,
    municipality: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] = None,
) -> list[dict[str, Any]]:
    return await identity.list_providers(conn, municipality)


@router.get("/login/{provider}", status_code=302, summary="Sign in at a provider")
async def login(
    request: Request, conn: Conn, settings: AppSettings, provider: ProviderSlug
) -> RedirectResponse:
    config = await identity.provider_by_slug(conn, provider)
    if config is None:
        raise HTTPException(404, f"no identity provider '{provider}'")
    try:
        metadata = await _directory(request).metadata(config.issuer)
    except oidc.SignInError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    state, nonce, browser = (secrets.token_urlsafe(32) for _ in range(3))
    verifier, challenge = oidc.pkce_pair()
    await identity.store_login_state(
        conn, _hash(state), config.id, config.municipality_id, _hash(browser), nonce, verifier
    )
    url = oidc.authorization_url(metadata, config, _redirect_uri(request), state, nonce, challenge)
    response = RedirectResponse(url, status_code=302)
    # Lax: the provider's redirect back is a top-level cross-site navigation.
    response.set_cookie(
        LOGIN_COOKIE,
        browser,
        max_age=LOGIN_TIMEOUT_S,
        httponly=True,
        secure=settings.session_cookie_secure,
        samesite="lax",
        path="/auth/callback",
    )
    return response


def client_of(request: Request) -> str | None:
    state = request.app.state
    if not hasattr(state, "trusted_proxies"):
        state.trusted_proxies = parse_networks(state.settings.trusted_proxies)
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"), state.trusted_proxies)


@router.get("/callback", summary="Where the identity provider sends the browser back")
async def callback(
    request: Request,
    conn: Conn,
    settings: AppSettings,
    state: Annotated[str | None, Query(max_length=200)] = None,
    code: Annotated[str | None, Query(max_length=4000)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
    error_description: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    if error:
        raise HTTPException(401, f"the identity provider refused: {error} {error_description}")
    if not state or not code:
        raise HTTPException(400, "query parameters 'state' and 'code' are required")
    found = await identity.take_login_state(conn, _hash(state), LOGIN_TIMEOUT_S)
    browser = request.cookies.get(LOGIN_COOKIE, "")
    if found is None or not secrets.compare_digest(found.browser_hash, _hash(browser)):
        raise HTTPException(
            400, "query parameter 'state': unknown, used, or started in another browser"
        )
    if not found.fresh:
        raise HTTPException(400, "the sign-in took too long; start again")
    provider_id, nonce, verifier = found.provider_id, found.nonce, found.code_verifier
    config = await identity.provider_by_id(conn, provider_id)
    if config is None:
        raise HTTPException(400, "the identity provider was disabled meanwhile")
    directory = _directory(request)
    try:
        metadata = await directory.metadata(config.issuer)
        id_token = await oidc.exchange_code(
            metadata, config, code, _redirect_uri(request), verifier
        )
        claims = await oidc.verify_id_token(directory, config, id_token, nonce)
    except oidc.SignInError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    name = str(claims.get(config.name_claim) or claims.get("email") or claims["sub"])
    actor = Actor("person", f"{config.slug}:{claims['sub']}", name, config.municipality_id)
    context = AuditContext(
        action="session.login",
        method=request.method,
        path=request.url.path,
        request_id=secrets.token_hex(16),
        client=client_of(request),
        actor=actor,
    )
    request.state.audit = context
    try:
        scopes = oidc.scopes_for(config, claims)
    except oidc.SignInError as exc:
        context.action = "session.refused"
        await audit.record_event(
            request,
            context,
            {"reason": str(exc), "roles": oidc.roles_of(claims, config.roles_claim)},
        )
        raise HTTPException(exc.status, str(exc)) from None
    person = Person(
        provider_id=config.id,
        provider_slug=config.slug,
        municipality_id=config.municipality_id,
        subject=str(claims["sub"]),
        name=name,
        email=claims.get("email"),
        scopes=scopes,
    )
    await audit.attach_async(request, conn)
    try:
        session = await create_session(conn, person, settings)
    finally:
        await audit.detach_async(request, conn)
    response = RedirectResponse("/", status_code=303)
    set_session_cookies(response, session, settings)
    response.delete_cookie(LOGIN_COOKIE, path="/auth/callback")
    return response


@router.get("/session", summary="Who is signed in with this browser's session")
async def current_session(principal: SignedIn, conn: Conn) -> dict[str, Any]:
    return {
        "name": principal.actor_name,
        "actor_id": principal.actor_id,
        "municipality_id": principal.municipality_id,
        "municipality_slug": principal.municipality_slug,
        "scopes": sorted(principal.scopes),
    }


@router.post(
    "/logout", summary="Sign out: the session ends", dependencies=[audited("session.logout")]
)
async def logout(principal: SignedIn, conn: Conn, settings: AppSettings) -> JSONResponse:
    if principal.session_id is None:
        raise HTTPException(400, "API keys do not sign out; revoke the key instead")
    await end_session(conn, principal.session_id)
    response = JSONResponse({"signed_out": True})
    clear_session_cookies(response, settings)
    return response
