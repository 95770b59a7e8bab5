"""Readings storage: TimescaleDB hypertable when available, native partitions otherwise.

Both paths give the same relations to query: ``readings`` (raw), ``readings_hourly`` and
``readings_daily`` (bucket, sensor_id, metric_id, count, sum, avg, min, max; UTC buckets).

* TimescaleDB: ``readings`` is a hypertable with 1-day chunks, compression segmented by
  (sensor_id, metric_id), an optional retention policy, and hierarchical continuous
  aggregates with real-time aggregation.
* Plain PostgreSQL: ``readings`` is range-partitioned by UTC day. ``iot_ensure_partitions``
  creates partitions ahead of time (ingest also creates one on demand for late data),
  ``iot_drop_partitions_before`` applies retention, a statement trigger records the hours
  that got new rows, and ``iot_refresh_rollups`` recomputes those hours and their days.

The choice follows IOT_TIMESCALEDB (auto|on|off) and is recorded in system_info.backend.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import text

from migrations.sql import run_script
from models.settings import get_settings

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

READINGS_COLUMNS = """
    time timestamptz NOT NULL,
    sensor_id bigint NOT NULL,
    metric_id smallint NOT NULL,
    value double precision NOT NULL,
    CONSTRAINT pk_readings PRIMARY KEY (sensor_id, metric_id, time)
"""

ROLLUP_COLUMNS = """
    bucket timestamptz NOT NULL,
    sensor_id bigint NOT NULL,
    metric_id smallint NOT NULL,
    count bigint NOT NULL,
    sum double precision NOT NULL,
    avg double precision NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL
"""

PLAIN_UPGRADE = f"""
CREATE TABLE readings ({READINGS_COLUMNS}) PARTITION BY RANGE (time);

CREATE TABLE readings_hourly ({ROLLUP_COLUMNS},
    CONSTRAINT pk_readings_hourly PRIMARY KEY (sensor_id, metric_id, bucket));
CREATE TABLE readings_daily ({ROLLUP_COLUMNS},
    CONSTRAINT pk_readings_daily PRIMARY KEY (sensor_id, metric_id, bucket));

CREATE TABLE rollup_dirty_hours (
    bucket timestamptz NOT NULL,
    CONSTRAINT pk_rollup_dirty_hours PRIMARY KEY (bucket)
);

