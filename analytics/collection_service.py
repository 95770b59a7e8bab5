"""A municipality's collection day from the database: the bins to empty and the routes.

Reads the municipality's active bin sensors (sensors.kind = 'bin' with lat/lon), their recent
`fill_pct` readings (or `distance_mm` converted with `analytics.bins.fill_level_pct`), and
its depots (sites with kind = 'depot'); the decisions are the pure functions in
analytics/collection.py and analytics/routes.py.

Fill rate: a least-squares slope (percent per hour) over the readings since the bin was last
emptied (the last fall of more than `drop_pct` between consecutive readings). Replace it with
the analytics/bins.py estimator when that lands; the selection only needs the array.

Settings per municipality live in `municipalities.settings["collection"]` (keys of
`CollectionSettings`), so no code change is needed to tune a town.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from psycopg import AsyncConnection

from analytics.bins import fill_level_pct
from analytics.collection import collection_order, pickup_volume_l, select_bins_to_collect
from analytics.routes import (
    CollectionJob,
    Depot,
    HaversineMatrixSource,
    RoutePlan,
    VehicleSpec,
    plan_routes,
    plan_to_geojson,
    plan_to_json,
)
from models.logging import log


class CollectionSetupError(ValueError):
    """The municipality lacks something planning needs (depot, bins); the message says what."""


@dataclass(frozen=True)
class CollectionSettings:
    """Per-municipality collection parameters; override in settings["collection"]."""

    threshold_pct: float = 90.0
    round_start_hour: int = 7  # local time the trucks leave the depot
    round_end_hour: int = 15
    collection_weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)  # Monday = 0
    vehicles: int = 2
    vehicle_capacity_l: int = 60_000  # loose waste a compacting truck takes per shift
    default_bin_volume_l: float = 660.0  # when sensors.install_meta has no volume_l
    service_s: int = 60  # at each bin
    lookback_days: int = 14
    drop_pct: float = 20.0  # a fall larger than this between readings means "emptied"
    detour_factor: float = 1.3
    speed_kmh: float = 30.0
    timezone: str = "Europe/Copenhagen"

    @classmethod
    def from_municipality(cls, raw: dict[str, Any] | None) -> CollectionSettings:
        """Defaults overridden by the known keys of `raw`; unknown keys are an error."""
        raw = raw or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CollectionSetupError(
                f"unknown collection setting(s) {unknown}; known: {sorted(known)}"
            )
        values = dict(raw)
        if "collection_weekdays" in values:
            values["collection_weekdays"] = tuple(int(d) for d in values["collection_weekdays"])
        return cls(**values)


@dataclass(frozen=True)
class BinStates:
    """Per bin sensor, as arrays: where it is, how full and how fast it fills."""

    sensor_ids: np.ndarray
    names: list[str]
    lat: np.ndarray
    lon: np.ndarray
    volume_l: np.ndarray
    fill_pct: np.ndarray  # latest reading; NaN when none in the look-back window
    fill_rate_pct_per_h: np.ndarray  # NaN when fewer than two readings since emptied
    last_reading_at: list[datetime | None]


_BIN_SENSORS = """
SELECT s.id, coalesce(s.name, s.external_id) AS name, s.lat, s.lon, s.bin_depth_mm,
       coalesce(s.mount_offset_mm, 0) AS mount_offset_mm,
       (s.install_meta->>'volume_l')::float AS volume_l
FROM sensors s
WHERE s.municipality_id = %s AND s.kind = 'bin' AND s.status = 'active'
  AND s.lat IS NOT NULL AND s.lon IS NOT NULL
ORDER BY s.id
"""

# Both fill sources; distance_mm only counts where no fill_pct exists at the same instant.
_RECENT_FILL = """
SELECT DISTINCT ON (r.sensor_id, r.time)
       r.sensor_id, extract(epoch FROM r.time)::float AS t_s, m.name AS metric, r.value
FROM readings r JOIN metrics m ON m.id = r.metric_id
WHERE r.sensor_id = ANY(%s) AND m.name IN ('fill_pct', 'distance_mm')
  AND r.time > %s AND r.time <= %s
