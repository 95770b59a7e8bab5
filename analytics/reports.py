"""The reports people file, per local month: rooms, schools, bins, parking zones.

- Room-month: occupied hours; EN 16798-1 category shares (I–IV) of occupied time for CO2
  and for temperature (heating- or cooling-season bands by each sample's local month);
  BR18 hours with CO2 above 1,000 ppm in occupied time. Built with `en16798_category`
  and `category_shares_per_day` (analytics/climate.py).
- School: the rooms of one site summed for a school board.
- Bin: emptyings in the month (time and the fill just before), current fill, fill rate
  and time to full (analytics/bins.py).
- Parking zone: mean occupancy per local weekday and hour (`zone_occupancy`,
  `weekday_hour_profile`) and the peak hour (`peak_hour`).

`*_report` functions take arrays and return plain rows (dicts); `load_*` read one
municipality's data for a month (sync psycopg, the evaluation's `load_metric`).
Occupied time follows analytics/occupancy.py: the room's occupancy or motion sensor where
known, else the municipality's school calendar.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg

from analytics import bins, climate, parking
from analytics.calendar_store import load_calendar
from analytics.localtime import DEFAULT_TIMEZONE
from analytics.occupancy import (
    DEFAULT_HEATING_MONTHS,
    SchoolCalendar,
    heating_season,
    occupied_mask,
    sensor_state_at,
)
from analytics.timeseries import Padded, to_padded

BR18_LIMIT_PPM = climate.BR18_CO2_LIMIT_PPM
MAX_SAMPLE_S = 1800.0  # a sample stands for at most this long (a gap counts as nothing)
CATEGORY_KEYS = ("I", "II", "III", "IV")


@dataclass(frozen=True)
class Month:
    """A local calendar month of `zone`: [start, end) as UTC datetimes."""

    year: int
    month: int
    zone: str = DEFAULT_TIMEZONE

    @classmethod
    def parse(cls, text: str, zone: str = DEFAULT_TIMEZONE) -> Month:
        """'2026-01' → Month; ValueError naming the format otherwise."""
        try:
            year, month = (int(part) for part in text.split("-"))
            date(year, month, 1)
        except ValueError:
            raise ValueError(f"month {text!r} is not YYYY-MM, e.g. 2026-01") from None
        if not 1970 <= year <= 9000:
            raise ValueError(f"month {text!r} must be between 1970 and 9000")
        return cls(year, month, zone)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=ZoneInfo(self.zone)).astimezone(UTC)

    @property
    def end(self) -> datetime:
        year, month = (self.year + 1, 1) if self.month == 12 else (self.year, self.month + 1)
        return datetime(year, month, 1, tzinfo=ZoneInfo(self.zone)).astimezone(UTC)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


# --- pure parts --------------------------------------------------------------------------


def sample_durations_s(time_s: np.ndarray, end_s: float) -> np.ndarray:
    """How long each sample of a padded (rows, samples) time array stands for: until the
    next sample, at most MAX_SAMPLE_S (a longer gap is missing data), the last one until
    `end_s` within the same cap. 0 for padding."""
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    following = np.concatenate([time_s[:, 1:], np.full((time_s.shape[0], 1), np.nan)], axis=1)
    following = np.where(np.isnan(following), end_s, following)
    duration = np.clip(following - time_s, 0.0, MAX_SAMPLE_S)
    return np.nan_to_num(duration, nan=0.0)


def _month_shares(
    time_s: np.ndarray, category: np.ndarray, occupied: np.ndarray, zone: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: shares of occupied samples per category over the whole month (from the
    per-day shares of `category_shares_per_day`, weighted by each day's samples), and the
    samples behind them."""
    days = climate.category_shares_per_day(time_s, category, occupied, zone=zone)
    rows = np.atleast_2d(time_s).shape[0]
    if days.share.shape[1] == 0:
        return np.full((rows, 4), np.nan), np.zeros(rows, dtype=np.int64)
    counts = np.nan_to_num(days.share) * days.samples[:, :, None]
    total = days.samples.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts.sum(axis=1) / total[:, None], total


