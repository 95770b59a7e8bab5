"""Periodic evaluation: load recent readings into arrays, run the kernels, persist alerts.

One query per metric family (ordered by sensor, time) feeds the padded layout of
analytics/timeseries.py; the kernels never touch the database; analytics/alerts.py makes
the alerts table match what is active now.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format

from analytics import bins, climate, health, parking
from analytics.alerts import ActiveCondition, SyncResult, sync_alerts
from analytics.calendar_store import load_calendar
from analytics.localtime import DEFAULT_TIMEZONE
from analytics.occupancy import SchoolCalendar, occupied_mask, seasonal_band, sensor_state_at
from analytics.thresholds import AnalyticsThresholds, thresholds_from_settings
from analytics.timeseries import Padded, Runs, to_padded
from models.logging import log

RULES = (
    "climate.co2_limit",
    "climate.co2_critical",
    "climate.temperature",
    "climate.humidity",
    "bin.full",
    "bin.soon_full",
    "bin.sudden_rise",
    "bin.fault",
    "parking.long_stay",
    "health.stale",
    "health.low_battery",
    "health.stuck",
    "health.spike",
)


@dataclass(frozen=True)
class Sensors:
    """Active sensors of one municipality, as parallel arrays (row i = sensor i)."""

    id: np.ndarray
    kind: np.ndarray
    zone_id: np.ndarray  # -1 when none
    expected_interval_s: np.ndarray  # NaN when unknown
    bin_depth_mm: np.ndarray
    mount_offset_mm: np.ndarray

    def rows(self, kind: str) -> np.ndarray:
        return np.flatnonzero(self.kind == kind)

    def subset(self, keep: np.ndarray) -> Sensors:
        """The sensors where `keep` (a boolean mask) is True, in the same order."""
        return Sensors(*(getattr(self, f)[keep] for f in Sensors.__dataclass_fields__))


def load_sensors(conn: psycopg.Connection, municipality_id: int) -> Sensors:
    rows = conn.execute(
        """
        SELECT id, kind, coalesce(zone_id, -1), expected_interval_s, bin_depth_mm,
               coalesce(mount_offset_mm, 0)
        FROM sensors WHERE municipality_id = %s AND status = 'active' ORDER BY id
        """,
        (municipality_id,),
    ).fetchall()
    columns = list(zip(*rows, strict=True)) if rows else [()] * 6
    as_float = lambda c: np.array([np.nan if x is None else x for x in c], dtype=float)  # noqa: E731
    return Sensors(
        np.array(columns[0], dtype=np.int64),
        np.array(columns[1], dtype=object),
        np.array(columns[2], dtype=np.int64),
        as_float(columns[3]),
        as_float(columns[4]),
        as_float(columns[5]),
    )


# Readings come one row per sensor: its times and values as two arrays, in the binary
# protocol. A float8[] / timestamptz[] in binary is a small header and then, per element,
# a 4-byte length and 8 bytes of big-endian data, so NumPy reads the elements in place
# (`_binary_array`); no Python object per reading. Row by row (a COPY or a fetchall of
# tuples) cost about 3 µs of Python per reading, more than PostgreSQL took to find it.
_FLOAT8_ARRAY_OID = 1022
_TIMESTAMPTZ_ARRAY_OID = 1185
_PG_EPOCH_S = 946_684_800.0

# Sorted once below the aggregate (the index order), not per group: ORDER BY inside
# array_agg sorted every sensor's readings again and took twice as long.
_READINGS_PER_SENSOR = """
SELECT sensor_id, array_agg(time), array_agg(value)
FROM (
    SELECT sensor_id::int8, time, value FROM readings
    WHERE sensor_id = ANY(%s) AND metric_id = %s AND time > %s AND time <= %s
    ORDER BY sensor_id, time
) r
GROUP BY sensor_id
"""


def _binary_array(data: bytes | memoryview, element: str) -> np.ndarray:
    """The elements of a one-dimensional binary array without NULLs, as `element`
    (NumPy dtype of one element, e.g. ">f8"), read in place."""
    buffer = memoryview(data)
    dimensions = int.from_bytes(buffer[0:4], "big")
    if dimensions == 0:
        return np.empty(0, dtype=element)
    if dimensions != 1 or int.from_bytes(buffer[4:8], "big") != 0:
        raise ValueError("expected a one-dimensional array without NULLs")
    count = int.from_bytes(buffer[12:16], "big", signed=True)
    layout = np.dtype([("length", ">i4"), ("value", element)])
    cells = np.frombuffer(buffer, dtype=layout, count=count, offset=20)
    return cells["value"]


class _Float8ArrayLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> np.ndarray:
        return _binary_array(data, ">f8")


class _TimestamptzArrayLoader(Loader):
    """timestamptz[] as float seconds since the epoch (binary: µs since 2000-01-01 UTC)."""

    format = Format.BINARY

    def load(self, data: Buffer) -> np.ndarray:
        return _binary_array(data, ">i8") / 1e6 + _PG_EPOCH_S


def load_metric(
    conn: psycopg.Connection,
    sensor_ids: np.ndarray,
    metric_id: int,
    since: datetime,
    until: datetime,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segmented (row, time_s, value) of one metric for the given sensors over
    (since, until]; row = index in `sensor_ids` (sorted ascending), sorted by (row, time)."""
    if sensor_ids.size == 0:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    with conn.cursor(binary=True) as cur:
        cur.adapters.register_loader(_FLOAT8_ARRAY_OID, _Float8ArrayLoader)
        cur.adapters.register_loader(_TIMESTAMPTZ_ARRAY_OID, _TimestamptzArrayLoader)
        cur.execute(_READINGS_PER_SENSOR, (sensor_ids.tolist(), metric_id, since, until))
        per_sensor = cur.fetchall()
    if not per_sensor:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    per_sensor.sort(key=lambda r: r[0])
    ids = np.array([r[0] for r in per_sensor], dtype=np.int64)
    lengths = np.array([r[1].size for r in per_sensor], dtype=np.int64)
    row = np.repeat(np.searchsorted(sensor_ids, ids), lengths)
    time_s = np.concatenate([r[1] for r in per_sensor])
    value = np.concatenate([r[2] for r in per_sensor]).astype(np.float64)
    return row, time_s, value


