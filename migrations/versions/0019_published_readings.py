"""The public API role reads readings and rollups only of published sensors, on both backends.

``sensors`` and ``latest_readings`` have row-level security for ``iot_api`` (0011), but
``readings`` and the rollups had none: SQL run as the public API's role could read a
private sensor's raw readings and hourly/daily figures by its id. Row-level security is
not an option for them: TimescaleDB 2.28 refuses compression and continuous aggregates on
a hypertable with row security, and PostgreSQL refuses ``COPY FROM`` (ingest's write path)
into a table whose row security applies to the copying role.

So ``iot_api`` loses SELECT on ``readings``, ``readings_hourly`` and ``readings_daily``
(models/db_roles.GRANTS) and reads them through objects owned by ``iot_owner`` that let
out rows of published sensors only (public and active, the API's one definition):

* ``iot_published_readings`` and ``iot_published_buckets``: SECURITY DEFINER functions for
  the ordered, limited series of /api/v1/readings (raw, 5 min, hour, day). They keep only
  the published ids among those asked for, then run the same index range scan as before,
  with its plan kept for the session as a prepared statement's would be. A caller's own
  conditions apply to their output only, so they cannot test a private sensor's values.
* ``published_readings``: a security-barrier view for the streamed exports: readings with
  their published sensor's columns, which the exports filter on (so they need no second
  join with sensors). The barrier makes PostgreSQL apply the view's filter before any
  condition of the caller's that is not leakproof (one that could reveal a value through
  an error, say); leakproof ones (the exports' equalities and time range) still reach the
  scans, for partition and chunk exclusion.
* ``iot_published_first_days``: the first daily bucket of each published sensor and
  metric, for the DCAT catalogue's temporal coverage.

Revision ID: 0019
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations.sql import run_script

revision = "0019"
down_revision = "0015"
branch_labels = None
depends_on = None

# The published ids among p_sensors: the one definition of published, as in
# api/queries/public.PUBLIC_SENSOR.
_PUBLISHED_IDS = """published := ARRAY(
        SELECT s.id FROM public.sensors s
        WHERE s.id = ANY(p_sensors) AND s.is_public AND s.status = 'active' ORDER BY s.id);"""

# Static statements, not EXECUTE: PL/pgSQL keeps each one's plan for the session like a
# prepared statement (planned with the call's values first, then a cached generic plan
# when that costs no more). Planning the hourly query over TimescaleDB's aggregate chunks
# anew each call took 20-50 ms; the cached plan runs in about 1 ms.
UPGRADE = f"""
CREATE FUNCTION iot_published_readings(
    p_sensors bigint[], p_metric smallint, p_from timestamptz, p_to timestamptz,
    p_limit integer
) RETURNS TABLE (sensor_id bigint, "time" timestamptz, value double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    published bigint[];
BEGIN
    {_PUBLISHED_IDS}
    RETURN QUERY
        SELECT r.sensor_id, r.time, r.value FROM public.readings r
        WHERE r.sensor_id = ANY(published) AND r.metric_id = p_metric
          AND r.time >= p_from AND r.time < p_to
        ORDER BY r.sensor_id, r.time LIMIT p_limit;
END
$$;

CREATE FUNCTION iot_published_buckets(
    p_width text, p_sensors bigint[], p_metric smallint, p_from timestamptz,
    p_to timestamptz, p_limit integer
) RETURNS TABLE (sensor_id bigint, "time" timestamptz, avg double precision,
                 min double precision, max double precision, count bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    published bigint[];
BEGIN
    IF p_width NOT IN ('5min', 'hour', 'day') THEN
        RAISE EXCEPTION 'bucket width must be 5min, hour or day, not %', p_width
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    {_PUBLISHED_IDS}
    IF p_width = '5min' THEN
        RETURN QUERY
            SELECT r.sensor_id,
                   date_bin('5 minutes', r.time, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
                   avg(r.value), min(r.value), max(r.value), count(*)
            FROM public.readings r
            WHERE r.sensor_id = ANY(published) AND r.metric_id = p_metric
              AND r.time >= p_from AND r.time < p_to
            GROUP BY 1, 2 ORDER BY 1, 2 LIMIT p_limit;
    ELSIF p_width = 'hour' THEN
        RETURN QUERY
            SELECT b.sensor_id, b.bucket, b.avg, b.min, b.max, b.count
            FROM public.readings_hourly b
            WHERE b.sensor_id = ANY(published) AND b.metric_id = p_metric
              AND b.bucket >= p_from AND b.bucket < p_to
            ORDER BY b.sensor_id, b.bucket LIMIT p_limit;
    ELSE
        RETURN QUERY
            SELECT b.sensor_id, b.bucket, b.avg, b.min, b.max, b.count
            FROM public.readings_daily b
            WHERE b.sensor_id = ANY(published) AND b.metric_id = p_metric
              AND b.bucket >= p_from AND b.bucket < p_to
            ORDER BY b.sensor_id, b.bucket LIMIT p_limit;
    END IF;
END
$$;

CREATE FUNCTION iot_published_first_days()
RETURNS TABLE (sensor_id bigint, metric_id smallint, first_day timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT l.sensor_id, l.metric_id,
           (SELECT d.bucket FROM public.readings_daily d
            WHERE d.sensor_id = l.sensor_id AND d.metric_id = l.metric_id
            ORDER BY d.bucket LIMIT 1)
    FROM public.latest_readings l JOIN public.sensors s ON s.id = l.sensor_id
    WHERE s.is_public AND s.status = 'active'
$$;

CREATE VIEW published_readings WITH (security_barrier) AS
SELECT r.time, r.sensor_id, r.metric_id, r.value,
       s.municipality_id, s.name AS sensor_name, s.kind, s.lat, s.lon
FROM readings r
JOIN sensors s ON s.id = r.sensor_id
WHERE s.is_public AND s.status = 'active';
"""

DOWNGRADE = """
DROP VIEW published_readings;
DROP FUNCTION iot_published_first_days();
DROP FUNCTION iot_published_buckets(text, bigint[], smallint, timestamptz, timestamptz, integer);
DROP FUNCTION iot_published_readings(bigint[], smallint, timestamptz, timestamptz, integer);
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