ORDER BY r.sensor_id, r.time, m.name = 'fill_pct' DESC
"""

_DEPOTS = """
SELECT name, lat, lon FROM sites
WHERE municipality_id = %s AND kind = 'depot' AND lat IS NOT NULL AND lon IS NOT NULL
ORDER BY id
"""

_MUNICIPALITY_SETTINGS = "SELECT settings->'collection' FROM municipalities WHERE id = %s"


async def load_settings(conn: AsyncConnection, municipality_id: int) -> CollectionSettings:
    """The municipality's collection settings (defaults where it sets none)."""
    cur = await conn.execute(_MUNICIPALITY_SETTINGS, (municipality_id,))
    row = await cur.fetchone()
    if row is None:
        raise CollectionSetupError(f"municipality {municipality_id} does not exist")
    return CollectionSettings.from_municipality(row[0])


async def load_bin_states(
    conn: AsyncConnection, municipality_id: int, as_of: datetime, settings: CollectionSettings
) -> BinStates:
    """The municipality's bins with their latest fill and fill rate as of `as_of`."""
    cur = await conn.execute(_BIN_SENSORS, (municipality_id,))
    sensors = await cur.fetchall()
    ids = np.array([s[0] for s in sensors], dtype=np.int64)
    n = len(ids)
    cur = await conn.execute(
        _RECENT_FILL, (ids.tolist(), as_of - timedelta(days=settings.lookback_days), as_of)
    )
    rows = await cur.fetchall()
    volume = np.array(
        [s[6] if s[6] else settings.default_bin_volume_l for s in sensors], dtype=float
    )
    fill = np.full(n, np.nan)
    rate = np.full(n, np.nan)
    last_at: list[datetime | None] = [None] * n
    sensor_idx, t_s, value = _fill_rows(rows, ids, sensors)
    if len(value):
        fill, rate, last_t = fill_since_last_emptied(sensor_idx, t_s, value, n, settings.drop_pct)
        last_at = [
            None if np.isnan(t) else datetime.fromtimestamp(t, tz=as_of.tzinfo) for t in last_t
        ]
    return BinStates(
        sensor_ids=ids,
        names=[s[1] for s in sensors],
        lat=np.array([s[2] for s in sensors], dtype=float),
        lon=np.array([s[3] for s in sensors], dtype=float),
        volume_l=volume,
        fill_pct=fill,
        fill_rate_pct_per_h=rate,
        last_reading_at=last_at,
    )