def _padded(conn, sensors: Sensors, rows: np.ndarray, metric_id: int, since, until) -> Padded:
    row, time_s, value = load_metric(conn, sensors.id[rows], metric_id, since, until)
    return to_padded(row, time_s, value, rows.size)


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(float(seconds), UTC)


def _ongoing(
    runs: Runs, rule: str, sensors: Sensors, rows: np.ndarray, message: str, value_key: str
) -> list[ActiveCondition]:
    keep = np.flatnonzero(runs.ongoing)
    return [
        ActiveCondition(
            rule=rule,
            subject=f"sensor:{int(sensors.id[rows[runs.row[i]]])}",
            sensor_id=int(sensors.id[rows[runs.row[i]]]),
            started_at=_ts(runs.start_s[i]),
            last_value=float(runs.peak[i]),
            message=message,
            details={value_key: float(runs.peak[i]), "duration_s": float(runs.duration_s[i])},
        )
        for i in keep
    ]


def _occupancy_state(conn, sensors, rows, metric_ids, since, until) -> Padded:
    """Each room's occupancy (1/0) from its own `occupancy` readings, or from
    `motion_count` (> 0 is occupied) where it has no occupancy reading at that instant."""
    ids = sensors.id[rows]
    parts = []
    for metric in ("motion_count", "occupancy"):  # occupancy last: it wins at one instant
        if metric in metric_ids:
            row, time_s, value = load_metric(conn, ids, metric_ids[metric], since, until)
            parts.append((row, time_s, (value > 0).astype(float)))
    if not parts:
        return to_padded(np.empty(0, np.int64), np.empty(0), np.empty(0), rows.size)
    return to_padded(*(np.concatenate(column) for column in zip(*parts, strict=True)), rows.size)


def _occupied_only(series: Padded, occupied: np.ndarray) -> Padded:
    """The series with values outside occupied samples masked (NaN); times kept, so an
    exceedance ends at the first unoccupied sample."""
    return Padded(series.time_s, np.where(occupied, series.value, np.nan), series.count)


