"""Database roles and every grant they hold: the one place that says who may do what.

Each service connects as its own role, never as the superuser:

* ``iot_owner`` owns every table, view and function; migrations make it so.
* ``iot_ingest`` stores readings, latest values and dead letters (ingest).
* ``iot_api`` is the public open-data API: it reads, and of the sensors only the published
  ones (row-level security, `ROW_POLICIES`), of readings and rollups only the published
  sensors' (through the objects of migrations 0019 and 0021); no keys, alerts, dead
  letters or places.
* ``iot_staff`` is the staff API: one municipality's everything, by the queries' filters;
  replaying a dead letter runs ingest's pipeline, so it can store readings too.
* ``iot_maintenance`` runs the jobs: partitions, rollups, retention, alert evaluation. It
  is a NOINHERIT member of ``iot_owner``: it holds only its own grants, and takes the
  owner's rights (`as_owner`) just for what only a table's owner may do and no owner's
  function can wrap: detaching partitions concurrently and dropping them
  (models/partitions.py), and driving TimescaleDB's policies.

Roles are cluster-wide, so they are created idempotently and shared by every database of
the server (test databases, staging); grants, policies and per-database settings (the API
roles' statement timeout) live in each database. `apply_grants` runs after every migration
(migrations/env.py) and brings the database to what `GRANTS` says, whatever created the
tables. A table missing from `GRANTS` gets nothing (and fails tests/test_db_roles.py); when
a migration adds a table, add a line here saying what each role may do with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

OWNER = "iot_owner"
INGEST = "iot_ingest"
API = "iot_api"
STAFF = "iot_staff"
MAINTENANCE = "iot_maintenance"
SERVICE_ROLES = (INGEST, API, STAFF, MAINTENANCE)
ROLES = (OWNER, *SERVICE_ROLES)

# Both API roles: a runaway query is cancelled instead of holding a pooled connection.
# A connection may SET a longer one for itself (streamed exports).
STATEMENT_TIMEOUTS = {API: "30s", STAFF: "60s"}

R = "SELECT"
RW = "SELECT, INSERT, UPDATE, DELETE"

# table -> role -> privileges ("" = none). Every table of the schema, every service role.
GRANTS: dict[str, dict[str, str]] = {
    "municipalities": {INGEST: R, API: R, STAFF: R, MAINTENANCE: R},
    "sites": {INGEST: "", API: "", STAFF: "SELECT, INSERT, UPDATE", MAINTENANCE: R},
    "zones": {INGEST: "", API: "", STAFF: "SELECT, INSERT, UPDATE", MAINTENANCE: R},
    "device_models": {INGEST: R, API: R, STAFF: "SELECT, INSERT, UPDATE", MAINTENANCE: R},
    # ingest registers unknown devices as pending sensors (IOT_AUTO_REGISTER_UNKNOWN)
    "sensors": {INGEST: "SELECT, INSERT", API: R, STAFF: "SELECT, INSERT, UPDATE", MAINTENANCE: R},
    # ingest (and replay) upsert the metric vocabulary of domain/metrics.py at start-up
    "metrics": {INGEST: "SELECT, INSERT, UPDATE", API: R, STAFF: "SELECT, INSERT, UPDATE",
                MAINTENANCE: R},
    "latest_readings": {INGEST: RW, API: R, STAFF: RW, MAINTENANCE: RW},
    "latest_pending": {INGEST: RW, API: "", STAFF: RW, MAINTENANCE: RW},
    # the public API reads readings and rollups only through published_readings and the
    # iot_published_* functions (migration 0019): published sensors' rows, on both backends
    "readings": {INGEST: "SELECT, INSERT", API: "", STAFF: "SELECT, INSERT", MAINTENANCE: R},
    "readings_hourly": {INGEST: "", API: "", STAFF: R, MAINTENANCE: R},
    "readings_daily": {INGEST: "", API: "", STAFF: R, MAINTENANCE: R},
    "published_readings": {INGEST: "", API: R, STAFF: "", MAINTENANCE: ""},
    # the rollups of published sensors, for SensorThings' filtered Observations (0021)
    "published_readings_hourly": {INGEST: "", API: R, STAFF: "", MAINTENANCE: ""},
    "published_readings_daily": {INGEST: "", API: R, STAFF: "", MAINTENANCE: ""},
    # written by the readings trigger, in the inserting role's name (plain PostgreSQL)
    "rollup_dirty_hours": {INGEST: "INSERT", API: "", STAFF: "INSERT", MAINTENANCE: ""},
    "dead_letters": {INGEST: "SELECT, INSERT", API: "", STAFF: "SELECT, INSERT, UPDATE",
                     MAINTENANCE: "SELECT, DELETE"},
    # repeats beyond the sampled letters, counted by ingest (and a replay), aged out by
    # the maintenance job (ingest/dead_letters.py)
    "dead_letter_repeats": {INGEST: "SELECT, INSERT, UPDATE", API: "",
                            STAFF: "SELECT, INSERT, UPDATE", MAINTENANCE: "SELECT, DELETE"},
    # first arrival of uplinks that carry no time, by identity (ingest/identity.py)
    "uplink_identities": {INGEST: "SELECT, INSERT, UPDATE", API: "",
                          STAFF: "SELECT, INSERT, UPDATE", MAINTENANCE: "SELECT, DELETE"},
    # municipalities' own device models' codecs (ingest/codecs): staff add versions, ingest
    # runs the newest
    "device_codecs": {INGEST: R, API: "", STAFF: "SELECT, INSERT", MAINTENANCE: R},
    # application -> municipality (domain/applications.py): ingest reads it, staff map and
    # unmap their own municipality's applications
    "network_applications": {INGEST: R, API: "", STAFF: RW,
                             MAINTENANCE: R},
    "alerts": {INGEST: "", API: "", STAFF: "SELECT, UPDATE", MAINTENANCE: "SELECT, INSERT, UPDATE"},
    "api_keys": {INGEST: "", API: "", STAFF: "SELECT, INSERT, UPDATE", MAINTENANCE: ""},
    "system_info": {INGEST: R, API: R, STAFF: R, MAINTENANCE: R},
    # append-only: staff writes add rows (through the iot_audit_row trigger) and read their
    # municipality's; only the maintenance job's retention deletes (models/audit.py)
    "audit_events": {INGEST: "", API: "", STAFF: "SELECT, INSERT", MAINTENANCE: "SELECT, DELETE"},
    # providers are configured with the admin CLI (the owner); the API reads them to sign in
    "identity_providers": {INGEST: "", API: "", STAFF: R, MAINTENANCE: R},
    "staff_sessions": {INGEST: "", API: "", STAFF: "SELECT, INSERT, UPDATE",
                       MAINTENANCE: "SELECT, DELETE"},
    "login_states": {INGEST: "", API: "", STAFF: "SELECT, INSERT, DELETE",
                     MAINTENANCE: "SELECT, DELETE"},
    # Outbound deliveries (docs/notifications.md). Staff manage their channels, rules and
    # targets and enqueue test deliveries and resolve notices; ingest enqueues readings for
    # data targets; the deliver worker (maintenance role) claims, sends and logs.
    "notification_channels": {INGEST: "", API: "", STAFF: RW, MAINTENANCE: R},
    "notification_rules": {INGEST: "", API: "", STAFF: RW, MAINTENANCE: R},
    "data_targets": {INGEST: R, API: "", STAFF: RW, MAINTENANCE: R},
    # the worker deletes finished deliveries past IOT_DELIVER_LOG_RETENTION_DAYS
    "deliveries": {INGEST: "INSERT", API: "", STAFF: "SELECT, INSERT, UPDATE",
                   MAINTENANCE: RW},
    "delivery_attempts": {INGEST: "", API: "", STAFF: R, MAINTENANCE: "SELECT, INSERT, UPDATE"},
    # a municipality's school calendar (analytics/occupancy.py): staff import it, the
    # evaluation job reads it
    "school_hours": {INGEST: "", API: "", STAFF: RW, MAINTENANCE: R},
    "school_holidays": {INGEST: "", API: "", STAFF: RW, MAINTENANCE: R},
}  # fmt: skip

# Relations that are not the application's to grant (Alembic's bookkeeping).
UNGRANTED = {"alembic_version"}

# Functions run with the owner's rights (SECURITY DEFINER: creating and dropping partitions
# needs the table's owner), so nobody else may call them unless listed here.
FUNCTION_GRANTS: dict[str, tuple[str, ...]] = {
    "iot_ensure_partitions": (INGEST, STAFF, MAINTENANCE),
    "iot_create_partitions": (INGEST, STAFF, MAINTENANCE),
    "iot_drop_partitions_before": (MAINTENANCE,),
    "iot_refresh_rollups": (MAINTENANCE,),
    "iot_mark_dirty_hours": (),  # a trigger function: runs for whoever inserts
    "iot_audit_row": (),  # trigger functions: run for whoever writes (models/audit.py)
    "iot_audit_append_only": (),
    # published sensors' readings and rollups for the public API (migration 0019)
    "iot_published_readings": (API,),
    "iot_published_buckets": (API,),
    "iot_published_first_days": (API,),
    # published sensors' latest values for /api/v1/latest (migration 0026)
    "iot_published_latest": (API,),
    # one Datastream's page of Observations for SensorThings and NGSI-LD (migration 0025)
    "iot_published_observations": (API,),
}

# Row-level security: table -> role -> the rows that role sees. Every other service role
# sees every row (the staff queries filter by municipality). `readings` and the rollups
# cannot have it (TimescaleDB refuses compression and continuous aggregates on a hypertable
# with row security; PostgreSQL refuses COPY FROM, ingest's write path, where it applies):
# the public API role has no grant on them and reads published sensors' rows through the
# view and functions of migration 0019 instead.
ROW_POLICIES: dict[str, dict[str, str]] = {
    "sensors": {API: "is_public AND status = 'active'"},
    "latest_readings": {
        API: "EXISTS (SELECT 1 FROM sensors s WHERE s.id = latest_readings.sensor_id)"
    },
}

MARKER = ("db_roles", "1")  # in system_info from migration 0011 on: grants apply


def create_roles(conn: psycopg.Connection) -> None:
    """Create the roles that do not exist yet (NOLOGIN; `enable_logins` lets services in).

    Safe when several databases of one server migrate at once: a role another session
    created meanwhile is taken as it is."""
    existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                           (list(ROLES),))}  # fmt: skip
    for role in ROLES:
        if role in existing:
            continue
        conn.execute(
            sql.SQL(
                "DO $$ BEGIN CREATE ROLE {} NOLOGIN; "
                "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            ).format(sql.Identifier(role))
        )
    member = conn.execute(
        "SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = %s AND u.rolname = %s",
        (OWNER, MAINTENANCE),
    ).fetchone()
    if member is None:
        conn.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(OWNER), sql.Identifier(MAINTENANCE))
        )
    inherits = conn.execute(
        "SELECT rolinherit FROM pg_roles WHERE rolname = %s", (MAINTENANCE,)
    ).fetchone()[0]
    if inherits:
        conn.execute(sql.SQL("ALTER ROLE {} NOINHERIT").format(sql.Identifier(MAINTENANCE)))


@contextmanager
def as_owner(conn: psycopg.Connection) -> Iterator[None]:
    """Run the block with `OWNER`'s rights when the session's role may take them without
    having them (`MAINTENANCE`); otherwise (the owner, a superuser, a database without
    the roles) as the session is. Needs an autocommit connection or one transaction."""
    switch = conn.execute(
        "SELECT to_regrole(%s) IS NOT NULL AND pg_has_role(current_user, %s, 'MEMBER') "
        "AND NOT pg_has_role(current_user, %s, 'USAGE')",
        (OWNER, OWNER, OWNER),
    ).fetchone()[0]
    if not switch:
        yield
        return
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(OWNER)))
    try:
        yield
    finally:
        conn.execute("RESET ROLE")


def apply_grants(conn: psycopg.Connection) -> None:
    """Make ownership, grants, row policies and role settings of this database match the
    module's tables; idempotent, and a no-op before migration 0011 created the roles."""
    marker = conn.execute(
        "SELECT 1 FROM system_info WHERE key = %s AND value = %s", MARKER
    ).fetchone() if _has_table(conn, "system_info") else None  # fmt: skip
    if marker is None:
        return
    _own_everything(conn)
    relations = _relations(conn)
    roles = sql.SQL(", ").join(map(sql.Identifier, SERVICE_ROLES))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(roles))
    conn.execute(
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(OWNER))
    )
    for name, kind in relations.items():
        target = sql.SQL("TABLE {}").format(sql.Identifier(name))
        if kind == "S":
            target = sql.SQL("SEQUENCE {}").format(sql.Identifier(name))
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC, {}").format(target, roles))
    for table, by_role in GRANTS.items():
        if table not in relations:
            continue  # a table of a later migration, or one dropped
        for role, privileges in by_role.items():
            if privileges:
                conn.execute(
                    sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                        sql.SQL(privileges), sql.Identifier(table), sql.Identifier(role)
                    )
                )
    _apply_row_policies(conn, relations)
    _apply_function_grants(conn)
    for role, timeout in STATEMENT_TIMEOUTS.items():
        current = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s "
            "JOIN pg_database d ON d.oid = s.setdatabase JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE d.datname = current_database() AND r.rolname = %s",
            (role,),
        ).fetchone()
        if current and f"statement_timeout={timeout}" in (current[0] or []):
            continue  # already so: no CREATEROLE needed (migrations run by the owner)
        conn.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET statement_timeout = {}").format(
                sql.Identifier(role), sql.Identifier(_database(conn)), sql.Literal(timeout)
            )
        )


