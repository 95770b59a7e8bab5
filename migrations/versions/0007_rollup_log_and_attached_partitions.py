"""Rollup invalidation log and partitions created without an exclusive lock (plain PostgreSQL).

* ``rollup_dirty_hours`` becomes an append-only log: the readings trigger adds one row per
  (statement, hour), with no ``ON CONFLICT``, and ``iot_refresh_rollups`` deletes only the
  rows its snapshot sees. A batch still open while a refresh runs keeps its own row,
  which becomes visible when the batch commits, so the next refresh recomputes that hour.
  Before, the batch reused the hour's committed marker, the refresh deleted it and
  recomputed the hour without the batch, and nothing marked the hour again. Refreshes run
  one at a time (an advisory lock): two recomputing one hour would collide on its rows.
* ``iot_create_partitions(days)`` creates exactly the given days, each as a table of its
  own that is then attached (``ATTACH PARTITION`` takes SHARE UPDATE EXCLUSIVE on
  ``readings``, which readers and writers do not conflict with; ``CREATE TABLE ...
  PARTITION OF`` took ACCESS EXCLUSIVE and so queued every ingest behind a running
  export). ``iot_ensure_partitions(first, last)`` now goes through it.

On TimescaleDB the log table gets the same shape (the models are shared) and
``iot_create_partitions`` exists as a no-op, as ``iot_ensure_partitions`` does.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from migrations.sql import run_script

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

LOG_UPGRADE = """
ALTER TABLE rollup_dirty_hours DROP CONSTRAINT pk_rollup_dirty_hours;
ALTER TABLE rollup_dirty_hours ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE rollup_dirty_hours ADD CONSTRAINT pk_rollup_dirty_hours PRIMARY KEY (id);
CREATE INDEX ix_rollup_dirty_hours_bucket ON rollup_dirty_hours (bucket);
"""

LOG_DOWNGRADE = """
DROP INDEX ix_rollup_dirty_hours_bucket;
ALTER TABLE rollup_dirty_hours DROP CONSTRAINT pk_rollup_dirty_hours;
ALTER TABLE rollup_dirty_hours DROP COLUMN id;
DELETE FROM rollup_dirty_hours a USING rollup_dirty_hours b
    WHERE a.bucket = b.bucket AND a.ctid > b.ctid;
ALTER TABLE rollup_dirty_hours ADD CONSTRAINT pk_rollup_dirty_hours PRIMARY KEY (bucket);
"""

PLAIN_UPGRADE = """
-- Every statement that stores readings logs its hours; no ON CONFLICT: an existing row may
-- be one a running refresh is about to consume without seeing this statement's rows.
CREATE OR REPLACE FUNCTION iot_mark_dirty_hours() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty_hours (bucket)
    SELECT DISTINCT date_trunc('hour', time, 'UTC') FROM new_rows;
    RETURN NULL;
END $$;

-- Recompute the rollups of up to `max_hours` logged hours; returns how many were done.
-- Consumes only the log rows its DELETE's snapshot sees: their transactions committed
-- before it, so the recompute (a later snapshot) sees their readings. Rows of transactions
-- still open stay for the next refresh.
CREATE OR REPLACE FUNCTION iot_refresh_rollups(max_hours integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    hours timestamptz[];
    days timestamptz[];
BEGIN
    -- One refresh at a time: two recomputing the same hour would insert the same keys.
    -- Each statement below takes its snapshot after this lock is held, so it sees what
    -- the previous refresh committed.
    PERFORM pg_advisory_xact_lock(hashtext('iot_refresh_rollups'));
    WITH chosen AS (
        SELECT DISTINCT bucket FROM rollup_dirty_hours ORDER BY bucket LIMIT max_hours),
    taken AS (
        DELETE FROM rollup_dirty_hours d USING chosen c WHERE d.bucket = c.bucket
        RETURNING d.bucket)
    SELECT array_agg(DISTINCT bucket) INTO hours FROM taken;
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

-- The partitions of exactly these UTC days (readings_pYYYYMMDD), those missing; returns
-- how many were created. Each is built as a table of its own and then attached: ATTACH
-- takes SHARE UPDATE EXCLUSIVE on readings, so neither running readers (exports) nor
-- writers (other ingest batches) hold it up, and it holds none of them up. Callers set
-- lock_timeout (models/partitions.py). Safe to call concurrently.
CREATE FUNCTION iot_create_partitions(days date[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day date;
    created integer := 0;
    part text;
    low timestamptz;
    high timestamptz;
BEGIN
    -- Most calls find every day there (a writer's first batch of a day): no lock then.
    IF NOT EXISTS (SELECT FROM unnest(days) AS d
                   WHERE to_regclass('readings_p' || to_char(d, 'YYYYMMDD')) IS NULL) THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('iot_readings_partitions'));
    FOR day IN SELECT DISTINCT d FROM unnest(days) AS d WHERE d IS NOT NULL ORDER BY d LOOP
        part := 'readings_p' || to_char(day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        low := day::timestamp AT TIME ZONE 'UTC';
        high := (day + 1)::timestamp AT TIME ZONE 'UTC';
        -- The primary key comes along (INCLUDING INDEXES) and is attached to the parent's;
        -- the CHECK spares ATTACH its validating scan and goes once the bound holds.
        EXECUTE format(
            'CREATE TABLE %I (LIKE readings INCLUDING DEFAULTS INCLUDING INDEXES, '
            'CONSTRAINT %I CHECK (time >= %L AND time < %L))',
            part, part || '_bound', low, high);
        EXECUTE format('ALTER TABLE readings ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            part, low, high);
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_bound');
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;

CREATE OR REPLACE FUNCTION iot_ensure_partitions(first_day date, last_day date)
RETURNS integer
LANGUAGE sql AS $$
    SELECT iot_create_partitions(ARRAY(
        SELECT generate_series(first_day, last_day, interval '1 day')::date))
$$;
"""

PLAIN_DOWNGRADE = """
DROP FUNCTION iot_create_partitions(date[]);
CREATE OR REPLACE FUNCTION iot_ensure_partitions(first_day date, last_day date) RETURNS integer
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

CREATE OR REPLACE FUNCTION iot_mark_dirty_hours() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty_hours (bucket)
    SELECT DISTINCT date_trunc('hour', time, 'UTC') FROM new_rows
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION iot_refresh_rollups(max_hours integer DEFAULT 10000) RETURNS integer
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
"""

TIMESCALE_UPGRADE = """
CREATE FUNCTION iot_create_partitions(days date[]) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;
"""

TIMESCALE_DOWNGRADE = "DROP FUNCTION iot_create_partitions(date[]);"


def _plain_postgres() -> bool:
    backend = op.get_bind().scalar(text("SELECT value FROM system_info WHERE key = 'backend'"))
    return backend == "postgresql"


def upgrade() -> None:
    run_script(LOG_UPGRADE)
    run_script(PLAIN_UPGRADE if _plain_postgres() else TIMESCALE_UPGRADE)


def downgrade() -> None:
    run_script(PLAIN_DOWNGRADE if _plain_postgres() else TIMESCALE_DOWNGRADE)
    run_script(LOG_DOWNGRADE)