def _fill_rows(
    rows: list[tuple[Any, ...]], ids: np.ndarray, sensors: list[tuple[Any, ...]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Readings as arrays (sensor position, epoch s, fill %), distance_mm converted to fill
    with the sensor's depth and mount offset; readings that give no fill are dropped."""
    if not rows:
        return np.zeros(0, dtype=int), np.zeros(0), np.zeros(0)
    position = {int(s): k for k, s in enumerate(ids)}
    sensor_idx = np.array([position[r[0]] for r in rows])
    t_s = np.array([r[1] for r in rows], dtype=float)
    value = np.array([r[3] for r in rows], dtype=float)
    is_distance = np.array([r[2] == "distance_mm" for r in rows])
    depth = np.array([s[4] if s[4] is not None else np.nan for s in sensors], dtype=float)
    offset = np.array([s[5] for s in sensors], dtype=float)
    value[is_distance] = fill_level_pct(
        value[is_distance], depth[sensor_idx[is_distance]], offset[sensor_idx[is_distance]]
    )
    keep = ~np.isnan(value)
    return sensor_idx[keep], t_s[keep], value[keep]


def fill_since_last_emptied(
    sensor_idx: np.ndarray, t_s: np.ndarray, fill_pct: np.ndarray, n_sensors: int, drop_pct: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latest fill (%), least-squares fill rate (%/h) since the last emptying, and the latest
    reading time (epoch s), per sensor; rows must be sorted by (sensor, time).

    An emptying is a fall of more than `drop_pct` between consecutive readings of one
    sensor. The rate needs two readings since then (NaN otherwise).
    """
    same_sensor = np.r_[False, sensor_idx[1:] == sensor_idx[:-1]]
    emptied = np.r_[False, np.diff(fill_pct) < -drop_pct] & same_sensor
    segment_start = np.where(~same_sensor | emptied, np.arange(len(t_s)), 0)
    segment_start = np.maximum.accumulate(segment_start)
    last_row = np.r_[np.flatnonzero(~same_sensor[1:]), len(t_s) - 1]
    last_segment = np.full(n_sensors, -1)
    last_segment[sensor_idx[last_row]] = segment_start[last_row]
    in_last = segment_start == last_segment[sensor_idx]

    s, t_h, y = sensor_idx[in_last], t_s[in_last] / 3600.0, fill_pct[in_last]
    t_h = t_h - np.bincount(s, t_h, n_sensors)[s] / np.bincount(s, None, n_sensors)[s]
    count = np.bincount(s, None, n_sensors)
    sum_tt = np.bincount(s, t_h * t_h, n_sensors)
    sum_ty = np.bincount(s, t_h * y, n_sensors)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where((count >= 2) & (sum_tt > 0), sum_ty / sum_tt, np.nan)

    latest_fill = np.full(n_sensors, np.nan)
    latest_t = np.full(n_sensors, np.nan)
    latest_fill[sensor_idx[last_row]] = fill_pct[last_row]
    latest_t[sensor_idx[last_row]] = t_s[last_row]
    return latest_fill, rate, latest_t


def next_collection_day(day: date, weekdays: tuple[int, ...]) -> date:
    """The first collection weekday after `day`."""
    if not weekdays:
        raise CollectionSetupError("collection_weekdays is empty")
    following = day + timedelta(days=1)
    while following.weekday() not in weekdays:
        following += timedelta(days=1)
    return following


async def collection_list(conn: AsyncConnection, municipality_id: int, day: date) -> dict[str, Any]:
    """The bins to empty on `day`, most urgent first, with predicted fill, priority, reason.

    Bins without recent readings are listed under `no_data` so silent sensors get noticed.
    """
    settings = await load_settings(conn, municipality_id)
    tz = ZoneInfo(settings.timezone)
    round_at = datetime.combine(day, time(settings.round_start_hour), tz)
    next_day = next_collection_day(day, settings.collection_weekdays)
    next_at = datetime.combine(next_day, time(settings.round_start_hour), tz)
    bins = await load_bin_states(conn, municipality_id, round_at, settings)

    # Bring every bin to the round time from its own last reading, then decide.
    last_t = np.array([t.timestamp() if t else np.nan for t in bins.last_reading_at])
    hours_since = np.clip((round_at.timestamp() - last_t) / 3600.0, 0.0, None)
    rate = np.clip(np.nan_to_num(bins.fill_rate_pct_per_h), 0.0, None)
    fill_at_round = bins.fill_pct + rate * np.nan_to_num(hours_since)
    hours_to_next = (next_at - round_at).total_seconds() / 3600.0
    decision = select_bins_to_collect(
        fill_at_round, rate, 0.0, hours_to_next, settings.threshold_pct
    )
    volume_l = pickup_volume_l(decision.predicted_fill_pct, bins.volume_l)
    items = [
        {
            "bin_id": int(bins.sensor_ids[k]),
            "name": bins.names[k],
            "lat": float(bins.lat[k]),
            "lon": float(bins.lon[k]),
            "fill_pct": _num(bins.fill_pct[k]),
            "fill_rate_pct_per_h": _num(bins.fill_rate_pct_per_h[k]),
            "last_reading_at": _iso(bins.last_reading_at[k]),
            "predicted_fill_pct": round(float(decision.predicted_fill_pct[k]), 1),
            "fill_at_next_opportunity_pct": round(
                float(decision.fill_at_next_opportunity_pct[k]), 1
            ),
            "hours_to_full": _num(decision.hours_to_full_h[k]),
            "priority": int(decision.priority[k]),
            "reason": str(decision.reason[k]),
            "volume_l": float(bins.volume_l[k]),
            "pickup_volume_l": round(float(volume_l[k]), 1),
        }
        for k in collection_order(decision)
    ]
    no_data = [
        {"bin_id": int(bins.sensor_ids[k]), "name": bins.names[k]}
        for k in np.flatnonzero(decision.reason == "no_data")
    ]
    log.info(
        "collection_list",
        municipality_id=municipality_id,
        day=day.isoformat(),
        bins=len(bins.sensor_ids),
        selected=len(items),
        no_data=len(no_data),
    )
    return {
        "municipality_id": municipality_id,
        "date": day.isoformat(),
        "round_starts_at": round_at.isoformat(),
        "next_opportunity_at": next_at.isoformat(),
        "threshold_pct": settings.threshold_pct,
        "bins_total": len(bins.sensor_ids),
        "bins": items,
        "no_data": no_data,
    }


async def load_depots(conn: AsyncConnection, municipality_id: int) -> list[Depot]:
    """The municipality's depots: sites with kind 'depot' and coordinates."""
    cur = await conn.execute(_DEPOTS, (municipality_id,))
    return [Depot(name, lat, lon) for name, lat, lon in await cur.fetchall()]


async def collection_route(
    conn: AsyncConnection, municipality_id: int, day: date
) -> tuple[dict[str, Any], RoutePlan, dict[str, Any]]:
    """Plan `day`'s routes for the listed bins.

    Returns (the collection list, the plan, the VROOM input document). Arrival times in the
    plan are seconds after local midnight of `day`. The solve is CPU-bound (up to about a
    second for a thousand bins), so it runs in a worker thread, off the event loop.
    """
    settings = await load_settings(conn, municipality_id)
    depots = await load_depots(conn, municipality_id)
    if not depots:
        raise CollectionSetupError(
            "no depot: add a site with kind 'depot' and lat/lon for this municipality"
        )
    listing = await collection_list(conn, municipality_id, day)
    vehicles = [
        VehicleSpec(
            id=k + 1,
            depot=depots[k % len(depots)],
            capacity_l=settings.vehicle_capacity_l,
            shift_start_s=settings.round_start_hour * 3600,
            shift_end_s=settings.round_end_hour * 3600,
        )
        for k in range(settings.vehicles)
    ]
    jobs = [
        CollectionJob(
            id=b["bin_id"],
            lat=b["lat"],
            lon=b["lon"],
            amount_l=int(np.ceil(b["pickup_volume_l"])),
            service_s=settings.service_s,
        )
        for b in listing["bins"]
    ]
    source = HaversineMatrixSource(settings.detour_factor, settings.speed_kmh)
    plan, problem = await asyncio.to_thread(plan_routes, vehicles, jobs, source)
    log.info(
        "collection_route",
        municipality_id=municipality_id,
        day=day.isoformat(),
        bins=len(jobs),
        routes=len(plan.routes),
        distance_m=round(plan.distance_m),
        unassigned=len(plan.unassigned_job_ids),
    )
    return listing, plan, problem


def route_document(listing: dict[str, Any], plan: RoutePlan, fmt: str) -> dict[str, Any]:
    """The route as JSON (`fmt="json"`) or a GeoJSON FeatureCollection (`fmt="geojson"`)."""
    if fmt == "geojson":
        return plan_to_geojson(plan)
    if fmt != "json":
        raise ValueError(f"unknown format {fmt!r}: use 'json' or 'geojson'")
    midnight = datetime.fromisoformat(listing["round_starts_at"]).replace(hour=0, minute=0)
    doc = plan_to_json(plan)
    for route in doc["routes"]:
        for stop in route["stops"]:
            stop["arrival_at"] = (midnight + timedelta(seconds=stop["arrival_s"])).isoformat()
    return {"date": listing["date"], "times_from": midnight.isoformat(), **doc}


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 3)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None
