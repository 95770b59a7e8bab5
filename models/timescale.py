"""TimescaleDB upkeep that does not rely on TimescaleDB's own scheduler.

Two gaps, both closed by the maintenance job (`python -m cli maintenance`):

* **Late data.** The continuous-aggregate policies refresh only their window (the last 3
  days hourly, 5 days daily), and real-time aggregation covers only buckets after the
  materialised ones, so a reading older than the window never reached the rollups. The
  ingest writer records the UTC hours its late (staging-path) rows landed in, in
  ``rollup_dirty_hours`` as on plain PostgreSQL; `refresh_dirty_rollups` refreshes exactly
  those hours and their days.
* **Failing background jobs.** On PostgreSQL 15.20 with TimescaleDB 2.28.3 every scheduled
  run of a policy ends in an error (../shared/timescaledb/README.md); elsewhere a job may
  fail for any reason. `run_policy_jobs` runs the compression, retention and refresh
  policies of this database in the foreground (``CALL run_job``), so compression, retention
  and the rollups stay current whatever the scheduler does, and `failing_jobs` lists the
  jobs whose last scheduled run failed, for /health, /metrics and the maintenance log.

Every refresh needs an autocommit connection: TimescaleDB refuses it inside a transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from models.logging import log

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

# The policies' end_offset: buckets younger than this are left to real-time aggregation.
# Refreshing them would move the watermark past rows still arriving, hiding them.
SETTLE = timedelta(hours=1)

# Policies of this schema's hypertable and aggregates, in the order they are run: the
# hourly aggregate before the daily one that reads it, both before compression, and
# retention last (the migrations keep it outside the refresh windows).
_POLICY_JOBS = """
SELECT j.job_id, j.proc_name, j.hypertable_name
FROM timescaledb_information.jobs j
WHERE j.hypertable_schema = 'public'
  AND j.proc_name IN ('policy_refresh_continuous_aggregate', 'policy_compression',
                      'policy_retention')
ORDER BY CASE j.proc_name WHEN 'policy_refresh_continuous_aggregate' THEN 0
                          WHEN 'policy_compression' THEN 1 ELSE 2 END,
         CASE j.hypertable_name WHEN 'readings_hourly' THEN 0 ELSE 1 END,
         j.job_id
"""

# Jobs whose last scheduled run failed, with the newest recorded error.
FAILING_JOBS = """
SELECT s.job_id, j.proc_name, coalesce(j.hypertable_name, '') AS relation,
       s.total_failures, s.last_run_started_at, e.finish_time, coalesce(e.err_message, '')
FROM timescaledb_information.job_stats s
JOIN timescaledb_information.jobs j ON j.job_id = s.job_id
LEFT JOIN LATERAL (
    SELECT finish_time, err_message FROM timescaledb_information.job_errors e
    WHERE e.job_id = s.job_id ORDER BY e.finish_time DESC LIMIT 1
) e ON true
WHERE s.last_run_status = 'Failed'
ORDER BY s.job_id
"""

# Takes up to %(max_hours)s marks of hours whose UTC day has settled, committing the
# delete before refreshing: a row that lands in such an hour afterwards marks it again.
_TAKE_SETTLED_HOURS = """
DELETE FROM rollup_dirty_hours
WHERE bucket IN (
    SELECT bucket FROM rollup_dirty_hours
    WHERE date_trunc('day', bucket, 'UTC') + interval '1 day' <= %(settled_before)s
    ORDER BY bucket LIMIT %(max_hours)s FOR UPDATE SKIP LOCKED)
RETURNING bucket
"""


@dataclass(frozen=True, slots=True)
class FailingJob:
    job_id: int
    proc_name: str
    relation: str
    total_failures: int
    last_run_started_at: datetime | None
    last_error_at: datetime | None
    last_error: str


@dataclass(frozen=True, slots=True)
class JobsRun:
    ran: int
    failed: list[tuple[int, str]]  # (job id, error)


def ranges(starts: list[datetime], width: timedelta) -> list[tuple[datetime, datetime]]:
    """Sorted bucket starts → the contiguous [start, end) ranges they cover."""
    merged: list[tuple[datetime, datetime]] = []
    for start in sorted(set(starts)):
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], start + width)
        else:
            merged.append((start, start + width))
    return merged


def _refresh(conn: psycopg.Connection, view: str, start: datetime, end: datetime) -> None:
    conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (view, start, end))


def refresh_dirty_rollups(
    conn: psycopg.Connection,
    retention_days: int = 0,
    max_hours: int = 10_000,
    now: datetime | None = None,
) -> int:
    """Refresh the hourly and daily aggregates for the marked hours whose day has ended
    (an hour later, as the policies do); returns how many hours were refreshed. Marks of
    days not yet ended stay for a later pass: until then real-time aggregation or the
    policy windows cover them."""
    now = now or datetime.now(UTC)
    # The log holds a row per marking statement and hour (migration 0007): an hour may come
    # back several times.
    hours = sorted(
        {
            r[0]
            for r in conn.execute(
                _TAKE_SETTLED_HOURS, {"settled_before": now - SETTLE, "max_hours": max_hours}
            )
        }
    )
    if not hours:
        return 0
    if retention_days:
        # Raw rows before the cutoff are dropped (or about to be): refreshing their
        # buckets would empty rollups that are the only history left.
        cutoff = now - timedelta(days=retention_days) + DAY
        hours = [h for h in hours if h >= cutoff]
    try:
        for start, end in ranges(hours, HOUR):
            _refresh(conn, "readings_hourly", start, end)
        days = [h.astimezone(UTC).replace(hour=0) for h in hours]
        for start, end in ranges(days, DAY):
            _refresh(conn, "readings_daily", start, end)
    except BaseException:
        # Put the marks back so the next pass tries again.
        conn.execute(
            "INSERT INTO rollup_dirty_hours (bucket) SELECT unnest(%s::timestamptz[]) "
            "ON CONFLICT DO NOTHING",
            (hours,),
        )
        raise
    return len(hours)


def run_policy_jobs(conn: psycopg.Connection) -> JobsRun:
    """Run this database's refresh, compression and retention policies now, in order; a
    job that fails is logged and the others still run."""
    jobs = conn.execute(_POLICY_JOBS).fetchall()
    failed: list[tuple[int, str]] = []
    for job_id, proc_name, relation in jobs:
        try:
            conn.execute("CALL run_job(%s)", (job_id,))
        except psycopg.Error as exc:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            error = str(exc).strip().splitlines()[0][:300]
            log.error(
                "policy_job_failed", job_id=job_id, proc=proc_name, relation=relation, error=error
            )
            failed.append((job_id, error))
    return JobsRun(ran=len(jobs) - len(failed), failed=failed)


def failing_jobs(conn: psycopg.Connection) -> list[FailingJob]:
    """TimescaleDB jobs of this database whose last scheduled run failed."""
    return [FailingJob(*row) for row in conn.execute(FAILING_JOBS)]
