"""Mosquitto users and ACLs: which MQTT client may publish or subscribe where.

Every municipality in the database gets a gateway user ``gw-<slug>`` that may only publish
native readings under ``municipality/<slug>/sensors/+/readings``. A gateways config (TOML,
see deploy/mosquitto/gateways.example.toml) adds further gateway users, network servers
run by a municipality (publishing only the topics of ChirpStack / The Things Stack
applications mapped to that municipality in the database, domain/applications.py, the
mapping ingest binds uplinks by) and service users (the ingest service, a shared network
server).

The output is Mosquitto 2.0's ``password_file`` and ``acl_file`` plus a ``credentials``
file (mode 0600) holding the plain passwords handed to gateway operators. Regenerating keeps
every existing password, so adding a municipality never locks out the others.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Native JSON topic of non-LoRaWAN gateways, per municipality (models/settings.py).
NATIVE_TOPIC = "municipality/{slug}/sensors/+/readings"
CHIRPSTACK_APPLICATION_TOPIC = "application/{application}/#"
TTS_APPLICATION_TOPIC = "v3/{application}/#"

PASSWORD_FILE = "passwd"  # noqa: S105 - a file name, not a password
ACL_FILE = "acl"
CREDENTIALS_FILE = "credentials"

# Mosquitto 2.0's "$7$" format: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# One MQTT topic level (no wildcards, no separator) as used in application ids.
_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


class BrokerAclError(ValueError):
    """The gateways config or database contents cannot produce a safe ACL."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewayUser(_Strict):
    """An extra gateway of one municipality (native topic only)."""

    username: str
    municipality: str


class NetworkServerUser(_Strict):
    """A municipality's own network server, limited to its application topics: those of
    the applications mapped to its municipality in the database, or of the ones listed
    here (each must be mapped to its municipality) when it should have only some."""

    username: str
    municipality: str
    chirpstack_applications: list[str] = Field(default_factory=list)
    tts_applications: list[str] = Field(default_factory=list)

    @field_validator("chirpstack_applications", "tts_applications")
    @classmethod
    def _one_topic_level(cls, applications: list[str]) -> list[str]:
        for application in applications:
            if not _TOPIC_LEVEL.match(application):
                raise ValueError(
                    f"application id {application!r} must be one topic level: letters, "
                    "digits and ._@- (no '/', '+' or '#')"
                )
        return applications


class ServiceUser(_Strict):
    """A user not tied to one municipality: the ingest service or a shared network server.

    ``role = "ingest"`` subscribes to the configured ingest topics (IOT_MQTT_TOPICS);
    further topics come from ``publish``/``subscribe``. ``password_env`` names an
    environment variable holding its password, so the same secret reaches the service.
    """

    username: str
    role: Literal["ingest", "network-server", "other"] = "other"
    publish: list[str] = Field(default_factory=list)
    subscribe: list[str] = Field(default_factory=list)
    password_env: str | None = None


class GatewaysConfig(_Strict):
    """The TOML gateways config; every section is optional."""

    gateway: list[GatewayUser] = Field(default_factory=list)
    network_server: list[NetworkServerUser] = Field(default_factory=list)
    service: list[ServiceUser] = Field(default_factory=list)


@dataclass(frozen=True)
class BrokerUser:
    """One Mosquitto user with the topic filters it may write (publish) and read."""

    username: str
    write: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    password_env: str | None = None


@dataclass
class BrokerFiles:
    """What `write_broker_files` produced: paths and the users that got new passwords."""

    password_file: Path
    acl_file: Path
    credentials_file: Path
    new_users: list[str] = field(default_factory=list)


def load_config(path: Path | None) -> GatewaysConfig:
    """Read and validate a gateways TOML file; ``None`` means no extra users."""
    if path is None:
        return GatewaysConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return GatewaysConfig.model_validate(raw)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BrokerAclError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise BrokerAclError(f"{path}: {problems}") from exc


def municipality_slugs(conn: psycopg.Connection) -> list[str]:
    """Slugs of all municipalities, sorted."""
    return [row[0] for row in conn.execute("SELECT slug FROM municipalities ORDER BY slug")]


def application_owners(conn: psycopg.Connection) -> dict[tuple[str, str], str]:
    """(network, application id) -> slug of the municipality it is mapped to."""
    rows = conn.execute(
        "SELECT a.network, a.application_id, m.slug FROM network_applications a "
        "JOIN municipalities m ON m.id = a.municipality_id"
    ).fetchall()
    return {(network, application): slug for network, application, slug in rows}


def _network_server_topics(
    server: NetworkServerUser, owners: Mapping[tuple[str, str], str]
) -> list[str]:
    """The application topics a municipality's network server may publish: the listed
    applications (each must be mapped to its municipality), else every one mapped to it."""
    listed = {"chirpstack": server.chirpstack_applications, "thethings": server.tts_applications}
    for network, applications in listed.items():
        for application in applications:
            holder = owners.get((network, application))
            if holder != server.municipality:
                where = "to no municipality" if holder is None else f"to {holder!r}"
                raise BrokerAclError(
                    f"network server {server.username!r} of {server.municipality!r} lists "
                    f"{network} application {application!r}, which is mapped {where}; map it "
                    "with `python -m cli admin map-application` (ingest refuses uplinks of "
                    "applications not mapped to the sensor's municipality)"
                )
    if not any(listed.values()):
        listed = {
            network: sorted(
                a for (n, a), slug in owners.items() if n == network and slug == server.municipality
            )
            for network in listed
        }
    return [CHIRPSTACK_APPLICATION_TOPIC.format(application=a) for a in listed["chirpstack"]] + [
        TTS_APPLICATION_TOPIC.format(application=a) for a in listed["thethings"]
    ]


