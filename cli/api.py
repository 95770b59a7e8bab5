"""``python -m cli api``: serve the HTTP API with uvicorn."""

from __future__ import annotations

import argparse

from models.logging import configure_logging
from models.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("api", help="serve the HTTP API (IOT_API_HOST/IOT_API_PORT)")
    parser.add_argument("--host", help="override IOT_API_HOST")
    parser.add_argument("--port", type=int, help="override IOT_API_PORT")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    configure_logging(settings)
    uvicorn.run(
        "api.app:create_served_app",
        factory=True,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        workers=args.workers,
        # The app decides which forwarded headers to believe (IOT_TRUSTED_PROXIES,
        # api/client_address.py); uvicorn must not rewrite the peer address before that.
        proxy_headers=False,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0