def room_month_report(
    co2: Padded,
    temperature: Padded,
    co2_occupied: np.ndarray,
    temperature_occupied: np.ndarray,
    end_s: float,
    zone: str = DEFAULT_TIMEZONE,
    heating_months: tuple[int, ...] = DEFAULT_HEATING_MONTHS,
) -> list[dict[str, Any]]:
    """Per room (row): occupied hours, BR18 hours above 1,000 ppm in occupied time, and
    EN 16798-1 category shares (fractions of occupied samples) for CO2 and temperature."""
    duration = sample_durations_s(co2.time_s, end_s)
    occupied_s = (duration * co2_occupied).sum(axis=1)
    with np.errstate(invalid="ignore"):
        above = co2.value > BR18_LIMIT_PPM
    br18_s = (duration * (co2_occupied & above)).sum(axis=1)
    co2_shares, co2_samples = _month_shares(
        co2.time_s, climate.en16798_category(co2.value), co2_occupied, zone
    )
    no_co2 = np.full(temperature.value.shape, np.nan)
    heating = heating_season(temperature.time_s, zone, heating_months)
    temperature_category = np.where(
        heating,
        climate.en16798_category(no_co2, temperature.value, heating_season=True),
        climate.en16798_category(no_co2, temperature.value, heating_season=False),
    )
    temperature_shares, temperature_samples = _month_shares(
        temperature.time_s, temperature_category, temperature_occupied, zone
    )
    rows = []
    for r in range(co2.value.shape[0]):
        rows.append(
            {
                "occupied_h": round(float(occupied_s[r]) / 3600.0, 2),
                "br18_hours_above_1000_ppm": round(float(br18_s[r]) / 3600.0, 2),
                "co2_samples": int(co2_samples[r]),
                **{
                    f"co2_category_{k}_share": _share(co2_shares[r, i])
                    for i, k in enumerate(CATEGORY_KEYS)
                },
                "temperature_samples": int(temperature_samples[r]),
                **{
                    f"temperature_category_{k}_share": _share(temperature_shares[r, i])
                    for i, k in enumerate(CATEGORY_KEYS)
                },
            }
        )
    return rows


def _share(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 4)