def _occupied_now(series: Padded, occupied: np.ndarray) -> np.ndarray:
    """Per row: is its latest sample occupied (an alert can only be active then)."""
    if occupied.shape[1] == 0:
        return np.zeros(series.count.size, dtype=bool)
    last = np.maximum(series.count - 1, 0)
    return occupied[np.arange(series.count.size), last] & (series.count > 0)


def _active_runs(runs: Runs, occupied_now: np.ndarray | None) -> Runs:
    if occupied_now is None:
        return runs
    return replace(runs, ongoing=runs.ongoing & occupied_now[runs.row])


def evaluate_climate(
    conn,
    sensors,
    metric_ids,
    since,
    until,
    t: AnalyticsThresholds,
    calendar: SchoolCalendar | None = None,
    zone: str = DEFAULT_TIMEZONE,
):
    """CO2 (BR18), temperature and humidity (EN 16798-1) rules, in occupied hours only
    unless `occupied_hours_only` is off: a room is occupied when its occupancy or motion
    sensor says so, else when the school calendar has the schools open. Temperature is
    judged against the heating- or cooling-season band of each sample's local month."""
    rows = sensors.rows("climate")
    c = t.climate
    calendar = calendar or SchoolCalendar.default()
    state = _occupancy_state(conn, sensors, rows, metric_ids, since, until)

    def occupied_of(series: Padded) -> np.ndarray | None:
        if not c.occupied_hours_only:
            return None
        sensor = sensor_state_at(series.time_s, state.time_s, state.value, c.occupancy_max_age_s)
        return occupied_mask(series.time_s, calendar, zone, sensor)

    co2 = _padded(conn, sensors, rows, metric_ids["co2_ppm"], since, until)
    co2_occupied = occupied_of(co2)
    judged = co2 if co2_occupied is None else _occupied_only(co2, co2_occupied)
    now = None if co2_occupied is None else _occupied_now(co2, co2_occupied)
    active: list[ActiveCondition] = []
    for rule, threshold, severity in (
        ("climate.co2_limit", c.co2_limit_ppm, "warning"),
        ("climate.co2_critical", c.co2_critical_ppm, "critical"),
    ):
        runs = climate.co2_episodes(
            judged.time_s,
            judged.value,
            threshold,
            c.co2_hysteresis_ppm,
            c.min_duration_s,
            c.max_gap_s,
        )
        found = _ongoing(
            _active_runs(runs, now),
            rule,
            sensors,
            rows,
            f"CO2 at or above {threshold:g} ppm",
            "peak_ppm",
        )
        active += [ActiveCondition(**{**a.__dict__, "severity": severity}) for a in found]
    for metric, rule, quantity, unit, value_key in (
        ("temperature_c", "climate.temperature", "temperature", "°C", "max_outside_c"),
        ("humidity_pct", "climate.humidity", "humidity", "%", "max_outside_pct"),
    ):
        series = _padded(conn, sensors, rows, metric_ids[metric], since, until)
        if metric == "temperature_c":
            low, high = seasonal_band(
                series.time_s,
                (c.temperature_low_c, c.temperature_high_c),
                (c.temperature_cooling_low_c, c.temperature_cooling_high_c),
                zone,
                c.heating_months,
            )
            hysteresis = c.temperature_hysteresis_c
            band = (
                f"heating season {c.temperature_low_c:g}–{c.temperature_high_c:g} {unit}, "
                f"cooling season {c.temperature_cooling_low_c:g}–"
                f"{c.temperature_cooling_high_c:g} {unit}"
            )
        else:
            low, high = c.humidity_low_pct, c.humidity_high_pct
            hysteresis = c.humidity_hysteresis_pct
            band = f"{low:g}–{high:g} {unit}"
        occupied = occupied_of(series)
        judged_series = series if occupied is None else _occupied_only(series, occupied)
        runs = climate.outside_band_episodes(
            judged_series.time_s,
            judged_series.value,
            low,
            high,
            hysteresis,
            c.comfort_min_duration_s,
            c.max_gap_s,
        )
        series_now = None if occupied is None else _occupied_now(series, occupied)
        active += _ongoing(
            _active_runs(runs, series_now),
            rule,
            sensors,
            rows,
            f"{quantity} outside {band}",
            value_key,
        )
    return active, {"co2": co2}


