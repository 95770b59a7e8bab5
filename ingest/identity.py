"""The time of an uplink that carries none, fixed at its first delivery.

Readings are keyed on (time, sensor, metric). An uplink without a time of its own gets
the broker's arrival time, which differs on a redelivery (QoS 1 after a reconnect, a
second network-server integration), and so would be stored twice. Such an uplink names
its identity instead (``Uplink.identity``); the first delivery records identity and
arrival time here, and every later one gets the recorded time back, so its rows are
absorbed as duplicates. The statement is one round trip, and only uplinks without a time
of their own pay it.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from ingest.dbtext import db_text

_CLAIM = """
INSERT INTO uplink_identities (identity, received_at) VALUES (%s, %s)
ON CONFLICT (identity) DO UPDATE SET identity = EXCLUDED.identity
RETURNING received_at
"""


def claim_time(conn: psycopg.Connection, identity: str, arrival: datetime) -> datetime:
    """The time first recorded for `identity`, recording `arrival` when it is new.

    ``DO UPDATE`` (rather than ``DO NOTHING`` and a second query) returns the row in
    either case and waits for a concurrent first claim instead of missing it."""
    row = conn.execute(_CLAIM, (db_text(identity, 300), arrival)).fetchone()
    assert row is not None
    return row[0]


def forget_before(conn: psycopg.Connection, before: datetime) -> int:
    """Delete identities first seen before `before` (maintenance); returns how many."""
    return conn.execute("DELETE FROM uplink_identities WHERE first_seen < %s", (before,)).rowcount