def school_report(rooms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rooms of each site summed: occupied hours, BR18 hours (total, worst room), and the
    share of occupied time in categories I–II (weighted by each room's samples)."""
    by_site: dict[Any, list[dict[str, Any]]] = {}
    for room in rooms:
        by_site.setdefault((room["site_id"], room["site"]), []).append(room)
    schools = []
    for (site_id, site), members in sorted(by_site.items(), key=lambda kv: str(kv[0][1])):
        worst = max(members, key=lambda r: r["br18_hours_above_1000_ppm"])
        schools.append(
            {
                "site_id": site_id,
                "site": site,
                "rooms": len(members),
                "occupied_h": round(sum(r["occupied_h"] for r in members), 2),
                "br18_hours_above_1000_ppm": round(
                    sum(r["br18_hours_above_1000_ppm"] for r in members), 2
                ),
                "worst_room": worst["room"],
                "worst_room_br18_hours": worst["br18_hours_above_1000_ppm"],
                "co2_category_I_II_share": _weighted_good(members, "co2"),
                "temperature_category_I_II_share": _weighted_good(members, "temperature"),
                "rooms_with_br18_hours": sum(
                    1 for r in members if r["br18_hours_above_1000_ppm"] > 0
                ),
            }
        )
    return schools


def _weighted_good(rooms: list[dict[str, Any]], quantity: str) -> float | None:
    samples = good = 0.0
    for r in rooms:
        n = r[f"{quantity}_samples"]
        if n and r[f"{quantity}_category_I_share"] is not None:
            samples += n
            good += n * (r[f"{quantity}_category_I_share"] + r[f"{quantity}_category_II_share"])
    return round(good / samples, 4) if samples else None


def bin_report(
    fill: Padded, now_s: float, full_pct: float = 90.0, emptying_drop_pct: float = 30.0
) -> list[dict[str, Any]]:
    """Per bin (row): emptyings with the fill just before each, current fill, fill rate
    (%/h, Theil–Sen since the last emptying) and time to full."""
    status = bins.evaluate_bins(
        fill.time_s, fill.value, now_s, full_pct, emptying_drop_pct=emptying_drop_pct
    )
    clipped = np.clip(fill.value, 0.0, 100.0)
    emptied = bins.emptying_mask(clipped, emptying_drop_pct)
    rows = []
    for r in range(fill.value.shape[0]):
        events = []
        for c in np.flatnonzero(emptied[r]):
            before = clipped[r, max(c - 3, 0) : c]
            events.append(
                {
                    "time": datetime.fromtimestamp(float(fill.time_s[r, c]), UTC).isoformat(),
                    "fill_before_pct": round(float(np.nanmax(before)), 1) if before.size else None,
                    "fill_after_pct": round(float(clipped[r, c]), 1),
                }
            )
        rows.append(
            {
                "readings": int(fill.count[r]),
                "emptyings": len(events),
                "mean_fill_at_emptying_pct": round(
                    float(np.mean([e["fill_before_pct"] for e in events])), 1
                )
                if events
                else None,
                "current_fill_pct": _round(status.current_pct[r], 1),
                "fill_rate_pct_per_h": _round(status.rate_pct_per_h[r], 3),
                "time_to_full_h": _round(status.time_to_full_h[r], 1),
                "emptying_history": events,
            }
        )
    return rows


def _round(x: float, digits: int) -> float | None:
    return round(float(x), digits) if np.isfinite(x) else None


def parking_report(
    occupied: Padded,
    zone_of_bay: np.ndarray,
    zone_names: list[str],
    start_s: float,
    end_s: float,
    zone: str = DEFAULT_TIMEZONE,
    bucket_s: float = 900.0,
) -> list[dict[str, Any]]:
    """Per parking zone: mean occupancy rate per local weekday (0 = Monday) and hour, the
    peak hour of the day and its mean rate, the bays."""
    occupancy = parking.zone_occupancy(
        occupied.time_s, occupied.value, zone_of_bay, len(zone_names), start_s, end_s, bucket_s
    )
    profile, counts = parking.weekday_hour_profile(occupancy.bucket_start_s, occupancy.rate, zone)
    hour, mean = parking.peak_hour(occupancy.bucket_start_s, occupancy.rate, zone=zone)
    reports = []
    for z, name in enumerate(zone_names):
        reports.append(
            {
                "zone": name,
                "bays": int((zone_of_bay == z).sum()),
                "peak_hour": int(hour[z]) if hour[z] >= 0 else None,
                "peak_hour_mean_rate": _round(mean[z], 3),
                "mean_rate": _round(np.nanmean(occupancy.rate[z]), 3)
                if np.isfinite(occupancy.rate[z]).any()
                else None,
                "weekday_hour_rate": [
                    [_round(profile[z, d, h], 3) for h in range(24)] for d in range(7)
                ],
                "weekday_hour_buckets": counts[z].tolist(),
            }
        )
    return reports


# --- loading from the database -----------------------------------------------------------


def _sensors(conn: psycopg.Connection, municipality_id: int, kind: str) -> list[tuple]:
    return conn.execute(
        """
        SELECT s.id, coalesce(s.name, s.external_id), st.id, st.name, z.id, z.name
        FROM sensors s
        LEFT JOIN sites st ON st.id = s.site_id
        LEFT JOIN zones z ON z.id = s.zone_id
        WHERE s.municipality_id = %s AND s.kind = %s AND s.status = 'active'
        ORDER BY st.name NULLS LAST, z.name NULLS LAST, s.id
        """,
        (municipality_id, kind),
    ).fetchall()


def _metric_ids(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT name, id FROM metrics").fetchall())


def _load(conn, ids: np.ndarray, metric: int | None, month: Month) -> Padded:
    from analytics.evaluation import load_metric  # evaluation imports nothing from here

    if metric is None or ids.size == 0:
        return to_padded(np.empty(0, np.int64), np.empty(0), np.empty(0), ids.size)
    order = np.argsort(ids)
    row, time_s, value = load_metric(conn, ids[order], metric, month.start, month.end)
    # load_metric numbers rows by the sorted ids; give them back in `ids` order.
    return to_padded(order[row], time_s, value, ids.size)


def load_room_month(
    conn: psycopg.Connection, municipality_id: int, month: Month, site_id: int | None = None
) -> list[dict[str, Any]]:
    """The room-month report of the municipality's climate sensors (one site's with
    `site_id`), in occupied time of its school calendar and occupancy sensors."""
    sensors = [s for s in _sensors(conn, municipality_id, "climate") if site_id in (None, s[2])]
    ids = np.array([s[0] for s in sensors], dtype=np.int64)
    metric = _metric_ids(conn)
    calendar = load_calendar(conn, municipality_id)
    co2 = _load(conn, ids, metric.get("co2_ppm"), month)
    temperature = _load(conn, ids, metric.get("temperature_c"), month)
    state = _occupancy(conn, ids, metric, month)
    rows = room_month_report(
        co2,
        temperature,
        _occupied(co2, state, calendar, month.zone),
        _occupied(temperature, state, calendar, month.zone),
        month.end.timestamp(),
        month.zone,
    )
    return [
        {
            "month": str(month),
            "sensor_id": s[0],
            "room": s[5] or s[1],
            "site_id": s[2],
            "site": s[3],
            **row,
        }
        for s, row in zip(sensors, rows, strict=True)
    ]


def _occupancy(conn, ids: np.ndarray, metric: dict[str, int], month: Month) -> Padded:
    parts = [_load(conn, ids, metric.get(name), month) for name in ("motion_count", "occupancy")]
    rows = [np.repeat(np.arange(ids.size), p.count) for p in parts]
    times = [p.time_s[~np.isnan(p.time_s)] for p in parts]
    values = [(p.value[~np.isnan(p.time_s)] > 0).astype(float) for p in parts]
    return to_padded(np.concatenate(rows), np.concatenate(times), np.concatenate(values), ids.size)


def _occupied(series: Padded, state: Padded, calendar: SchoolCalendar, zone: str) -> np.ndarray:
    sensor = sensor_state_at(series.time_s, state.time_s, state.value, MAX_SAMPLE_S)
    return occupied_mask(series.time_s, calendar, zone, sensor) & ~np.isnan(series.value)


def load_bin_month(
    conn: psycopg.Connection, municipality_id: int, month: Month
) -> list[dict[str, Any]]:
    sensors = conn.execute(
        "SELECT id, coalesce(name, external_id), bin_depth_mm, coalesce(mount_offset_mm, 0) "
        "FROM sensors WHERE municipality_id = %s AND kind = 'bin' AND status = 'active' "
        "ORDER BY id",
        (municipality_id,),
    ).fetchall()
    ids = np.array([s[0] for s in sensors], dtype=np.int64)
    metric = _metric_ids(conn)
    fill = _load(conn, ids, metric.get("fill_pct"), month)
    distance = _load(conn, ids, metric.get("distance_mm"), month)
    depth = np.array([np.nan if s[2] is None else s[2] for s in sensors], dtype=float)
    offset = np.array([s[3] for s in sensors], dtype=float)
    raw = bins.raw_fill_pct(distance.value, depth[:, None], offset[:, None])
    # As in the evaluation: a fill derived from a distance wins over a stored fill_pct.
    rows = [np.repeat(np.arange(ids.size), p.count) for p in (fill, distance)]
    data = to_padded(
        np.concatenate(rows),
        np.concatenate(
            [fill.time_s[~np.isnan(fill.time_s)], distance.time_s[~np.isnan(distance.time_s)]]
        ),
        np.concatenate([fill.value[~np.isnan(fill.time_s)], raw[~np.isnan(distance.time_s)]]),
        ids.size,
    )
    now_s = min(month.end.timestamp(), datetime.now(UTC).timestamp())
    return [
        {"month": str(month), "sensor_id": s[0], "bin": s[1], **row}
        for s, row in zip(sensors, bin_report(data, now_s), strict=True)
    ]


def load_parking_month(
    conn: psycopg.Connection, municipality_id: int, month: Month
) -> list[dict[str, Any]]:
    sensors = _sensors(conn, municipality_id, "parking")
    ids = np.array([s[0] for s in sensors], dtype=np.int64)
    names = sorted({s[5] or s[3] or "uden zone" for s in sensors})
    zone_of_bay = np.array([names.index(s[5] or s[3] or "uden zone") for s in sensors], dtype=int)
    occupied = _load(conn, ids, _metric_ids(conn).get("occupied"), month)
    end_s = min(month.end.timestamp(), datetime.now(UTC).timestamp())
    start_s = month.start.timestamp()
    if end_s <= start_s or not names:
        return []
    return [
        {"month": str(month), **row}
        for row in parking_report(occupied, zone_of_bay, names, start_s, end_s, month.zone)
    ]