def broker_users(
    slugs: list[str],
    config: GatewaysConfig,
    ingest_topics: list[str],
    owners: Mapping[tuple[str, str], str] | None = None,
) -> list[BrokerUser]:
    """All users with their permissions; raises BrokerAclError on names that clash.

    `owners` is the application mapping (`application_owners`): (network, application
    id) -> municipality slug."""
    owners = owners or {}
    known = set(slugs)
    users: list[BrokerUser] = []
    for slug in slugs:
        users.append(BrokerUser(f"gw-{slug}", write=(NATIVE_TOPIC.format(slug=slug),)))
    for gateway in config.gateway:
        _require_municipality(gateway.municipality, known, gateway.username)
        users.append(
            BrokerUser(gateway.username, write=(NATIVE_TOPIC.format(slug=gateway.municipality),))
        )
    for server in config.network_server:
        _require_municipality(server.municipality, known, server.username)
        write = _network_server_topics(server, owners)
        if not write:
            raise BrokerAclError(
                f"network server {server.username!r}: no application is mapped to "
                f"{server.municipality!r}, so it could publish nothing; map its applications "
                "with `python -m cli admin map-application`"
            )
        users.append(BrokerUser(server.username, write=tuple(write)))
    for service in config.service:
        read = list(service.subscribe)
        if service.role == "ingest":
            read = [*ingest_topics, *read]
        users.append(
            BrokerUser(
                service.username,
                write=tuple(service.publish),
                read=tuple(dict.fromkeys(read)),
                password_env=service.password_env,
            )
        )
    _check_names(users)
    for user in users:
        for topic in (*user.write, *user.read):
            _check_topic_filter(topic, user.username)
    return users


def render_acl(users: list[BrokerUser]) -> str:
    """Mosquitto acl_file text. Nothing is allowed before the first ``user`` line, so
    anonymous clients (if ever enabled) get no access at all."""
    lines = [
        "# Generated by `python -m cli broker-acl`; edit the gateways config, not this file.",
        "# Anything not listed is denied.",
    ]
    for user in users:
        lines += ["", f"user {user.username}"]
        lines += [f"topic write {topic}" for topic in user.write]
        lines += [f"topic read {topic}" for topic in user.read]
    return "\n".join(lines) + "\n"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A Mosquitto 2.0 password-file hash (``$7$``: PBKDF2-HMAC-SHA512, 101 rounds)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    salt_b64, digest_b64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"$7${PBKDF2_ITERATIONS}${salt_b64}${digest_b64}"


def read_credentials(path: Path) -> dict[str, str]:
    """``username:password`` lines of an earlier run; missing file means none."""
    if not path.exists():
        return {}
    credentials: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            username, _, password = line.partition(":")
            credentials[username] = password
    return credentials


def write_broker_files(
    out_dir: Path, users: list[BrokerUser], environ: dict[str, str] | None = None
) -> BrokerFiles:
    """Write passwd, acl and credentials into `out_dir`, keeping existing passwords.

    Users with ``password_env`` take their password from that environment variable (an
    error when it is unset); other users keep the password in ``credentials`` or get a new
    random one. Users no longer configured are dropped. Files are replaced atomically.
    """
    environ = dict(os.environ) if environ is None else environ
    out_dir.mkdir(parents=True, exist_ok=True)
    files = BrokerFiles(out_dir / PASSWORD_FILE, out_dir / ACL_FILE, out_dir / CREDENTIALS_FILE)
    previous = read_credentials(files.credentials_file)
    passwords: dict[str, str] = {}
    for user in users:
        if user.password_env:
            password = environ.get(user.password_env, "")
            if not password:
                raise BrokerAclError(
                    f"user {user.username!r} takes its password from ${user.password_env}, "
                    "which is unset or empty"
                )
        elif user.username in previous:
            password = previous[user.username]
        else:
            password = secrets.token_urlsafe(24)
            files.new_users.append(user.username)
        passwords[user.username] = password

    credentials = "".join(
        f"{u.username}:{passwords[u.username]}\n" for u in users if not u.password_env
    )
    _replace(
        files.credentials_file,
        "# Plain passwords of generated users; give each to its gateway operator.\n" + credentials,
    )
    _replace(
        files.password_file, "".join(f"{n}:{hash_password(p)}\n" for n, p in passwords.items())
    )
    _replace(files.acl_file, render_acl(users))
    return files


def _replace(path: Path, text: str) -> None:
    # 0600: the broker runs as the files' owner (see docs/operations.md), nobody else reads.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _require_municipality(slug: str, known: set[str], username: str) -> None:
    if slug not in known:
        raise BrokerAclError(
            f"user {username!r} belongs to municipality {slug!r}, which is not in the "
            "database; create it with `python -m cli admin create-municipality`"
        )


def _check_topic_filter(topic: str, username: str) -> None:
    # A newline would let a config value add its own ACL lines.
    if not topic or any(c.isspace() or ord(c) < 32 for c in topic) or topic.startswith("$share/"):
        raise BrokerAclError(
            f"topic filter {topic!r} of user {username!r} must be non-empty, without "
            "whitespace, and without a $share/ prefix (the ACL is checked without it)"
        )


def _check_names(users: list[BrokerUser]) -> None:
    seen: set[str] = set()
    for user in users:
        if not _USERNAME.match(user.username):
            raise BrokerAclError(
                f"username {user.username!r} must be 1-64 letters, digits or ._@- "
                "(no spaces or ':')"
            )
        if user.username in seen:
            raise BrokerAclError(f"username {user.username!r} is defined twice")
        seen.add(user.username)