def apply_grants_retrying(conn: psycopg.Connection, attempts: int = 5) -> None:
    """`apply_grants` in its own transaction, again when it loses a deadlock (TimescaleDB's
    background jobs lock the aggregates whose owner it changes)."""
    for attempt in range(1, attempts + 1):
        try:
            with conn.transaction():
                apply_grants(conn)
            return
        except psycopg.errors.DeadlockDetected:
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)


def revoke_grants(conn: psycopg.Connection) -> None:
    """Undo `apply_grants` in this database (migration 0011's downgrade); the roles stay,
    other databases of the server may use them."""
    relations = _relations(conn)
    roles = sql.SQL(", ").join(map(sql.Identifier, SERVICE_ROLES))
    for table in ROW_POLICIES:
        if table in relations:
            for policy in ("iot_published", "iot_services"):
                conn.execute(
                    sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(
                        sql.Identifier(policy), sql.Identifier(table)
                    )
                )
            conn.execute(
                sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(sql.Identifier(table))
            )
    for name, kind in relations.items():
        target = sql.SQL("{} {}").format(
            sql.SQL("SEQUENCE" if kind == "S" else "TABLE"), sql.Identifier(name)
        )
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(target, roles))
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM {}").format(roles))
    for role in STATEMENT_TIMEOUTS:
        conn.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(
                sql.Identifier(role), sql.Identifier(_database(conn))
            )
        )