def evaluate_bins(conn, sensors, metric_ids, since, until, t: AnalyticsThresholds):
    rows = sensors.rows("bin")
    b = t.bins
    ids = sensors.id[rows]
    dist = load_metric(conn, ids, metric_ids["distance_mm"], since, until)
    raw = bins.raw_fill_pct(
        dist[2], sensors.bin_depth_mm[rows][dist[0]], sensors.mount_offset_mm[rows][dist[0]]
    )
    fill = load_metric(conn, ids, metric_ids["fill_pct"], since, until)
    # Where a distance and the bin's depth give a fill level, it wins over a stored
    # fill_pct at the same instant (sort_dedup keeps the last given of duplicates): ingest
    # stores the fill it derives from that very distance clipped to 0..100, which would
    # hide an impossible distance (3000 mm in a 1000 mm bin) from the fault rule. A
    # sensor that reports its own fill and no distance keeps its own, and so does one
    # without a depth (its raw fill is NaN, which sort_dedup drops before choosing).
    data = to_padded(
        np.concatenate([fill[0], dist[0]]),
        np.concatenate([fill[1], dist[1]]),
        np.concatenate([fill[2], raw]),
        rows.size,
    )
    status = bins.evaluate_bins(
        data.time_s,
        data.value,
        until.timestamp(),
        b.full_pct,
        b.soon_full_h,
        b.emptying_drop_pct,
        b.sudden_rise_pct,
        b.recent_s,
        b.fault_margin_pct,
        b.max_points,
    )
    last_s, _ = health.latest(data.time_s, data.value)
    # Distance readings of a bin without a usable bin_depth_mm cannot become fill levels:
    # name the missing configuration instead of blaming the sensor.
    unconfigured = np.zeros(rows.size, dtype=bool)
    unconfigured[dist[0]] = True
    unconfigured &= ~(sensors.bin_depth_mm[rows] > 0) & np.isnan(status.current_pct)
    active = []
    for rule, mask, severity, message in (
        ("bin.full", status.full, "warning", f"bin at or above {b.full_pct:g} %"),
        ("bin.soon_full", status.soon_full, "info", f"bin full within {b.soon_full_h:g} h"),
        ("bin.sudden_rise", status.sudden_rise, "info", "fill level jumped"),
        ("bin.fault", status.fault, "warning", "fill reading impossible or missing"),
    ):
        for i in np.flatnonzero(mask):
            sensor_id = int(ids[i])
            started = last_s[i] if not np.isnan(last_s[i]) else until.timestamp()
            active.append(
                ActiveCondition(
                    rule=rule,
                    subject=f"sensor:{sensor_id}",
                    sensor_id=sensor_id,
                    started_at=_ts(started),
                    severity=severity,
                    message=_UNCONFIGURED_BIN
                    if rule == "bin.fault" and unconfigured[i]
                    else message,
                    last_value=None
                    if np.isnan(status.current_pct[i])
                    else float(status.current_pct[i]),
                    details={
                        "bin_depth_mm_missing": bool(unconfigured[i]),
                        "fill_pct": _json_float(status.current_pct[i]),
                        "rate_pct_per_h": _json_float(status.rate_pct_per_h[i]),
                        "time_to_full_h": _json_float(status.time_to_full_h[i]),
                        "rise_pct": _json_float(status.sudden_rise_pct[i]),
                    },
                )
            )
    return active


_UNCONFIGURED_BIN = "bin_depth_mm not set: distance readings cannot be turned into fill"


