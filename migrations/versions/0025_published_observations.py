"""One Datastream's Observations by key for the public API role: a SECURITY DEFINER function.

SensorThings read a Datastream's Observations through the security-barrier views of
migrations 0019 and 0021. The barrier keeps the caller's non-leakproof conditions above
the view's join with ``sensors``; on plain PostgreSQL the planner then no longer walked the
readings primary key from the page's position but sorted a whole window of rows
(``ORDER BY time LIMIT n`` over a join), and SensorThings had to read a month at a time
with two extra queries per page for the Datastream's first and last times.

``iot_published_observations`` serves a page of one Datastream (sensor, metric and
resolution: 0 raw readings, 1 hourly and 2 daily rollup buckets) the way
``iot_published_readings`` serves /api/v1/readings: it returns nothing unless the sensor
is published (public and active, as api/queries/public.PUBLIC_SENSOR), and otherwise runs
one index range scan of the primary key, ``time > p_after AND time < p_before`` in
``p_descending`` order, at most ``p_limit`` rows. The bounds are exclusive (keyset pages
continue after the last row sent; NULL is no bound). Each branch is a static statement,
so PL/pgSQL keeps its plan for the session. The caller's own conditions (SensorThings'
``$filter``) apply to the function's output only, so they cannot see a private row.

The NGSI-LD temporal API reads its per-attribute histories through it as well.

Revision ID: 0025
Revises: 0023
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations.sql import run_script

revision = "0025"
down_revision = "0023"
branch_labels = None
depends_on = None

_RAW = """
        RETURN QUERY
            SELECT r.sensor_id, r.metric_id, 0, r.time, r.time, r.value,
                   NULL::float8, NULL::float8, NULL::bigint
            FROM public.readings r
            WHERE r.sensor_id = p_sensor AND r.metric_id = p_metric
              AND r.time > after_time AND r.time < before_time
            ORDER BY r.time {direction} LIMIT p_limit;"""
_ROLLUP = """
        RETURN QUERY
            SELECT b.sensor_id, b.metric_id, {res}, b.bucket, b.bucket + interval '{width}',
                   b.avg, b.min, b.max, b.count::bigint
            FROM public.{table} b
            WHERE b.sensor_id = p_sensor AND b.metric_id = p_metric
              AND b.bucket > after_time AND b.bucket < before_time
            ORDER BY b.bucket {direction} LIMIT p_limit;"""


def _branches() -> str:
    sources = {
        0: lambda d: _RAW.format(direction=d),
        1: lambda d: _ROLLUP.format(res=1, width="1 hour", table="readings_hourly", direction=d),
        2: lambda d: _ROLLUP.format(res=2, width="1 day", table="readings_daily", direction=d),
    }
    parts = []
    for res, source in sources.items():
        parts.append(
            f"    {'IF' if res == 0 else 'ELSIF'} p_res = {res} THEN\n"
            f"        IF p_descending THEN{source('DESC')}\n"
            f"        ELSE{source('ASC')}\n"
            "        END IF;"
        )
    return "\n".join(parts) + "\n    END IF;"


UPGRADE = f"""
CREATE FUNCTION iot_published_observations(
    p_sensor bigint, p_metric smallint, p_res smallint, p_after timestamptz,
    p_before timestamptz, p_descending boolean, p_limit integer
) RETURNS TABLE (sensor_id bigint, metric_id smallint, res integer, "time" timestamptz,
                 result_time timestamptz, result double precision, min double precision,
                 max double precision, count bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    after_time timestamptz := coalesce(p_after, '-infinity');
    before_time timestamptz := coalesce(p_before, 'infinity');
BEGIN
    IF p_res IS NULL OR p_res NOT IN (0, 1, 2) THEN
        RAISE EXCEPTION 'resolution must be 0 (raw), 1 (hour) or 2 (day), not %', p_res
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM public.sensors s
                   WHERE s.id = p_sensor AND s.is_public AND s.status = 'active') THEN
        RETURN;
    END IF;
{_branches()}
END
$$;
"""

DOWNGRADE = """
DROP FUNCTION iot_published_observations(
    bigint, smallint, smallint, timestamptz, timestamptz, boolean, integer);
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