def enable_logins(conn: psycopg.Connection, passwords: dict[str, str]) -> None:
    """Let the service roles (and the owner) log in, with a password where one is given.

    Without a password a role can log in only where the server trusts the connection
    (a developer's local trust authentication, as `make up` uses)."""
    unknown = sorted(set(passwords) - set(ROLES))
    if unknown:
        raise ValueError(f"IOT_DB_ROLE_PASSWORDS names unknown role(s) {unknown}; roles: {ROLES}")
    can_login = dict(
        conn.execute(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)", (list(ROLES),)
        ).fetchall()
    )
    for role in ROLES:
        if role in passwords:
            conn.execute(
                sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(passwords[role])
                )
            )
        elif not can_login.get(role, False):
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role)))


def role_url(url: str, role: str, password: str | None = None) -> str:
    """`url` (libpq form) with `role` as the user, and `password` (or none)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    user = quote(role, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def _database(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT current_database()").fetchone()[0]


def _has_table(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{name}",)).fetchone()[0]


# Objects of an extension, and sequences that belong to a column (identity, serial): they
# follow their extension or table.
_NOT_EXTENSION_OR_IDENTITY = """NOT EXISTS (
    SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
    AND (d.deptype = 'e' OR (c.relkind = 'S' AND d.deptype IN ('a', 'i')
                             AND d.refclassid = 'pg_class'::regclass)))"""


def _relations(conn: psycopg.Connection) -> dict[str, str]:
    """The application's tables, views and free-standing sequences in schema public: name ->
    relkind. Partitions are left out (reached through their parent) as are extension objects."""
    rows = conn.execute(
        f"""
        SELECT c.relname, c.relkind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND NOT c.relispartition
          AND {_NOT_EXTENSION_OR_IDENTITY}
        """  # noqa: S608 (a module constant, no input)
    ).fetchall()
    return {name: kind for name, kind in rows if name not in UNGRANTED}


def _own_everything(conn: psycopg.Connection) -> None:
    """Give `OWNER` every relation (partitions too) and iot_* function of schema public."""
    rows = conn.execute(
        f"""
        SELECT c.relname, c.relkind,
               EXISTS (SELECT 1 FROM pg_extension e WHERE e.extname = 'timescaledb')
               AND c.relkind = 'v' AND EXISTS (
                   SELECT 1 FROM pg_views v WHERE v.schemaname = 'public'
                   AND v.viewname = c.relname
                   AND v.definition ILIKE '%%_materialized_hypertable_%%')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND pg_get_userbyid(c.relowner) <> %s
          AND {_NOT_EXTENSION_OR_IDENTITY}
        """,  # noqa: S608 (a module constant, no input)
        (OWNER,),
    ).fetchall()
    for name, kind, is_cagg in rows:
        statement = {
            "v": "ALTER MATERIALIZED VIEW {} OWNER TO {}"
            if is_cagg
            else "ALTER VIEW {} OWNER TO {}",
            "m": "ALTER MATERIALIZED VIEW {} OWNER TO {}",
            "S": "ALTER SEQUENCE {} OWNER TO {}",
            "f": "ALTER FOREIGN TABLE {} OWNER TO {}",
        }.get(kind, "ALTER TABLE {} OWNER TO {}")
        conn.execute(sql.SQL(statement).format(sql.Identifier(name), sql.Identifier(OWNER)))
    functions = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public' AND p.proname LIKE 'iot\\_%%' "
        "AND pg_get_userbyid(p.proowner) <> %s",
        (OWNER,),
    ).fetchall()
    for (signature,) in functions:
        conn.execute(
            sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(
                sql.SQL(signature), sql.Identifier(OWNER)
            )
        )


def _apply_row_policies(conn: psycopg.Connection, relations: dict[str, str]) -> None:
    for table, by_role in ROW_POLICIES.items():
        if relations.get(table) not in ("r", "p"):
            continue
        name = sql.Identifier(table)
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(name))
        for policy in ("iot_published", "iot_services"):
            conn.execute(
                sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(policy), name)
            )
        for role, condition in by_role.items():
            conn.execute(
                sql.SQL("CREATE POLICY iot_published ON {} FOR SELECT TO {} USING ({})").format(
                    name, sql.Identifier(role), sql.SQL(condition)
                )
            )
        others = [r for r in SERVICE_ROLES if r not in by_role]
        conn.execute(
            sql.SQL(
                "CREATE POLICY iot_services ON {} FOR ALL TO {} USING (true) WITH CHECK (true)"
            ).format(name, sql.SQL(", ").join(map(sql.Identifier, others)))
        )


def _apply_function_grants(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "SELECT p.proname, p.oid::regprocedure::text FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public' AND p.proname LIKE 'iot\\_%'"
    ).fetchall()
    roles = sql.SQL(", ").join(map(sql.Identifier, SERVICE_ROLES))
    for name, signature in rows:
        function = sql.SQL(signature)
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC, {}").format(function, roles))
        for role in FUNCTION_GRANTS.get(name, ()):
            conn.execute(
                sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(function, sql.Identifier(role))
            )