def _json_float(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def evaluate_parking(conn, sensors, metric_ids, since, until, t: AnalyticsThresholds):
    rows = sensors.rows("parking")
    p = t.parking
    occ = _padded(conn, sensors, rows, metric_ids["occupied"], since, until)
    runs = parking.long_stays(occ.time_s, occ.value, p.max_stay_s, p.max_gap_s)
    return _ongoing(
        runs,
        "parking.long_stay",
        sensors,
        rows,
        f"bay occupied longer than {p.max_stay_s / 3600:g} h",
        "occupied",
    )


def evaluate_health(
    conn,
    sensors,
    metric_ids,
    since,
    until,
    t: AnalyticsThresholds,
    co2: Padded,
    climate_sensors: Sensors | None = None,
):
    """Stale and battery rules over `sensors` (from latest_readings); stuck and spike over
    the CO2 rows of `climate_sensors` (default `sensors`), whose readings `co2` holds."""
    h = t.health
    now_s = until.timestamp()
    latest = conn.execute(
        """
        SELECT sensor_id, metric_id, extract(epoch FROM time)::float8, value
        FROM latest_readings WHERE sensor_id = ANY(%s)
        """,
        (sensors.id.tolist(),),
    ).fetchall()
    n = sensors.id.size
    last_seen = np.full(n, np.nan)
    battery_v = np.full(n, np.nan)
    battery_pct = np.full(n, np.nan)
    if latest:
        arr = np.array(latest, dtype=float)
        row = np.searchsorted(sensors.id, arr[:, 0].astype(np.int64))
        np.fmax.at(last_seen, row, arr[:, 2])
        for target, name in ((battery_v, "battery_v"), (battery_pct, "battery_pct")):
            pick = arr[:, 1] == metric_ids[name]
            target[row[pick]] = arr[pick, 3]
    active = []
    is_stale = health.stale(
        last_seen, now_s, sensors.expected_interval_s, h.stale_factor, h.default_interval_s
    )
    for i in np.flatnonzero(is_stale):
        active.append(
            _sensor_condition(
                "health.stale",
                sensors,
                i,
                last_seen[i] if not np.isnan(last_seen[i]) else now_s,
                None if np.isnan(last_seen[i]) else now_s - last_seen[i],
                "no data for too long",
                {"last_seen": None if np.isnan(last_seen[i]) else _ts(last_seen[i]).isoformat()},
            )
        )
    low = health.low_battery(battery_v, h.battery_min_v, battery_pct, h.battery_min_pct)
    for i in np.flatnonzero(low):
        value = battery_v[i] if not np.isnan(battery_v[i]) else battery_pct[i]
        active.append(
            _sensor_condition(
                "health.low_battery",
                sensors,
                i,
                last_seen[i],
                value,
                "battery low",
                {
                    "battery_v": _json_float(battery_v[i]),
                    "battery_pct": _json_float(battery_pct[i]),
                },
            )
        )
    # Stuck values and spikes on CO2, a metric that always varies in a used room.
    climate_sensors = sensors if climate_sensors is None else climate_sensors
    rows = climate_sensors.rows("climate")
    stuck = health.stuck_samples(co2.value)
    last_t, last_v = health.latest(co2.time_s, co2.value)
    for r in np.flatnonzero(stuck >= h.stuck_samples):
        active.append(
            _sensor_condition(
                "health.stuck",
                climate_sensors,
                rows[r],
                last_t[r],
                last_v[r],
                "CO2 value not changing",
                {"identical_samples": int(stuck[r])},
            )
        )
    spikes = health.hampel_spikes(
        co2.value, h.spike_half_window, h.spike_sigmas, h.spike_min_co2_ppm
    )
    recent = spikes & (co2.time_s >= now_s - h.spike_recent_s)
    for r in np.flatnonzero(recent.any(axis=1)):
        cols = np.flatnonzero(recent[r])
        active.append(
            _sensor_condition(
                "health.spike",
                climate_sensors,
                rows[r],
                co2.time_s[r, cols[0]],
                co2.value[r, cols[-1]],
                "CO2 spike (Hampel filter)",
                {"spikes": int(cols.size)},
            )
        )
    return active


def _sensor_condition(rule, sensors, i, started_s, value, message, details) -> ActiveCondition:
    sensor_id = int(sensors.id[i])
    return ActiveCondition(
        rule=rule,
        subject=f"sensor:{sensor_id}",
        sensor_id=sensor_id,
        started_at=_ts(started_s),
        last_value=None if value is None or np.isnan(value) else float(value),
        message=message,
        details=details,
    )


@dataclass(frozen=True)
class EvaluationResult:
    municipality_id: int
    active: int
    resolved: int
    by_rule: dict[str, int]


def evaluate_municipality(
    conn: psycopg.Connection,
    municipality_id: int,
    now: datetime | None = None,
    thresholds: AnalyticsThresholds | None = None,
    zone: str = DEFAULT_TIMEZONE,
    changed_since: datetime | None = None,
) -> EvaluationResult:
    """Evaluate every rule for one municipality over its recent readings; persist alerts.

    `now` defaults to the current time; each rule family loads its window back from it
    (climate_window_h, bins_window_h, parking_window_h, each at most window_h).
    Thresholds default to the municipality's settings. `zone` is the local time of school
    hours and seasons (IOT_LOCAL_TIMEZONE).

    `changed_since` makes the evaluation incremental: the climate, bin and parking rules
    (and stuck/spike) run only for sensors whose latest reading is newer than it, and only
    their alerts are resolved; stale and battery run for all (they read latest_readings).
    """
    now = now or datetime.now(UTC)
    if thresholds is None:
        row = conn.execute(
            "SELECT slug, settings FROM municipalities WHERE id = %s", (municipality_id,)
        ).fetchone()
        if row is None:
            raise LookupError(f"no municipality with id {municipality_id}")
        thresholds = thresholds_from_settings(row[1], f"municipalities[{row[0]}].settings")
    e = thresholds.evaluation

    def since(hours: float) -> datetime:
        return now - timedelta(hours=min(hours, e.window_h))

    metric_ids = dict(conn.execute("SELECT name, id FROM metrics").fetchall())
    sensors = load_sensors(conn, municipality_id)
    judged = sensors
    if changed_since is not None:
        judged = sensors.subset(
            np.isin(sensors.id, changed_sensor_ids(conn, sensors, changed_since))
        )
    calendar = load_calendar(conn, municipality_id)
    climate_active, arrays = evaluate_climate(
        conn, judged, metric_ids, since(e.climate_window_h), now, thresholds, calendar, zone
    )
    active = (
        climate_active
        + evaluate_bins(conn, judged, metric_ids, since(e.bins_window_h), now, thresholds)
        + evaluate_parking(conn, judged, metric_ids, since(e.parking_window_h), now, thresholds)
        + evaluate_health(
            conn,
            sensors,
            metric_ids,
            since(e.window_h),
            now,
            thresholds,
            arrays["co2"],
            climate_sensors=judged,
        )
    )
    if changed_since is None:
        result: SyncResult = sync_alerts(conn, municipality_id, RULES, active, now)
    else:
        result = sync_alerts(
            conn,
            municipality_id,
            FULL_SCAN_RULES,
            active,
            now,
            partial_rules=[r for r in RULES if r not in FULL_SCAN_RULES],
            partial_subjects=[f"sensor:{int(i)}" for i in judged.id],
        )
    by_rule: dict[str, int] = {}
    for condition in active:
        by_rule[condition.rule] = by_rule.get(condition.rule, 0) + 1
    log.info(
        "analytics.evaluated",
        municipality_id=municipality_id,
        sensors=int(sensors.id.size),
        judged=int(judged.id.size),
        active=len(active),
        resolved=result.resolved,
    )
    return EvaluationResult(municipality_id, len(active), result.resolved, by_rule)


# Rules judged from latest_readings for every sensor, also in an incremental cycle.
FULL_SCAN_RULES = ("health.stale", "health.low_battery")


def changed_sensor_ids(
    conn: psycopg.Connection, sensors: Sensors, changed_since: datetime
) -> np.ndarray:
    """Ids of `sensors` with a latest reading (any metric) newer than `changed_since`."""
    rows = conn.execute(
        "SELECT DISTINCT sensor_id FROM latest_readings WHERE sensor_id = ANY(%s) AND time > %s",
        (sensors.id.tolist(), changed_since),
    ).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)
