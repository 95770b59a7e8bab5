"""Request metrics for Prometheus and security headers, as one pure ASGI middleware.

Pure ASGI (not BaseHTTPMiddleware) so streamed exports pass through without buffering.
Metrics are module-level because prometheus_client's default registry is process-wide;
several apps in one process (tests) share them.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "iot_api_requests_total",
    "HTTP requests answered by the API.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "iot_api_request_duration_seconds",
    "Time to the response headers, per route (seconds).",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# The same headers Caddy sends in production (deploy/caddy/Caddyfile; a test compares
# them), so that `make up` and tests see what users of the proxy see. Strict-Transport-
# Security is the proxy's alone: it terminates TLS.
CONTENT_SECURITY_POLICY = (
    # The dashboard loads only its own vendored scripts and styles; map tiles are images
    # from OpenStreetMap.
    "default-src 'self'; img-src 'self' data: https://tile.openstreetmap.org; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'self'"
)
# The interactive API documentation (FastAPI's Swagger UI) loads its script and styles
# from jsDelivr and starts with an inline script; only its page gets this policy.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'self'"
)
DOCS_PATH = "/api/v1/docs"

# Set at each scrape from the database (api/routes/health.py); docs/operations.md.
JOBS_FAILING = Gauge(
    "iot_timescaledb_jobs_failing",
    "TimescaleDB background jobs whose last scheduled run failed (0 on plain PostgreSQL).",
)
JOB_FAILING = Gauge(
    "iot_timescaledb_job_failing",
    "1 for each TimescaleDB job whose last scheduled run failed, with its total failures "
    "in iot_timescaledb_job_failures.",
    ["job_id", "proc_name", "relation"],
)
JOB_FAILURES = Gauge(
    "iot_timescaledb_job_failures",
    "Failed runs recorded by TimescaleDB for each job whose last run failed.",
    ["job_id", "proc_name", "relation"],
)

# Set at each scrape from the database, read as the staff role (api/routes/health.py).
EMAILS_UNCONFIRMED = Gauge(
    "iot_emails_unconfirmed",
    "E-mails written to the SMTP server with their final dot but not confirmed by it (the "
    "delivery worker stopped before the reply), per municipality: not sent again "
    "automatically; staff resend them on purpose (docs/notifications.md).",
    ["municipality"],
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    (b"permissions-policy", b"geolocation=(), camera=(), microphone=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def _security_headers(path: str) -> tuple[tuple[bytes, bytes], ...]:
    policy = DOCS_CONTENT_SECURITY_POLICY if path.startswith(DOCS_PATH) else CONTENT_SECURITY_POLICY
    return (*SECURITY_HEADERS, (b"content-security-policy", policy.encode()))


class ObservabilityMiddleware:
    """Counts requests by route template and status, and adds security headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [h for h in _security_headers(scope["path"]) if h[0] not in present]
                message["headers"] = [*message.get("headers", []), *extra]
                LATENCY.labels(scope["method"], _route_label(scope)).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            REQUESTS.labels(
                scope["method"], _route_label(scope), str(status_holder["status"])
            ).inc()


def _route_label(scope: Scope) -> str:
    # The route template (/api/v1/sensors/{sensor_id}), never the raw path: bounded labels.
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
