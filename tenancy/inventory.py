"""Every table that holds a municipality's data, and what a tenant archive does with it.

A table belongs here when it has a ``municipality_id`` column, or a foreign key (directly
or through other tables) to a table that has one. Each such table is either exported
(`EXPORTED`) or excluded with the reason (`EXCLUDED`); `unaccounted_tables` lists the
ones that are neither, and the export refuses to run while any exist, so a table added
by a later migration cannot silently be left behind (tests/tenancy/test_inventory.py).
Readings carry no foreign key (it would cost on every COPY row) and are listed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

# The municipality's own row.
MUNICIPALITY = "municipalities"
# In the archive, a row of a `shared_key` table that is the municipality's own, not shared.
OWN = "own"


@dataclass(frozen=True)
class Exported:
    """How one table travels in the archive.

    `filter` selects the municipality's rows (``%(m)s`` is its id); `refs` maps a column
    holding another exported table's id to that table, so ids can be renumbered;
    `order` makes the archive deterministic; `shared_key` marks a table holding both
    shared reference rows (``municipality_id`` NULL, such as the built-in device models)
    and the municipality's own: the archive flags each row ``"own"`` (`OWN`), and the
    import matches a shared row by this natural key among the shared rows instead of
    inserting it, and inserts an own row as the municipality's. `omit` names columns that
    never leave the instance (secrets), imported as NULL.
    """

    entry: str
    filter: str
    order: str
    refs: dict[str, str] = field(default_factory=dict)
    has_id: bool = True
    shared_key: tuple[str, ...] = ()
    omit: tuple[str, ...] = ()


# Export order is also import order: a table comes after every table its refs name.
EXPORTED: dict[str, Exported] = {
    MUNICIPALITY: Exported("metadata/municipality.json", "id = %(m)s", "id"),
    "sites": Exported("metadata/sites.json", "municipality_id = %(m)s", "id"),
    "zones": Exported("metadata/zones.json", "municipality_id = %(m)s", "id", {"site_id": "sites"}),
    # The shared models its sensors use (matched by vendor and model on import) and every
    # model of its own (ingest/codecs), used by a sensor or not.
    "device_models": Exported(
        "metadata/device_models.json",
        "municipality_id = %(m)s "
        "OR id IN (SELECT device_model_id FROM sensors WHERE municipality_id = %(m)s)",
        "id",
        shared_key=("vendor", "model"),
    ),
    # Every version of its own models' codecs: source, examples, mapping, check report.
    "device_codecs": Exported(
        "metadata/device_codecs.json",
        "municipality_id = %(m)s",
        "id",
        {"device_model_id": "device_models"},
    ),
    "sensors": Exported(
        "metadata/sensors.json",
        "municipality_id = %(m)s",
        "id",
        {"device_model_id": "device_models", "site_id": "sites", "zone_id": "zones"},
    ),
    "network_applications": Exported(
        "metadata/network_applications.json", "municipality_id = %(m)s", "id"
    ),
    "alerts": Exported(
        "metadata/alerts.json",
        "municipality_id = %(m)s",
        "id",
        {"sensor_id": "sensors", "zone_id": "zones"},
    ),
    # The school calendar behind occupied hours (analytics/calendar_store.py).
    "school_hours": Exported(
        "metadata/school_hours.json", "municipality_id = %(m)s", "weekday", has_id=False
    ),
    "school_holidays": Exported("metadata/school_holidays.json", "municipality_id = %(m)s", "id"),
    "dead_letter_repeats": Exported(
        "metadata/dead_letter_repeats.json",
        "municipality_id = %(m)s",
        "hour, key, reason",
        has_id=False,
    ),
    # Webhook signing secrets stay behind: the municipality sets them again after import.
    "notification_channels": Exported(
        "metadata/notification_channels.json", "municipality_id = %(m)s", "id", omit=("secret",)
    ),
    "notification_rules": Exported(
        "metadata/notification_rules.json",
        "municipality_id = %(m)s",
        "id",
        {
            "channel_id": "notification_channels",
            "escalate_channel_id": "notification_channels",
            "site_id": "sites",
            "zone_id": "zones",
        },
    ),
    # sensor_ids (an array of sensor ids) is renumbered like a reference (SENSOR_ID_ARRAYS).
    "data_targets": Exported(
        "metadata/data_targets.json", "municipality_id = %(m)s", "id", omit=("secret",)
    ),
    # The trail belongs to the municipality and goes with it, as it was recorded: its
    # target ids and before/after values are the exporting instance's (secrets were never
    # recorded: models/audit.AUDITED_TABLES leaves them out).
    "audit_events": Exported("metadata/audit_events.json", "municipality_id = %(m)s", "id"),
}

# Columns holding arrays of another exported table's ids, renumbered like `refs`.
SENSOR_ID_ARRAYS: dict[str, str] = {"data_targets": "sensor_ids"}

# Written as Parquet (tenancy/parquet_tables.py), not JSON: they are the bulk.
PARQUET = {"readings": "data/readings.parquet", "dead_letters": "data/dead_letters.parquet"}

EXCLUDED: dict[str, str] = {
    "api_keys": "secrets: never exported; the new instance issues its own keys "
    "(deleted with the municipality)",
    "latest_readings": "derived from readings; rebuilt on import",
    "readings_hourly": "derived from readings (rollup); recomputed on import",
    "readings_daily": "derived from readings (rollup); recomputed on import",
    "identity_providers": "secrets: the configuration holds client secrets and keys, and "
    "the provider registers this instance's sign-in addresses; the new instance's "
    "operator configures its own (deleted with the municipality)",
    "staff_sessions": "secrets (session tokens) and short-lived: staff sign in anew on the "
    "new instance (deleted with the municipality)",
    "login_states": "secrets (PKCE verifiers, nonces) of sign-ins under way, minutes long "
    "(deleted with the municipality)",
    "deliveries": "this instance's outbound queue and log: copies of alerts and readings "
    "already sent or to be sent from here; carried over they would be sent twice (deleted "
    "with the municipality)",
    "delivery_attempts": "the log of deliveries, which stay (deleted with the municipality)",
}


def accounted() -> set[str]:
    return set(EXPORTED) | set(PARQUET) | set(EXCLUDED)


# Tables with a municipality_id column, and tables reaching one through foreign keys.
_TENANT_TABLES = """
WITH RECURSIVE owned(relid) AS (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND (c.relname = 'municipalities' OR EXISTS (
          SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
          AND a.attname = 'municipality_id' AND NOT a.attisdropped))
    UNION
    SELECT con.conrelid FROM pg_constraint con JOIN owned o ON con.confrelid = o.relid
    WHERE con.contype = 'f'
)
SELECT DISTINCT c.relname FROM owned o JOIN pg_class c ON c.oid = o.relid
WHERE NOT c.relispartition
ORDER BY 1
"""


def tenant_tables(conn: psycopg.Connection) -> list[str]:
    """Tables of this database that hold (or point at) a municipality's rows."""
    return [r[0] for r in conn.execute(_TENANT_TABLES)]


def unaccounted_tables(conn: psycopg.Connection) -> list[str]:
    """Tenant tables that are neither exported nor excluded with a reason."""
    return [t for t in tenant_tables(conn) if t not in accounted()]
