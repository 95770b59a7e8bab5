"""Which municipality each network-server application belongs to (`network_applications`).

Ingest binds a ChirpStack or The Things Stack uplink to the municipality its topic's
application is mapped to (ingest/pipeline.py, cached by ingest/devices.py), and
`broker-acl` grants a municipality's own network server the topics of the applications
mapped to it (ingest/broker_acl.py). Managed by operators (`python -m cli admin
map-application`) and by municipal staff for their own municipality (staff API).

An application belongs to one municipality at most. Mapping one that another municipality
holds is refused with an error that does not say which municipality holds it; an operator
may move it (`reassign`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import psycopg

# The wire formats' names (ingest/formats), as stored in network_applications.network.
NETWORKS = ("chirpstack", "thethings")
# One MQTT topic level, as it appears in the topic: ChirpStack's application UUID, The
# Things Stack's "<application id>@<tenant id>" (or "<application id>" without tenants).
APPLICATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


class ApplicationError(ValueError):
    """An application cannot be mapped: the message says why."""


class ApplicationTakenError(ApplicationError):
    """Another municipality holds the application (which one is not said)."""


@dataclass(frozen=True, slots=True)
class Application:
    network: str
    application_id: str
    municipality_id: int
    municipality_slug: str
    created_at: datetime


def check_application(network: str, application_id: str) -> None:
    """ApplicationError unless `network` is known and `application_id` is one topic level."""
    if network not in NETWORKS:
        raise ApplicationError(f"network must be one of {', '.join(NETWORKS)}, not {network!r}")
    if not APPLICATION_ID.match(application_id):
        raise ApplicationError(
            f"application id {application_id[:140]!r} must be one MQTT topic level as the "
            "network server's topic names it: 1-128 letters, digits and ._@- (The Things "
            "Stack: <application id>@<tenant id>)"
        )


def map_application(
    conn: psycopg.Connection,
    municipality_id: int,
    network: str,
    application_id: str,
    *,
    reassign: bool = False,
) -> bool:
    """Map the application to the municipality; True when that changed anything, False when
    it was the municipality's already. ApplicationTakenError when another municipality
    holds it (unless `reassign`, for operators)."""
    check_application(network, application_id)
    with conn.transaction():
        inserted = conn.execute(
            "INSERT INTO network_applications (network, application_id, municipality_id) "
            "VALUES (%s, %s, %s) ON CONFLICT (network, application_id) DO NOTHING RETURNING id",
            (network, application_id, municipality_id),
        ).fetchone()
        if inserted is not None:
            return True
        holder = conn.execute(
            "SELECT municipality_id FROM network_applications "
            "WHERE network = %s AND application_id = %s FOR UPDATE",
            (network, application_id),
        ).fetchone()
        if holder is None:  # unmapped between the two statements: try again
            return map_application(
                conn, municipality_id, network, application_id, reassign=reassign
            )
        if holder[0] == municipality_id:
            return False
        if not reassign:
            raise ApplicationTakenError(
                f"{network} application {application_id!r} is mapped to another municipality"
            )
        conn.execute(
            "UPDATE network_applications SET municipality_id = %s, created_at = now() "
            "WHERE network = %s AND application_id = %s",
            (municipality_id, network, application_id),
        )
        return True


def unmap_application(
    conn: psycopg.Connection, network: str, application_id: str, municipality_id: int | None
) -> bool:
    """Remove the mapping (only the municipality's own, when `municipality_id` is given);
    False when there was none to remove."""
    cur = conn.execute(
        "DELETE FROM network_applications WHERE network = %s AND application_id = %s "
        "AND (%s::int IS NULL OR municipality_id = %s)",
        (network, application_id, municipality_id, municipality_id),
    )
    return cur.rowcount == 1


def list_applications(
    conn: psycopg.Connection, municipality_id: int | None = None
) -> list[Application]:
    """The mapped applications (of one municipality, when given), by municipality and id."""
    rows = conn.execute(
        "SELECT a.network, a.application_id, a.municipality_id, m.slug, a.created_at "
        "FROM network_applications a JOIN municipalities m ON m.id = a.municipality_id "
        "WHERE %s::int IS NULL OR a.municipality_id = %s "
        "ORDER BY m.slug, a.network, a.application_id",
        (municipality_id, municipality_id),
    ).fetchall()
    return [Application(*row) for row in rows]
