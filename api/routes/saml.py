"""Staff sign-in with SAML 2.0 (KOMBIT Adgangsstyring and other OIOSAML identity
providers): service-provider metadata, login and the assertion consumer (api/saml.py)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Path, Request
from fastapi.responses import RedirectResponse, Response

from api import audit, saml
from api.audit import Actor, audited
from api.deps import AppSettings, Conn
from api.oidc import SignInError
from api.queries import identity
from api.routes.auth import LOGIN_TIMEOUT_S, client_of
from api.sessions import Person, create_session, set_session_cookies
from models.schemas import ErrorOut

router = APIRouter(
    prefix="/auth/saml",
    tags=["staff sign-in"],
    responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404, 503)},
)

SAML_LOGIN_COOKIE = "kiot_saml_login"
ProviderSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@router.get(
    "/metadata",
    summary="The service provider's SAML metadata, to register at the identity provider",
    response_class=Response,
    responses={200: {"content": {"application/samlmetadata+xml": {}}}},
)
async def metadata(settings: AppSettings) -> Response:
    try:
        xml = await asyncio.to_thread(saml.sp_metadata, settings)
    except SignInError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return Response(xml, media_type="application/samlmetadata+xml")


@router.get("/login/{provider}", status_code=302, summary="Sign in at a SAML provider")
async def login(conn: Conn, settings: AppSettings, provider: ProviderSlug) -> RedirectResponse:
    config = await identity.saml_provider_by_slug(conn, provider)
    if config is None:
        raise HTTPException(404, f"no SAML identity provider '{provider}'")
    relay_state, browser = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    try:
        request_id, url = await asyncio.to_thread(saml.start_sign_in, settings, config, relay_state)
    except SignInError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    await identity.store_login_state(
        conn, _hash(relay_state), config.id, config.municipality_id, _hash(browser), request_id, ""
    )
    response = RedirectResponse(url, status_code=302)
    # SameSite=None: the IdP posts the assertion back cross-site (HTTP-POST binding); the
    # cookie only binds the sign-in to this browser and is useless to anyone else.
    response.set_cookie(
        SAML_LOGIN_COOKIE,
        browser,
        max_age=LOGIN_TIMEOUT_S,
        httponly=True,
        secure=True,
        samesite="none",
        path="/auth/saml/acs",
    )
    return response


@router.post(
    "/acs",
    summary="Assertion consumer: where the identity provider posts the signed assertion",
    dependencies=[audited("session.login")],
)
async def assertion_consumer(
    request: Request,
    conn: Conn,
    settings: AppSettings,
    saml_response: Annotated[str, Form(alias="SAMLResponse", max_length=1_000_000)],
    relay_state: Annotated[str, Form(alias="RelayState", max_length=200)],
) -> Response:
    state = await identity.take_login_state(conn, _hash(relay_state), LOGIN_TIMEOUT_S)
    browser = request.cookies.get(SAML_LOGIN_COOKIE, "")
    if state is None or not secrets.compare_digest(state.browser_hash, _hash(browser)):
        raise HTTPException(
            400, "form field 'RelayState': unknown, used, or started in another browser"
        )
    if not state.fresh:
        raise HTTPException(400, "the sign-in took too long; start again")
    config = await identity.saml_provider_by_id(conn, state.provider_id)
    if config is None:
        raise HTTPException(400, "the identity provider was disabled meanwhile")
    try:
        person = await asyncio.to_thread(
            saml.finish_sign_in, settings, config, saml_response, state.nonce
        )
    except SignInError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    actor = Actor("person", f"{config.slug}:{person.subject}", person.name, config.municipality_id)
    context = audit.context_of(request)
    assert context is not None
    try:
        scopes = saml.scopes_for(config, person.attributes)
    except SignInError as exc:
        context.actor, context.client, context.action = actor, client_of(request), "session.refused"
        roles = saml.roles_of(config, person.attributes)
        await audit.record_event(request, context, {"reason": str(exc), "roles": roles})
        raise HTTPException(exc.status, str(exc)) from None
    await audit.bind_actor(request, actor, client_of(request))
    session = await create_session(
        conn,
        Person(
            provider_id=config.id,
            provider_slug=config.slug,
            municipality_id=config.municipality_id,
            subject=person.subject,
            name=person.name,
            email=person.email,
            scopes=scopes,
        ),
        settings,
    )
    response = RedirectResponse("/", status_code=303)
    set_session_cookies(response, session, settings)
    response.delete_cookie(SAML_LOGIN_COOKIE, path="/auth/saml/acs", secure=True, samesite="none")
    return response
