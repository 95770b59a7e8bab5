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


@dataclass(frozen=True)
class Exported:
    """How one table travels in the archive.

    `filter` selects the municipality's rows (``%(m)s`` is its id); `refs` maps a column
    holding another exported table's id to that table, so ids can be renumbered;
    `order` makes the archive deterministic; `key` is the natural key matched on import
    instead of inserting (shared reference data such as device models).
    """

    entry: str
    filter: str
    order: str
    refs: dict[str, str] = field(default_factory=dict)
    has_id: bool = True
    shared_key: tuple[str, ...] = ()


# Export order is also import order: a table comes after every table its refs name.
EXPORTED: dict[str, Exported] = {
    MUNICIPALITY: Exported("metadata/municipality.json", "id = %(m)s", "id"),
    "sites": Exported("metadata/sites.json", "municipality_id = %(m)s", "id"),
    "zones": Exported("metadata/zones.json", "municipality_id = %(m)s", "id", {"site_id": "sites"}),
    # Shared by every municipality: the models its sensors use, matched by (vendor, model).
    "device_models": Exported(
        "metadata/device_models.json",
        "id IN (SELECT device_model_id FROM sensors WHERE municipality_id = %(m)s)",
        "id",
        shared_key=("vendor", "model"),
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
}

# Written as Parquet (tenancy/parquet_tables.py), not JSON: they are the bulk.
PARQUET = {"readings": "data/readings.parquet", "dead_letters": "data/dead_letters.parquet"}

EXCLUDED: dict[str, str] = {
    "api_keys": "secrets: never exported; the new instance issues its own keys "
    "(deleted with the municipality)",
    "latest_readings": "derived from readings; rebuilt on import",
    "readings_hourly": "derived from readings (rollup); recomputed on import",
    "readings_daily": "derived from readings (rollup); recomputed on import",
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
