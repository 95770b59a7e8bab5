"""The FastAPI application factory: ``create_app(settings)``.

Routers are registered from ``ROUTERS`` below; add yours there. Everything a request
needs (settings, the connection pools of api/pools.py) hangs off ``app.state`` and
reaches routes through the dependencies in api/deps.py.
"""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.export import ExportSlots
from api.observability import ObservabilityMiddleware
from api.pools import create_pools
from api.routes import (
    audit,
    auth,
    catalog,
    codecs,
    dashboard,
    export,
    files,
    health,
    history,
    ngsi_ld,
    outbound,
    public,
    reports,
    saml,
    sta,
    staff,
)
from models.logging import log
from models.schemas import ErrorOut
from models.settings import Settings, get_settings

API_PREFIX = "/api/v1"

# Every router of the application, in registration order. Each router carries its own
# prefix (public ones use API_PREFIX); staff and collection routers are appended here.
ROUTERS: list[APIRouter] = [
    health.router,
    public.router,
    export.router,
    catalog.router,
    files.router,
    sta.router,
    ngsi_ld.router,
    staff.router,
    outbound.router,
    audit.router,
    auth.router,
    saml.router,
    history.router,
    codecs.router,
    reports.router,
    dashboard.router,
]

DESCRIPTION = """
Open data from municipal IoT sensors (indoor climate, waste bins, parking).

Only sensors a municipality has marked public and active appear here. Times are ISO 8601
with a timezone; values use the units of `/api/v1/metrics`. Lists are paginated with an
opaque `cursor`: pass the `next_cursor` of one page to get the next. Errors are JSON
`{"detail": "..."}` saying what was wrong and how to fix it.
"""


# Allocations between young-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Keep the cyclic GC out of the latency tail.

    A page of 10,000 latest values allocates some 50,000 objects; with CPython's defaults
    that triggers a full collection about once per request, and a full collection walks
    every object of the application (FastAPI, pydantic, the OpenAPI schema): p95 of
    ``/latest?limit=10000`` was 139 ms against a p50 of 43 ms (bench/bench_api.py).
    Freezing what exists after start-up takes those objects out of all future
    collections, and a larger young threshold makes collections rarer; responses are
    built from acyclic dicts and lists, which reference counting frees anyway.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API around `settings` (default: read from the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pools = create_pools(settings)
        await pools.open()
        app.state.pool = pools.request
        # Staff routes connect as their own database role (models/db_roles.py) when
        # IOT_STAFF_DATABASE_URL names one; the public role cannot read keys or private data.
        app.state.staff_pool = pools.staff_request
        app.state.export_pool = pools.export
        app.state.staff_write_pool = pools.staff_write
        app.state.staff_report_pool = pools.staff_report
        app.state.export_slots = ExportSlots(settings.export_max_concurrent)
        if getattr(app.state, "tune_gc", False):
            tune_garbage_collector()
        log.info(
            "api_started",
            pool_max=settings.db_pool_max,
            export_max=settings.export_max_concurrent,
            staff_write_pool_max=settings.db_staff_write_pool_max,
            staff_report_pool_max=settings.db_staff_report_pool_max,
        )
        try:
            yield
        finally:
            await pools.close()

    app = FastAPI(
        title="kommune-iot open data API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    _document_errors_as_detail_strings(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    _add_exception_handlers(app)

    # Outermost last: metrics/security headers see the final response, gzip wraps CORS.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["ETag", "Content-Disposition"],
        max_age=3600,
    )
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    app.add_middleware(ObservabilityMiddleware)
    return app


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the API documents for `path` (HEAD with GET)."""
    if not hasattr(app.state, "path_methods"):
        app.state.path_methods = [
            (
                re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"),
                sorted(m.upper() for m in operations),
            )
            for template, operations in app.openapi()["paths"].items()
        ]
    methods = {m for pattern, ms in app.state.path_methods if pattern.match(path) for m in ms}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names only the first route matching the path; HTTP wants them all
            # (e.g. GET and POST /api/v1/staff/sensors are two routes).
            headers = {"Allow": ", ".join(_allowed_methods(request.app, request.url.path))}
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation_errors(exc.errors())}, status_code=422)

    @app.exception_handler(psycopg.DataError)
    async def unstorable_value(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # Input the validation let through but PostgreSQL cannot hold (a NUL character in
        # text, a number beyond the column's range): the client's mistake, not ours.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return JSONResponse(
            {"detail": f"a value in the request cannot be stored: {reason}"}, status_code=400
        )

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("db_unavailable", path=request.url.path, error=type(exc).__name__)
        return JSONResponse(
            {"detail": "the database is unavailable; retry in a few seconds"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("api_unhandled_error", exc_info=True, path=request.url.path)
        return JSONResponse(
            {"detail": "internal error; it has been logged, please report it"}, status_code=500
        )


def _document_errors_as_detail_strings(app: FastAPI) -> None:
    """Make the schema say what the handlers send: 422 bodies are ``{"detail": "..."}`` too."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schemas = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in schemas:
            schemas["HTTPValidationError"] = ErrorOut.model_json_schema()
            schemas.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe_validation_errors(errors: object) -> str:
    """One sentence per invalid parameter: ``query parameter 'limit': ...``."""
    parts = []
    for error in errors if isinstance(errors, list | tuple) else []:
        loc = [str(p) for p in error.get("loc", ())]
        where = f"{loc[0]} parameter '{'.'.join(loc[1:])}'" if len(loc) > 1 else "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_served_app(settings: Settings | None = None) -> FastAPI:
    """The application as ``python -m cli api`` serves it: ``create_app()`` with the
    process-wide garbage-collector tuning at start-up (not for tests and other embedders,
    which may create many applications in one process)."""
    app = create_app(settings)
    app.state.tune_gc = True
    return app