-- One partition per UTC day, named readings_pYYYYMMDD. Safe to call concurrently.
CREATE FUNCTION iot_ensure_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day date;
    created integer := 0;
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('iot_readings_partitions'));
    FOR day IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        part := 'readings_p' || to_char(day, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                part,
                (day::timestamp AT TIME ZONE 'UTC'),
                ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END $$;

-- Retention: drop whole days that end on or before `cutoff` (a UTC date).
CREATE FUNCTION iot_drop_partitions_before(cutoff date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('iot_readings_partitions'));
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'readings'::regclass
          AND c.relname ~ '^readings_p[0-9]{{8}}$'
          AND to_date(substr(c.relname, 11), 'YYYYMMDD') < cutoff
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;

CREATE FUNCTION iot_mark_dirty_hours() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty_hours (bucket)
    SELECT DISTINCT date_trunc('hour', time, 'UTC') FROM new_rows
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER readings_mark_dirty_hours
    AFTER INSERT ON readings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION iot_mark_dirty_hours();

-- Recompute the rollups of up to `max_hours` dirty hours; returns how many were done.
-- SKIP LOCKED lets several maintenance jobs run without blocking each other.
CREATE FUNCTION iot_refresh_rollups(max_hours integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    hours timestamptz[];
    days timestamptz[];
BEGIN
    WITH taken AS (
        DELETE FROM rollup_dirty_hours
        WHERE bucket IN (SELECT bucket FROM rollup_dirty_hours ORDER BY bucket
                         LIMIT max_hours FOR UPDATE SKIP LOCKED)
        RETURNING bucket)
    SELECT array_agg(bucket) INTO hours FROM taken;
    IF hours IS NULL THEN
        RETURN 0;
    END IF;

    DELETE FROM readings_hourly WHERE bucket = ANY (hours);
    INSERT INTO readings_hourly (bucket, sensor_id, metric_id, count, sum, avg, min, max)
    SELECT h.bucket, r.sensor_id, r.metric_id,
           count(*), sum(r.value), avg(r.value), min(r.value), max(r.value)
    FROM unnest(hours) AS h(bucket)
    JOIN readings r ON r.time >= h.bucket AND r.time < h.bucket + interval '1 hour'
    GROUP BY h.bucket, r.sensor_id, r.metric_id;

    SELECT array_agg(DISTINCT date_trunc('day', b, 'UTC')) INTO days FROM unnest(hours) b;
    DELETE FROM readings_daily WHERE bucket = ANY (days);
    INSERT INTO readings_daily (bucket, sensor_id, metric_id, count, sum, avg, min, max)
    SELECT d.bucket, h.sensor_id, h.metric_id,
           sum(h.count), sum(h.sum), sum(h.sum) / sum(h.count), min(h.min), max(h.max)
    FROM unnest(days) AS d(bucket)
    JOIN readings_hourly h ON h.bucket >= d.bucket AND h.bucket < d.bucket + interval '1 day'
    GROUP BY d.bucket, h.sensor_id, h.metric_id;

    RETURN cardinality(hours);
END $$;

INSERT INTO system_info (key, value) VALUES ('backend', 'postgresql');
"""

PLAIN_DOWNGRADE = """
DROP TABLE readings;
DROP FUNCTION iot_refresh_rollups(integer);
DROP FUNCTION iot_mark_dirty_hours();
DROP FUNCTION iot_drop_partitions_before(date);
DROP FUNCTION iot_ensure_partitions(date, date);
DROP TABLE rollup_dirty_hours;
DROP TABLE readings_daily;
DROP TABLE readings_hourly;
DELETE FROM system_info WHERE key = 'backend';
"""

TIMESCALE_UPGRADE = f"""
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE TABLE readings ({READINGS_COLUMNS});
SELECT create_hypertable('readings', 'time', chunk_time_interval => interval '1 day');
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'sensor_id, metric_id',
    timescaledb.compress_orderby = 'time DESC');
-- Kept so that code and tests can use one schema; unused on TimescaleDB.
CREATE TABLE rollup_dirty_hours (
    bucket timestamptz NOT NULL,
    CONSTRAINT pk_rollup_dirty_hours PRIMARY KEY (bucket)
);
CREATE FUNCTION iot_ensure_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;
CREATE FUNCTION iot_refresh_rollups(max_hours integer DEFAULT 10000) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;
INSERT INTO system_info (key, value) VALUES ('backend', 'timescaledb');
"""

# The daily aggregate's policy window (start_offset below); raw data must outlive it.
LONGEST_REFRESH_WINDOW_DAYS = 5

# Continuous aggregates cannot be created inside a transaction block.
TIMESCALE_AGGREGATES = [
    """
    CREATE MATERIALIZED VIEW readings_hourly
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT time_bucket(interval '1 hour', time) AS bucket, sensor_id, metric_id,
           count(*) AS count, sum(value) AS sum, avg(value) AS avg,
           min(value) AS min, max(value) AS max
    FROM readings GROUP BY 1, 2, 3 WITH NO DATA
    """,
    """
    SELECT add_continuous_aggregate_policy('readings_hourly',
        start_offset => interval '3 days', end_offset => interval '1 hour',
        schedule_interval => interval '15 minutes')
    """,
    """
    CREATE MATERIALIZED VIEW readings_daily
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT time_bucket(interval '1 day', bucket) AS bucket, sensor_id, metric_id,
           sum(count)::bigint AS count, sum(sum) AS sum, sum(sum) / sum(count) AS avg,
           min(min) AS min, max(max) AS max
    FROM readings_hourly GROUP BY 1, 2, 3 WITH NO DATA
    """,
    """
    SELECT add_continuous_aggregate_policy('readings_daily',
        start_offset => interval '5 days', end_offset => interval '1 hour',
        schedule_interval => interval '1 hour')
    """,
]

TIMESCALE_DOWNGRADE = [
    "DROP MATERIALIZED VIEW readings_daily",
    "DROP MATERIALIZED VIEW readings_hourly",
    "DROP TABLE readings",
    "DROP FUNCTION iot_refresh_rollups(integer)",
    "DROP FUNCTION iot_ensure_partitions(date, date)",
    "DROP TABLE rollup_dirty_hours",
    "DELETE FROM system_info WHERE key = 'backend'",
]


def _use_timescaledb() -> bool:
    # Callers (tests, the CLI) may pin the mode; otherwise IOT_TIMESCALEDB decides.
    mode = context.config.attributes.get("timescaledb") or get_settings().timescaledb
    if mode == "off":
        return False
    # Installed is not enough: TimescaleDB must also be preloaded to be created.
    # shared_preload_libraries is hidden from roles without pg_read_all_settings (managed
    # services migrate as such roles); then the loader's own GUC shows it was preloaded.
    available = op.get_bind().scalar(
        text(
            "SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb') "
            "AND COALESCE((SELECT setting LIKE '%timescaledb%' FROM pg_settings "
            "              WHERE name = 'shared_preload_libraries'),"
            "             current_setting('timescaledb.max_background_workers', true) IS NOT NULL)"
        )
    )
    if mode == "on" and not available:
        raise RuntimeError(
            "IOT_TIMESCALEDB=on but the timescaledb extension is not available on this server: "
            "install it, add it to shared_preload_libraries, or set IOT_TIMESCALEDB=auto"
        )
    return bool(available)


# Older releases silently skip the rows after the first conflict of a multi-row
# INSERT ... ON CONFLICT DO NOTHING into a compressed chunk (timescale/timescaledb#7672,
# fixed in 2.18.1): the ingest writer's batches of late data would lose readings.
MIN_TIMESCALEDB_VERSION = (2, 18, 1)


def _require_safe_timescaledb_version() -> None:
    refuse_unsafe_timescaledb_version(
        op.get_bind().scalar(
            text("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        )
    )


def refuse_unsafe_timescaledb_version(version: str) -> None:
    """Raise RuntimeError for a TimescaleDB version (``2.17.2``, ``2.18.0-dev``) that
    loses rows."""
    numbers = tuple(int(part) for part in version.split("-")[0].split(".")[:3])
    if numbers < MIN_TIMESCALEDB_VERSION:
        raise RuntimeError(
            f"TimescaleDB {version} loses rows of INSERT ... ON CONFLICT DO NOTHING into "
            "compressed chunks (timescale/timescaledb#7672): upgrade the extension to "
            f"{'.'.join(map(str, MIN_TIMESCALEDB_VERSION))} or newer, or set IOT_TIMESCALEDB=off"
        )


def _backend() -> str:
    return op.get_bind().scalar(text("SELECT value FROM system_info WHERE key = 'backend'"))


def upgrade() -> None:
    settings = get_settings()
    bind = op.get_bind()
    if not _use_timescaledb():
        run_script(PLAIN_UPGRADE)
        bind.execute(
            text(
                "SELECT iot_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1,"
                " (now() AT TIME ZONE 'UTC')::date + :days_ahead)"
            ),
            {"days_ahead": settings.partition_days_ahead},
        )
        return
    run_script(TIMESCALE_UPGRADE)
    _require_safe_timescaledb_version()
    bind.execute(
        text("SELECT add_compression_policy('readings', make_interval(days => :d))"),
        {"d": settings.compress_after_days},
    )
    if settings.retention_days:
        # A cagg refresh over days whose raw chunks are gone would empty those buckets.
        if settings.retention_days <= LONGEST_REFRESH_WINDOW_DAYS:
            raise RuntimeError(
                f"IOT_RETENTION_DAYS={settings.retention_days} is inside the continuous "
                f"aggregates' refresh window ({LONGEST_REFRESH_WINDOW_DAYS} days) on TimescaleDB: "
                "rollups of dropped days would be emptied; keep raw readings longer"
            )
        bind.execute(
            text("SELECT add_retention_policy('readings', make_interval(days => :d))"),
            {"d": settings.retention_days},
        )
    with op.get_context().autocommit_block():
        for statement in TIMESCALE_AGGREGATES:
            op.execute(statement)


def downgrade() -> None:
    if _backend() == "timescaledb":
        with op.get_context().autocommit_block():
            for statement in TIMESCALE_DOWNGRADE[:2]:
                op.execute(statement)
        for statement in TIMESCALE_DOWNGRADE[2:]:
            op.execute(statement)
    else:
        run_script(PLAIN_DOWNGRADE)
