"""The failed-key limiter behind a reverse proxy: one bad client must not lock out every
member of staff (all of whom arrive from the proxy's address), and a client must not get
a fresh identity by writing its own X-Forwarded-For."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_key
from api.client_address import client_address, parse_networks
from models.settings import Settings
from tests.processes import child_env, free_port, wait_for_port

PROXY = "10.0.0.2"  # the reverse proxy, as the API sees it
WRONG_KEY = "kiot_aaaaaaaaaaaa_" + "b" * 43  # well-formed, unknown
ATTEMPTS = 25  # more than FailureLimiter's 20 per window


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def staff_key(db: psycopg.Connection) -> str:
    m = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('aabenraa', 'Aabenraa') RETURNING id"
    ).fetchone()[0]
    return create_key(db, m, ["read-private"]).token


@pytest.fixture
def behind_proxy(database_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, trusted_proxies=[PROXY])
    with TestClient(create_app(settings), client=(PROXY, 40000)) as client:
        yield client


def test_one_bad_client_behind_the_proxy_does_not_lock_out_the_others(
    behind_proxy: TestClient, staff_key: str
) -> None:
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    codes = [
        behind_proxy.get("/api/v1/staff/me", headers={**_auth(WRONG_KEY), **attacker}).status_code
        for _ in range(ATTEMPTS)
    ]
    assert codes[0] == 401 and codes[-1] == 429
    colleague = behind_proxy.get(
        "/api/v1/staff/me", headers={**_auth(staff_key), "X-Forwarded-For": "198.51.100.7"}
    )
    assert colleague.status_code == 200, colleague.text


def test_staff_sharing_an_address_keep_working_while_a_broken_key_is_blocked(
    behind_proxy: TestClient, staff_key: str
) -> None:
    town_hall = {"X-Forwarded-For": "198.51.100.20"}  # one NAT address for everybody
    codes = [
        behind_proxy.get("/api/v1/staff/me", headers={**_auth(WRONG_KEY), **town_hall}).status_code
        for _ in range(ATTEMPTS)
    ]
    assert codes[-1] == 429
    good = behind_proxy.get("/api/v1/staff/me", headers={**_auth(staff_key), **town_hall})
    assert good.status_code == 200, good.text


def test_rotating_forwarded_for_from_an_untrusted_peer_does_not_evade_the_limit(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, trusted_proxies=[PROXY])
    with TestClient(create_app(settings), client=("192.0.2.66", 40000)) as direct:
        codes = [
            direct.get(
                "/api/v1/staff/me",
                headers={**_auth(WRONG_KEY), "X-Forwarded-For": f"10.1.{n}.{n}"},
            ).status_code
            for n in range(ATTEMPTS)
        ]
    assert codes[-1] == 429


def test_rotating_forwarded_for_through_the_proxy_does_not_evade_the_limit(
    database_url: str, staff_key: str
) -> None:
    """The real server, with uvicorn told to trust every forwarded header (what an operator
    sets to make a proxy's addresses visible): the client's own X-Forwarded-For entries,
    left of what the proxy appended, change nothing."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "api", "--port", str(port)],
        env=child_env(
            IOT_DATABASE_URL=database_url,
            IOT_TRUSTED_PROXIES='["127.0.0.1"]',
            FORWARDED_ALLOW_IPS="*",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30)
        base = f"http://127.0.0.1:{port}/api/v1/staff/me"
        with httpx.Client(timeout=10) as http:
            codes = [
                http.get(
                    base,
                    headers={**_auth(WRONG_KEY), "X-Forwarded-For": f"10.2.{n}.{n}, 203.0.113.9"},
                ).status_code
                for n in range(ATTEMPTS)
            ]
            colleague = http.get(
                base, headers={**_auth(staff_key), "X-Forwarded-For": "198.51.100.7"}
            )
    finally:
        process.terminate()
        process.wait(20)
    assert codes[0] == 401 and codes[-1] == 429
    assert colleague.status_code == 200


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("192.0.2.1", ["198.51.100.7"], "192.0.2.1"),  # untrusted peer: header ignored
        (PROXY, ["198.51.100.7"], "198.51.100.7"),
        (PROXY, ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),  # forged entries on the left
        (PROXY, ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),  # repeated header lines
        (PROXY, ["198.51.100.7, 10.0.0.3"], "198.51.100.7"),  # a chain of trusted proxies
        (PROXY, ["6.6.6.6, not-an-address"], PROXY),  # garbage: keep the proxy's address
        (PROXY, [], PROXY),
        ("2001:db8::1", ["198.51.100.7"], "2001:db8::1"),
    ],
)
def test_client_address_believes_only_trusted_proxies(peer, header, expected) -> None:
    trusted = parse_networks([PROXY, "10.0.0.3/32"])
    assert client_address(peer, header, trusted) == expected


def test_a_malformed_trusted_proxy_setting_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="IOT_TRUSTED_PROXIES"):
        Settings(trusted_proxies=["caddy"])
