"""The API sends the security headers the production proxy sends, so `make up` (no proxy)
behaves like production: the Content-Security-Policy above all, which is what stops an
injected script in the dashboard."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

CADDYFILE = Path(__file__).parents[2] / "deploy/caddy/Caddyfile"
PROXY_ONLY = {"strict-transport-security"}  # the proxy terminates TLS


def _proxy_headers() -> dict[str, str]:
    block = re.search(r"\n\theader \{\n(.*?)\n\t\}", CADDYFILE.read_text(), re.S)
    assert block, "no header block in the Caddyfile"
    headers = {}
    for line in block.group(1).splitlines():
        match = re.match(r'\s*\??([A-Za-z-]+) "(.*)"$', line)
        if match:
            headers[match.group(1).lower()] = match.group(2)
    assert "content-security-policy" in headers
    return headers


@pytest.mark.parametrize("path", ["/", "/static/dashboard.js", "/api/v1/metrics", "/nowhere"])
def test_the_api_sends_every_header_the_proxy_sends(client: TestClient, path: str) -> None:
    response = client.get(path)
    for name, value in _proxy_headers().items():
        if name not in PROXY_ONLY:
            assert response.headers.get(name) == value, name


def test_only_the_api_documentation_may_load_swagger_from_its_cdn(client: TestClient) -> None:
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200
    policy = docs.headers["content-security-policy"]
    assert "https://cdn.jsdelivr.net" in policy and "frame-ancestors 'none'" in policy
    assert "cdn.jsdelivr.net" not in client.get("/").headers["content-security-policy"]
