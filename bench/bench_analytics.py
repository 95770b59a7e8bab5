"""Analytics rules: vectorised kernels against the plain-Python reference.

    .venv/bin/python bench/bench_analytics.py [--rooms 10000] [--bins 20000] [--bays 5000]
        [--reference-rows 100] [--write]

Synthetic, seeded data in the padded (sensors, samples) layout the evaluation builds:
- climate: 10,000 rooms x 1 week of 5-minute readings (2,016 per room) of CO2,
  temperature and humidity, with school-day CO2 peaks, 2 % missing samples and spikes;
- bins: 20,000 bins x 30 days of hourly fill readings (720 per bin), emptied when full,
  with noise and occasional bags dumped in;
- parking: 5,000 bays x 1 week of 5-minute occupied/free readings.
Each family runs every rule of that family (see docs/analytics.md). The reference runs on
the first `--reference-rows` sensors and is extrapolated linearly to all (the reference
is one independent loop per sensor, so its time is linear in sensors); it would take
hours on the full sets. Peak memory is tracemalloc's peak during the vectorised run, in
a separate pass from the timing. `--write` replaces the "Analytics" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics import bins, climate, health, parking
from bench.report import cpu_model, write_section
from tests.analytics import reference

SECTION = "## Analytics (bench/bench_analytics.py)"
WEEK_5MIN = 7 * 288
T0 = 1_704_672_000.0  # Monday 2024-01-08 00:00 UTC


def climate_data(rooms: int, rng: np.random.Generator):
    t = T0 + np.arange(WEEK_5MIN) * 300.0
    hour = np.mod(t + 3600, 86400) / 3600
    weekday = np.mod(np.floor((t + 3600) / 86400) + 3, 7) < 5
    in_class = weekday & (hour >= 8) & (hour < 15)
    amplitude = rng.uniform(200, 1200, (rooms, 1))
    co2 = 420 + amplitude * in_class * np.clip(np.sin((hour - 8) / 7 * np.pi), 0, 1)
    co2 = co2 + rng.normal(0, 15, co2.shape)
    spikes = rng.random(co2.shape) < 0.0005
    co2[spikes] += 500
    temp = 21 + 2 * in_class + rng.normal(0, 0.3, co2.shape) + rng.normal(0, 1, (rooms, 1))
    hum = 40 + rng.normal(0, 3, co2.shape) + rng.normal(0, 10, (rooms, 1))
    missing = rng.random(co2.shape) < 0.02
    time_s = np.broadcast_to(t, co2.shape).copy()
    for a in (co2, temp, hum):
        a[missing] = np.nan
    # Missing samples are absent, not NaN cells: shift them to the row end like to_padded.
    order = np.argsort(missing, axis=1, kind="stable")
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    time_s = np.where(np.sort(missing, axis=1), np.nan, take(time_s))
    return time_s, take(co2), take(temp), take(hum)


def bin_data(n_bins: int, rng: np.random.Generator):
    hours = 30 * 24
    rate = rng.lognormal(np.log(0.4), 0.6, (n_bins, 1))  # %/h
    dumps = (rng.random((n_bins, hours)) < 0.003) * 20.0
    increments = np.broadcast_to(rate, (n_bins, hours)) + dumps
    level = np.cumsum(increments, axis=1)
    # Emptied at 95 %: subtract whole multiples of 95 (vectorised sawtooth).
    level = np.mod(level, 95.0) + rng.normal(0, 1.5, (n_bins, hours))
    outliers = rng.random(level.shape) < 0.002
    level[outliers] = rng.uniform(-30, 130, outliers.sum())
    time_s = np.broadcast_to(T0 + np.arange(hours) * 3600.0, level.shape).copy()
    return time_s, level


def parking_data(bays: int, rng: np.random.Generator):
    t = T0 + np.arange(WEEK_5MIN) * 300.0
    hour = np.mod(t + 3600, 86400) / 3600
    busy = 0.2 + 0.6 * ((hour > 8) & (hour < 17))
    # Sticky states: a bay changes with small probability per 5 minutes.
    change = rng.random((bays, WEEK_5MIN)) < 0.05
    target = (rng.random((bays, WEEK_5MIN)) < busy).astype(float)
    idx = np.maximum.accumulate(np.where(change, np.arange(WEEK_5MIN), 0), axis=1)
    occupied = np.take_along_axis(target, idx, axis=1)
    return np.broadcast_to(t, occupied.shape).copy(), occupied


# --- vectorised families -------------------------------------------------------------


def _in_chunks(family: Callable, rows_per_chunk: int = 1000) -> Callable:
    """Run a family over blocks of rows: the working set stays small (a loop over blocks
    of a few hundred sensors, not over sensors); every family here is row-independent."""

    def run(*arrays):
        for begin in range(0, arrays[0].shape[0], rows_per_chunk):
            family(*(a[begin : begin + rows_per_chunk] for a in arrays))

    return run


def run_climate(time_s, co2, temp, hum):
    climate.co2_episodes(time_s, co2, 1000.0, 50.0, 900.0, 1800.0)
    climate.co2_episodes(time_s, co2, 1400.0, 50.0, 900.0, 1800.0)
    climate.outside_band_episodes(time_s, temp, 20.0, 24.0, 0.5, 1800.0, 1800.0)
    climate.outside_band_episodes(time_s, hum, 20.0, 70.0, 2.0, 1800.0, 1800.0)
    category = climate.en16798_category(co2)
    climate.category_shares_per_day(time_s, category, climate.school_hours_mask(time_s))


def run_health(time_s, co2):
    last_t, _ = health.latest(time_s, co2)
    health.stale(last_t, T0 + 7 * 86400, health.median_interval_s(time_s))
    health.stuck_samples(co2)
    health.hampel_spikes(co2, 6, 5.0, 100.0)


def run_bins(time_s, level):
    bins.evaluate_bins(time_s, level, T0 + 30 * 86400.0)


def run_parking(time_s, occupied):
    zone = np.arange(occupied.shape[0]) // 50
    occ = parking.zone_occupancy(
        time_s, occupied, zone, int(zone.max()) + 1, T0, T0 + 7 * 86400, 900.0
    )
    parking.peak_hour(occ.bucket_start_s, occ.rate)
    parking.long_stays(time_s, occupied, 4 * 3600.0, 3 * 3600.0)


# --- reference families (one sensor at a time) ---------------------------------------


def _series(t_row, v_row):
    return reference.clean(list(zip(t_row.tolist(), v_row.tolist(), strict=True)))


def ref_climate(time_s, co2, temp, hum):
    for r in range(co2.shape[0]):
        s_co2 = _series(time_s[r], co2[r])
        reference.hysteresis_runs(s_co2, 1000.0, 950.0, 900.0, 1800.0)
        reference.hysteresis_runs(s_co2, 1400.0, 1350.0, 900.0, 1800.0)
        for values, low, high, hyst in ((temp[r], 20.0, 24.0, 0.5), (hum[r], 20.0, 70.0, 2.0)):
            outside = [(t, max(v - high, low - v)) for t, v in _series(time_s[r], values)]
            reference.hysteresis_runs(outside, 1e-12, -hyst, 1800.0, 1800.0)
        occupied = [
            ((math.floor((t + 3600) / 86400) + 3) % 7) < 5 and 8 <= ((t + 3600) % 86400) / 3600 < 16
            for t, _ in s_co2
        ]
        reference.category_shares(s_co2, occupied, 3600.0)


def ref_health(time_s, co2):
    for r in range(co2.shape[0]):
        s = _series(time_s[r], co2[r])
        times = [t for t, _ in s]
        values = [v for _, v in s]
        interval = reference.median_interval(times)
        _ = (T0 + 7 * 86400 - times[-1]) > 3 * interval if times else True
        reference.stuck_count(values)
        reference.hampel(values, 6, 5.0)


REF_BIN_PARAMS = {
    "full_pct": 90.0,
    "soon_full_h": 24.0,
    "emptying_drop_pct": 30.0,
    "sudden_rise_pct": 25.0,
    "recent_s": 6 * 3600.0,
    "fault_margin_pct": 10.0,
    "max_points": 24,
}


def ref_bins(time_s, level):
    for r in range(level.shape[0]):
        reference.bin_status(_series(time_s[r], level[r]), T0 + 30 * 86400.0, REF_BIN_PARAMS)


def ref_parking(time_s, occupied):
    buckets = T0 + np.arange(0, 7 * 86400, 900.0)
    for r in range(occupied.shape[0]):
        s = _series(time_s[r], occupied[r])
        # Forward fill by walking once through samples and buckets together.
        i = 0
        state = math.nan
        for b in buckets.tolist():
            while i < len(s) and s[i][0] <= b:
                state = s[i][1]
                i += 1
            _ = state
        reference.hysteresis_runs(s, 0.5, 0.5, 4 * 3600.0, 3 * 3600.0)


# --- measurement ---------------------------------------------------------------------


def _time(fn: Callable, *arrays, repeat: int = 3) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*arrays)
        best = min(best, time.perf_counter() - start)
    return best


def _peak_mib(fn: Callable, *arrays) -> float:
    tracemalloc.start()
    fn(*arrays)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def _measure(name, size_text, vec, ref, arrays, reference_rows):
    rows = arrays[0].shape[0]
    input_mib = sum(a.nbytes for a in arrays) / 2**20
    vec_s = _time(vec, *arrays)
    peak = _peak_mib(vec, *arrays)
    sub = tuple(a[:reference_rows] for a in arrays)
    start = time.perf_counter()
    ref(*sub)
    ref_sub_s = time.perf_counter() - start
    ref_s = ref_sub_s * rows / reference_rows
    print(f"{name}: vectorised {vec_s:.3f} s, reference ~{ref_s:.0f} s", flush=True)
    return (
        f"| {name} | {size_text} | {vec_s:.2f} s | {peak:.0f} MiB (input {input_mib:.0f} MiB) | "
        f"{ref_sub_s:.2f} s for {reference_rows} → ~{ref_s:.0f} s | {ref_s / vec_s:.0f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=10_000)
    parser.add_argument("--bins", type=int, default=20_000)
    parser.add_argument("--bays", type=int, default=5_000)
    parser.add_argument("--reference-rows", type=int, default=100)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    rng = np.random.default_rng(args.seed)
    n = args.reference_rows

    time_s, co2, temp, hum = climate_data(args.rooms, rng)
    room_size = f"{args.rooms:,} rooms x {WEEK_5MIN:,} (1 week, 5 min)"
    rows = [
        _measure(
            "climate (CO2 limit + critical, temp, humidity, EN 16798-1 shares)",
            room_size,
            _in_chunks(run_climate, 250),
            ref_climate,
            (time_s, co2, temp, hum),
            n,
        ),
        _measure(
            "health (stale, stuck, Hampel spikes) on CO2",
            room_size,
            _in_chunks(run_health, 250),
            ref_health,
            (time_s, co2),
            n,
        ),
    ]
    del time_s, co2, temp, hum
    bt, level = bin_data(args.bins, rng)
    rows.append(
        _measure(
            "bins (emptying, Theil-Sen rate, time to full, full/soon/rise/fault)",
            f"{args.bins:,} bins x 720 (30 days, hourly)",
            _in_chunks(run_bins, 500),
            ref_bins,
            (bt, level),
            n,
        )
    )
    del bt, level
    pt, occupied = parking_data(args.bays, rng)
    rows.append(
        _measure(
            "parking (zone occupancy per 15 min, peak hour, long stays)",
            f"{args.bays:,} bays x {WEEK_5MIN:,} (1 week, 5 min)",
            run_parking,
            ref_parking,
            (pt, occupied),
            n,
        )
    )
    command = " ".join([".venv/bin/python bench/bench_analytics.py", *sys.argv[1:]])
    report = "\n".join(
        [
            SECTION,
            "",
            f"Machine: {cpu_model()}, {os.cpu_count()} cores, shared: 1-minute load average "
            f"{load_at_start:.1f} at start; "
            f"Python {platform.python_version()}, NumPy {np.__version__}.",
            f"Command: `{command}`",
            "",
            "Vectorised time is the best of 3 runs over already padded (sensors, samples) "
            "arrays, in blocks of 250 sensors (500 bins; parking in one call since zones span "
            "bays, its kernels take blocks of bays inside; each block's temporaries stay small "
            "and are reused instead of paged in); "
            "peak memory is tracemalloc's peak during one vectorised run. The "
            "plain-Python reference (tests/analytics/reference.py) ran on the first "
            f"{n} sensors and is extrapolated linearly to all sensors.",
            "",
            "| family | data | vectorised | peak memory | reference | speed-up |",
            "|---|---|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    print(report)
    if args.write:
        write_section(SECTION, report)


if __name__ == "__main__":
    main()
