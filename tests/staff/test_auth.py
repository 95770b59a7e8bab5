"""API keys: issued once, stored hashed, refused when wrong, revoked or expired."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from api.auth import FailureLimiter, authenticate, create_key, hash_secret, revoke_key


def _municipality(db: psycopg.Connection, slug: str) -> int:
    return db.execute(
        "INSERT INTO municipalities (slug, name) VALUES (%s, %s) RETURNING id", (slug, slug)
    ).fetchone()[0]


def _authenticate(url: str, token: str):
    async def run():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await authenticate(conn, token)

    return asyncio.run(run())


def test_a_new_key_authenticates_as_its_municipality_with_its_scopes(db, database_url) -> None:
    aarhus = _municipality(db, "aarhus")
    key = create_key(db, aarhus, ["read-private", "write-sensors"], "dashboard")
    principal = _authenticate(database_url, key.token)
    assert principal is not None
    assert (principal.municipality_id, principal.municipality_slug) == (aarhus, "aarhus")
    assert principal.has("write-sensors") and not principal.has("admin")


def test_only_a_hash_of_the_secret_is_stored(db) -> None:
    key = create_key(db, _municipality(db, "odder"), ["admin"])
    secret = key.token.split("_", 2)[2]
    stored = db.execute("SELECT secret_hash FROM api_keys").fetchone()[0]
    assert bytes(stored) == hash_secret(secret)
    assert secret.encode() not in bytes(stored)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret, right prefix
        lambda t: "kiot_zzzzzzzzzzzz_" + t.split("_", 2)[2],  # unknown prefix
        lambda t: t + "x",  # malformed
        lambda t: "",
    ],
)
def test_wrong_or_malformed_tokens_are_refused(db, database_url, mangle) -> None:
    key = create_key(db, _municipality(db, "skive"), ["read-private"])
    assert _authenticate(database_url, mangle(key.token)) is None


def test_revoked_and_expired_keys_are_refused(db, database_url) -> None:
    m = _municipality(db, "struer")
    revoked = create_key(db, m, ["read-private"])
    assert revoke_key(db, revoked.key_id)
    assert not revoke_key(db, revoked.key_id)
    expired = create_key(db, m, ["read-private"], expires_at=datetime.now(UTC) - timedelta(1))
    assert _authenticate(database_url, revoked.token) is None
    assert _authenticate(database_url, expired.token) is None


def test_a_municipality_cannot_revoke_another_municipalitys_key(db) -> None:
    a, b = _municipality(db, "lemvig"), _municipality(db, "samsoe")
    key = create_key(db, a, ["read-private"])
    assert not revoke_key(db, key.key_id, municipality_id=b)
    assert revoke_key(db, key.key_id, municipality_id=a)


def test_unknown_scopes_are_refused(db) -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        create_key(db, _municipality(db, "herning"), ["superuser"])


def test_failure_limiter_blocks_after_the_limit_and_only_that_client() -> None:
    limiter = FailureLimiter(max_failures=3, window_s=60)
    for _ in range(3):
        assert limiter.blocked_for_s("10.0.0.1") == 0
        limiter.record_failure("10.0.0.1")
    assert 0 < limiter.blocked_for_s("10.0.0.1") <= 60
    assert limiter.blocked_for_s("10.0.0.2") == 0


def test_admin_cli_creates_a_municipality_and_a_working_key(db, database_url) -> None:
    env = {"IOT_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cli", "admin", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    made = cli("create-municipality", "--slug", "viborg", "--name", "Viborg Kommune")
    assert made.returncode == 0, made.stderr
    unowned = cli("create-key", "--municipality", "viborg", "--scopes", "read-private")
    assert unowned.returncode != 0 and "--owner" in unowned.stderr
    blank = cli("create-key", "--municipality", "viborg", "--scopes", "admin", "--owner", " ")
    assert blank.returncode != 0 and "--owner" in blank.stderr
    issued = cli(
        "create-key", "--municipality", "viborg", "--scopes", "read-private",
        "--owner", "Karen Madsen, Teknik",
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip().splitlines()[-1]
    principal = _authenticate(database_url, token)
    assert principal is not None and principal.municipality_slug == "viborg"
    assert principal.actor_name == "Karen Madsen, Teknik"
    listed = cli("list-keys").stdout
    assert token not in listed and "owner Karen Madsen, Teknik" in listed
    refused = cli(
        "create-key", "--municipality", "nowhere", "--scopes", "read-private", "--owner", "x"
    )
    assert refused.returncode != 0 and "no municipality" in refused.stderr
