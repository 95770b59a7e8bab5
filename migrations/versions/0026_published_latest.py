"""Latest values of published sensors for the public API, without a row-level-security probe.

``/api/v1/latest`` read ``sensors`` and ``latest_readings`` as ``iot_api``, whose policy on
``latest_readings`` (0011) checks each row against the published sensors: a hashed subplan
over ``sensors`` on every call, which cost the production role 10-50 % more server time
than the superuser for a page of 10,000 sensors. The page itself lists published sensors
only, so the join of its ids with ``latest_readings`` needs no further check.

``iot_published_latest`` (SECURITY DEFINER, owned by ``iot_owner``, which row-level
security does not apply to) returns the page's rows: published sensors (public and
active, as in api/queries/public.PUBLIC_SENSOR) after ``p_after`` by id, at most
``p_limit``, each with its latest values (one row per metric; one row with NULL metric for
a sensor without any). A NULL filter argument means "any". The statement runs through
EXECUTE: planned on every call with the arguments as constants, so that the filters not
asked for drop out; a kept generic plan cannot drop them and probes ``latest_readings``
once per sensor (BENCHMARKS.md "Open data API: latest values").

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations.sql import run_script

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE FUNCTION iot_published_latest(
    p_municipality text, p_kind text, p_metric text, p_sensors bigint[], p_after bigint,
    p_limit integer
) RETURNS TABLE (sensor_id bigint, municipality text, kind text, metric text,
                 value double precision, "time" timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE $query$
        WITH page AS (
            SELECT s.id, s.kind, m.slug
            FROM public.sensors s JOIN public.municipalities m ON m.id = s.municipality_id
            WHERE s.is_public AND s.status = 'active'
              AND ($1 IS NULL OR m.slug = $1)
              AND ($2 IS NULL OR s.kind = $2)
              AND ($4 IS NULL OR s.id = ANY($4))
              AND s.id > $5
            ORDER BY s.id
            LIMIT $6
        )
        SELECT p.id, p.slug, p.kind, mt.name, l.value, l.time
        FROM page p
        LEFT JOIN (public.latest_readings l JOIN public.metrics mt ON mt.id = l.metric_id
                   AND ($3 IS NULL OR mt.name = $3))
            ON l.sensor_id = p.id
        ORDER BY p.id
    $query$ USING p_municipality, p_kind, p_metric, p_sensors, p_after, p_limit;
END
$$;
"""

DOWNGRADE = """
DROP FUNCTION iot_published_latest(text, text, text, bigint[], bigint, integer);
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
