"""Municipalities, the tenants every sensor, reading and key belongs to (`municipalities`).

Operators create them (`python -m cli admin create-municipality`); a tenant import brings
one in whole (tenancy/importer.py). `settings` holds each municipality's choices, among
them `new_sensors_public`: the visibility of a sensor registered without one
(domain/registry.py).
"""

from __future__ import annotations

import psycopg


def municipality_id(conn: psycopg.Connection, slug: str) -> int | None:
    """The id of the municipality called `slug`, or None when there is none."""
    row = conn.execute("SELECT id FROM municipalities WHERE slug = %s", (slug,)).fetchone()
    return row[0] if row else None


def create_municipality(
    conn: psycopg.Connection,
    slug: str,
    name: str,
    kommune_code: str | None,
    *,
    new_sensors_public: bool,
) -> int:
    """Create a municipality; returns its id. Raises psycopg.errors.UniqueViolation when
    the slug or the kommune code is taken, CheckViolation when the slug is malformed."""
    row = conn.execute(
        "INSERT INTO municipalities (slug, name, kommune_code, settings) "
        "VALUES (%s, %s, %s, jsonb_build_object('new_sensors_public', %s)) RETURNING id",
        (slug, name, kommune_code, new_sensors_public),
    ).fetchone()
    assert row is not None  # INSERT … RETURNING returns the row or raises
    return row[0]


def set_new_sensors_public(conn: psycopg.Connection, municipality_id: int, public: bool) -> None:
    """Whether the municipality's sensors registered without a visibility are public."""
    conn.execute(
        "UPDATE municipalities SET settings = settings || "
        "jsonb_build_object('new_sensors_public', %s) WHERE id = %s",
        (public, municipality_id),
    )
