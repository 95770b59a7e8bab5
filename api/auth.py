"""API keys: how they look, how they are stored, and how a request proves one.

A key reads ``kiot_<prefix>_<secret>``. The prefix (public, unique) finds the row; only a
SHA-256 of the secret is stored and it is compared in constant time. Secrets are 256 bits
from the OS's CSPRNG, so a fast hash is the right tool (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection, Connection

KEY_PATTERN = re.compile(r"^kiot_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")

SCOPES = {
    "read-private": "read private sensors, readings, alerts and dead letters",
    "write-sensors": "register, edit and import sensors, sites, zones and network applications",
    "manage-alerts": "acknowledge and resolve alerts, replay dead letters",
    "admin": "everything above, plus API keys of the municipality",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: one key or one signed-in person of one municipality, with scopes.

    `actor_kind` is "key" (`actor_id` the key's id, `actor_name` its owner) or "person"
    (`actor_id` provider:subject, `actor_name` the name the identity provider gave)."""

    key_id: int | None
    municipality_id: int
    municipality_slug: str
    scopes: frozenset[str]
    actor_kind: str = "key"
    actor_id: str = ""
    actor_name: str = ""
    session_id: int | None = None

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    @property
    def label(self) -> str:
        """Who, in one string: "key:7 (IT department)" or "person:Jens Hansen (kc:abc)"."""
        return f"{self.actor_kind}:{self.actor_id} ({self.actor_name})"


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: int
    token: str  # shown once; only its hash is stored
    prefix: str


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def generate_token() -> tuple[str, str, str]:
    """A fresh key as (token, prefix, secret)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    prefix = "".join(secrets.choice(alphabet) for _ in range(12))
    secret = secrets.token_urlsafe(32)
    return f"kiot_{prefix}_{secret}", prefix, secret


def validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - SCOPES.keys())
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; known scopes: {sorted(SCOPES)}")
    return sorted(set(scopes))


def create_key(
    conn: Connection,
    municipality_id: int,
    scopes: list[str],
    name: str = "",
    expires_at: datetime | None = None,
    owner: str | None = None,
) -> NewKey:
    """Store a new key for `municipality_id` and return its token (the only time it is seen).

    `owner` names the person or system answering for the key; without one, the key's
    `name`, and without that "unnamed key" (the API and CLI always give one)."""
    owner = (owner or "").strip() or name.strip() or "unnamed key"
    token, prefix, secret = generate_token()
    row = conn.execute(
        "INSERT INTO api_keys (municipality_id, prefix, secret_hash, name, scopes, expires_at, "
        "owner) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            municipality_id,
            prefix,
            hash_secret(secret),
            name,
            validate_scopes(scopes),
            expires_at,
            owner,
        ),
    ).fetchone()
    assert row is not None
    return NewKey(key_id=row[0], token=token, prefix=prefix)


def revoke_key(conn: Connection, key_id: int, municipality_id: int | None = None) -> bool:
    """Revoke a key (of `municipality_id`, when given); False when there was none to revoke."""
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL "
        "AND (%s::int IS NULL OR municipality_id = %s)",
        (key_id, municipality_id, municipality_id),
    )
    return cur.rowcount == 1


# A stand-in hash compared against when the prefix is unknown, so that the time taken does
# not reveal whether a prefix exists.
_DUMMY_HASH = hash_secret("no-such-key")


async def authenticate(conn: AsyncConnection, token: str) -> Principal | None:
    """The principal for `token`, or None when it is malformed, unknown, expired or revoked."""
    match = KEY_PATTERN.match(token)
    if match is None:
        return None
    prefix, secret = match.groups()
    cur = await conn.execute(
        "SELECT k.id, k.secret_hash, k.scopes, m.id, m.slug, "
        "       (k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())), "
        "       k.owner "
        "FROM api_keys k JOIN municipalities m ON m.id = k.municipality_id "
        "WHERE k.prefix = %s",
        (prefix,),
    )
    row = await cur.fetchone()
    stored = bytes(row[1]) if row else _DUMMY_HASH
    matches = hmac.compare_digest(stored, hash_secret(secret))
    if row is None or not matches or not row[5]:
        return None
    await conn.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE id = %s "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        (row[0],),
    )
    return Principal(
        key_id=row[0],
        municipality_id=row[3],
        municipality_slug=row[4],
        scopes=frozenset(row[2]),
        actor_kind="key",
        actor_id=str(row[0]),
        actor_name=row[6],
    )


class FailureLimiter:
    """Counts refused keys per (client address, key prefix) and blocks after too many.

    A sliding window: after `max_failures` failures of one key prefix from one client
    within `window_s` seconds, that client's further attempts with that prefix are refused
    until the window has passed, while other staff behind the same address (a town hall's
    NAT) keep working with their own keys. A client that fails with many different
    prefixes is blocked as a whole after `max_failures_per_client`. The client address is
    the one api.client_address trusts (the proxy's forwarded address only from a trusted
    proxy). In-process only; behind several API replicas the reverse proxy is the outer guard.
    """

    def __init__(
        self, max_failures: int = 20, window_s: float = 60.0, max_failures_per_client: int = 100
    ) -> None:
        self.max_failures = max_failures
        self.max_failures_per_client = max_failures_per_client
        self.window_s = window_s
        self._failures: dict[tuple[str, str | None], list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str | None], now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if now - t < self.window_s]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def _wait_s(self, key: tuple[str, str | None], limit: int, now: float) -> float:
        times = self._recent(key, now)
        if len(times) < limit:
            return 0.0
        return max(0.0, self.window_s - (now - times[-limit]))

    def blocked_for_s(self, client: str, prefix: str = "") -> float:
        """Seconds until `client` may try `prefix` again; 0 when it may try now."""
        now = time.monotonic()
        with self._lock:
            return max(
                self._wait_s((client, prefix), self.max_failures, now),
                self._wait_s((client, None), self.max_failures_per_client, now),
            )

    def record_failure(self, client: str, prefix: str = "") -> None:
        now = time.monotonic()
        with self._lock:
            for key in ((client, prefix), (client, None)):
                self._recent(key, now)
                self._failures.setdefault(key, []).append(now)
            if len(self._failures) > 200_000:  # bound memory under a distributed attack
                self._failures.clear()


def key_prefix(token: str | None) -> str:
    """The public prefix of a well-formed key, "" for anything else (one shared bucket)."""
    match = KEY_PATTERN.match(token or "")
    return match.group(1) if match else ""
