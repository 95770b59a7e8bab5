"""A month of bin filling and emptying: fixed weekly schedule against sensor-driven routes.

The business case in numbers: kilometres driven, bins emptied and overflow hours (hours a
bin spends full) for two policies over the same simulated fill:

- fixed weekly: every bin is emptied once a week on its sector's weekday (five sectors by
  bearing from the fleet's centre, Monday to Friday), full or not;
- dynamic: every working day the bins that would pass the threshold before the next working
  day are selected by `analytics.collection.select_bins_to_collect` and routed.

Both policies drive routes planned by the same solver (analytics/routes.py), so the
difference in kilometres comes from which bins are visited, not from route quality.
The fill is seeded and simulated hour by hour, vectorised over bins and the hours of a day;
the loop is over days (the routing is per day anyway).

Simplifications, stated: all emptying happens at the round's start hour (a truck's arrival
within the shift is not modelled); overflowing waste is lost (a bin carries at most 100 %);
the dynamic planner knows each bin's long-run mean fill rate (what analytics/bins.py learns
from history), not the day's noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analytics.collection import pickup_volume_l, select_bins_to_collect
from analytics.routes import (
    CollectionJob,
    Depot,
    HaversineMatrixSource,
    MatrixSource,
    VehicleSpec,
    plan_routes,
)

HOURS_PER_DAY = 24
WORKDAYS = 5  # Monday..Friday; rounds are not driven at weekends

# Relative fill rate by hour of day (people throw waste away in the day and evening).
_HOURLY_PROFILE = np.r_[
    [0.2, 0.1, 0.1, 0.1, 0.2, 0.4, 0.8, 1.2, 1.4, 1.3, 1.2, 1.3],  # 00-11
    [1.5, 1.4, 1.3, 1.3, 1.4, 1.6, 1.7, 1.5, 1.2, 0.9, 0.6, 0.4],  # 12-23
]
_HOURLY_PROFILE = _HOURLY_PROFILE / _HOURLY_PROFILE.mean()


@dataclass(frozen=True)
class SimulatedBins:
    """Bins of a synthetic town: positions, volume (litres) and mean fill rate (%/h)."""

    ids: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    volume_l: np.ndarray
    mean_rate_pct_per_h: np.ndarray


@dataclass(frozen=True)
class PolicyResult:
    """One policy over the simulated period."""

    policy: str
    km_driven: float
    bins_emptied: int
    overflow_bin_hours: float
    routes_driven: int
    unassigned_bins: int
    daily_km: list[float] = field(default_factory=list)


def synthetic_bins(
    n_bins: int,
    centre_lat: float,
    centre_lon: float,
    radius_km: float,
    seed: int,
    mean_rate_pct_per_h: float = 0.45,
) -> SimulatedBins:
    """Bins scattered round a town centre (denser in the middle), seeded.

    Volumes are a municipal mix of 240, 370 and 660 litre bins; fill rates are log-normal
    around `mean_rate_pct_per_h` (0.45 %/h fills a bin in about nine days).
    """
    rng = np.random.default_rng(seed)
    r_km = radius_km * np.sqrt(rng.uniform(0, 1, n_bins)) * rng.uniform(0.3, 1.0, n_bins)
    bearing = rng.uniform(0, 2 * np.pi, n_bins)
    lat = centre_lat + (r_km * np.cos(bearing)) / 111.2
    lon = centre_lon + (r_km * np.sin(bearing)) / (111.2 * np.cos(np.radians(centre_lat)))
    volume = rng.choice([240.0, 370.0, 660.0], size=n_bins, p=[0.5, 0.2, 0.3])
    sigma = 0.6
    rate = mean_rate_pct_per_h * rng.lognormal(-(sigma**2) / 2, sigma, n_bins)
    return SimulatedBins(np.arange(1, n_bins + 1), lat, lon, volume, rate)


def weekday_sectors(bins: SimulatedBins, centre_lat: float, centre_lon: float) -> np.ndarray:
    """The fixed schedule's weekday (0 Monday .. 4 Friday) per bin: five equal-size sectors."""
    bearing = np.arctan2(bins.lon - centre_lon, bins.lat - centre_lat)
    rank = np.argsort(np.argsort(bearing))
    return (rank * WORKDAYS // len(rank)).astype(np.int8)


def simulate_policy(
    policy: str,
    bins: SimulatedBins,
    vehicles: list[VehicleSpec],
    days: int = 30,
    seed: int = 0,
    threshold_pct: float = 90.0,
    round_hour: int = 7,
    source: MatrixSource | None = None,
    exploration_level: int = 2,
    daily_noise_sigma: float = 0.4,
) -> PolicyResult:
    """Run one policy ("fixed_weekly" or "dynamic") over `days` days starting on a Monday.

    The same `seed` gives both policies the same hourly fill, so their results compare.
    Each bin's day is its mean rate times a log-normal factor (mean 1, `daily_noise_sigma`).
    """
    if policy not in ("fixed_weekly", "dynamic"):
        raise ValueError(f"unknown policy {policy!r}: use 'fixed_weekly' or 'dynamic'")
    rng = np.random.default_rng(seed)
    centre_lat = float(np.mean([v.depot.lat for v in vehicles]))
    centre_lon = float(np.mean([v.depot.lon for v in vehicles]))
    sector = weekday_sectors(bins, centre_lat, centre_lon)
    fill = np.zeros(len(bins.ids))  # all bins emptied the day before the month starts
    km, emptied, overflow, routes, unassigned = 0.0, 0, 0.0, 0, 0
    daily_km: list[float] = []
    for day in range(days):
        weekday = day % 7
        # This day's hourly increments (bins, 24): profile x per-bin-per-day noise.
        sigma = daily_noise_sigma
        day_noise = rng.lognormal(-(sigma**2) / 2, sigma, len(bins.ids))
        inc = bins.mean_rate_pct_per_h[:, None] * _HOURLY_PROFILE[None, :] * day_noise[:, None]
        before_round = fill + inc[:, :round_hour].sum(axis=1)
        collect = np.zeros(len(bins.ids), dtype=bool)
        day_km = 0.0
        if weekday < WORKDAYS:
            if policy == "fixed_weekly":
                wanted = sector == weekday
            else:
                hours_to_next = HOURS_PER_DAY * (3 if weekday == WORKDAYS - 1 else 1)
                wanted = select_bins_to_collect(
                    np.minimum(before_round, 100.0),
                    bins.mean_rate_pct_per_h,
                    0.0,
                    hours_to_next,
                    threshold_pct,
                ).collect
            collect, day_km, n_routes, n_unassigned = _drive_round(
                wanted, np.minimum(before_round, 100.0), bins, vehicles, source, exploration_level
            )
            km += day_km
            routes += n_routes
            unassigned += n_unassigned
            emptied += int(collect.sum())
        daily_km.append(day_km)
        # Hour-by-hour fill with the collected bins reset to 0 at the round hour.
        cum = fill[:, None] + np.cumsum(inc, axis=1)
        at_round = cum[:, round_hour - 1]
        cum[collect, round_hour - 1 :] -= at_round[collect, None]
        overflow += float((cum >= 100.0).sum())
        fill = np.minimum(cum[:, -1], 100.0)
    return PolicyResult(policy, km / 1000.0, emptied, overflow, routes, unassigned, daily_km)


def _drive_round(
    wanted: np.ndarray,
    fill_pct: np.ndarray,
    bins: SimulatedBins,
    vehicles: list[VehicleSpec],
    source: MatrixSource | None,
    exploration_level: int,
) -> tuple[np.ndarray, float, int, int]:
    """Plan and drive one day's round; returns the bins actually emptied, metres, routes."""
    idx = np.flatnonzero(wanted)
    amount_l = np.ceil(pickup_volume_l(fill_pct[idx], bins.volume_l[idx])).astype(int)
    jobs = [
        CollectionJob(int(bins.ids[i]), float(bins.lat[i]), float(bins.lon[i]), int(a))
        for i, a in zip(idx, amount_l, strict=True)
    ]
    collected = np.zeros(len(bins.ids), dtype=bool)
    if not jobs:
        return collected, 0.0, 0, 0
    plan, _ = plan_routes(vehicles, jobs, source or HaversineMatrixSource(), exploration_level)
    visited = np.array([s.job_id for r in plan.routes for s in r.stops], dtype=np.int64)
    collected[np.isin(bins.ids, visited)] = True
    return collected, plan.distance_m, len(plan.routes), len(plan.unassigned_job_ids)


def compare_policies(
    bins: SimulatedBins,
    vehicles: list[VehicleSpec],
    days: int = 30,
    seed: int = 0,
    threshold_pct: float = 90.0,
    source: MatrixSource | None = None,
    exploration_level: int = 2,
    daily_noise_sigma: float = 0.4,
) -> dict[str, PolicyResult]:
    """Both policies over the same seeded month, keyed by policy name."""
    return {
        policy: simulate_policy(
            policy,
            bins,
            vehicles,
            days=days,
            seed=seed,
            threshold_pct=threshold_pct,
            source=source,
            exploration_level=exploration_level,
            daily_noise_sigma=daily_noise_sigma,
        )
        for policy in ("fixed_weekly", "dynamic")
    }


def default_fleet(
    depot: Depot, n_vehicles: int, capacity_l: int = 60_000, shift_h: tuple[int, int] = (7, 15)
) -> list[VehicleSpec]:
    """`n_vehicles` identical trucks at one depot, shift in hours of the day (seconds inside)."""
    start_s, end_s = shift_h[0] * 3600, shift_h[1] * 3600
    return [VehicleSpec(k + 1, depot, capacity_l, start_s, end_s) for k in range(n_vehicles)]
