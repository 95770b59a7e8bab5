"""Collection routes: time to plan a day for 1,000 bins and 5 vehicles, and a month's km
of the sensor-driven plan against a fixed weekly schedule.

    .venv/bin/python bench/bench_routes.py [--bins 1000] [--vehicles 5] [--days 30] [--write]

Bins are scattered (seeded) round Silkeborg with the depot at the recycling centre north of
the town; distances are haversine x 1.3 detour at 30 km/h. `--write` replaces the
"Collection routes" section of BENCHMARKS.md and leaves the other sections alone.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.collection import pickup_volume_l, select_bins_to_collect
from analytics.collection_sim import compare_policies, default_fleet, synthetic_bins
from analytics.routes import CollectionJob, Depot, plan_routes
from bench.report import cpu_model, write_section

CENTRE = (56.169, 9.545)  # Silkeborg town centre
DEPOT = Depot("Silkeborg genbrugsplads", 56.185, 9.520)
SECTION = "## Collection routes (bench/bench_routes.py)"


def _jobs(bins, idx, fill_pct) -> list[CollectionJob]:
    amount = np.ceil(pickup_volume_l(fill_pct[idx], bins.volume_l[idx])).astype(int)
    return [
        CollectionJob(int(bins.ids[i]), float(bins.lat[i]), float(bins.lon[i]), int(a))
        for i, a in zip(idx, amount, strict=True)
    ]


def _timed_plan(fleet, jobs, repeats: int = 3) -> tuple[float, object]:
    best, plan = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        plan, _ = plan_routes(fleet, jobs)
        best = min(best, time.perf_counter() - start)
    return best, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=1000)
    parser.add_argument("--vehicles", type=int, default=5)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mean-rates", type=float, nargs="+", default=[0.25, 0.45])
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()

    bins = synthetic_bins(args.bins, *CENTRE, radius_km=8.0, seed=args.seed)
    fleet = default_fleet(DEPOT, args.vehicles)
    rng = np.random.default_rng(args.seed)
    fill_now = rng.uniform(0, 95, args.bins)

    # A sensor-driven day: select from all bins, then route the selection.
    start = time.perf_counter()
    decision = select_bins_to_collect(fill_now, bins.mean_rate_pct_per_h, 0.0, 24.0)
    select_s = time.perf_counter() - start
    day_jobs = _jobs(bins, np.flatnonzero(decision.collect), decision.predicted_fill_pct)
    day_s, day_plan = _timed_plan(fleet, day_jobs)
    # Worst case: every bin on one day (fill as now).
    all_jobs = _jobs(bins, np.arange(args.bins), fill_now)
    all_fleet = default_fleet(DEPOT, args.vehicles, capacity_l=120_000)
    all_s, all_plan = _timed_plan(all_fleet, all_jobs)

    # The month, for a town whose bins fill slowly (a fixed week empties half-empty bins)
    # and one whose bins fill about once a week on average (a fixed week lets many overflow).
    months = {}
    start = time.perf_counter()
    for rate in args.mean_rates:
        town = synthetic_bins(args.bins, *CENTRE, 8.0, args.seed, mean_rate_pct_per_h=rate)
        months[rate] = compare_policies(town, fleet, days=args.days, seed=args.seed)
    month_s = time.perf_counter() - start

    lines = [
        SECTION,
        "",
        f"Command: `.venv/bin/python bench/bench_routes.py --bins {args.bins} "
        f"--vehicles {args.vehicles} --days {args.days} --seed {args.seed} --write`",
        "",
        f"Machine: {cpu_model()}, {_cores()} cores (shared with other work while measured); "
        f"Python {platform.python_version()}, pyvroom {version('pyvroom')}, "
        f"numpy {np.__version__}.",
        "",
        f"Plan time (best of 3, matrix + VROOM solve), {args.vehicles} vehicles, "
        "7:00-15:00 shift, one depot:",
        "",
        "| case | bins routed | plan time | km | routes | unassigned |",
        "|---|---:|---:|---:|---:|---:|",
        f"| sensor-driven day (selection {select_s * 1000:.1f} ms) | {len(day_jobs)} | "
        f"{day_s:.2f} s | {day_plan.distance_m / 1000:.1f} | {len(day_plan.routes)} | "
        f"{len(day_plan.unassigned_job_ids)} |",
        f"| all {args.bins} bins in one day (120 m³ trucks) | {len(all_jobs)} | {all_s:.2f} s | "
        f"{all_plan.distance_m / 1000:.1f} | {len(all_plan.routes)} | "
        f"{len(all_plan.unassigned_job_ids)} |",
        "",
        f"Simulated {args.days} days (starting Monday, seed {args.seed}; {month_s:.0f} s to "
        "simulate everything), threshold 90 %, same routing for both policies; mean fill "
        "rate per bin (log-normal spread) as given:",
        "",
        "| mean fill rate | policy | km driven | bins emptied | overflow bin-hours | unassigned |",
        "|---|---|---:|---:|---:|---:|",
        *(
            f"| {rate} %/h ({rate * 168:.0f} %/week) | {r.policy} | {r.km_driven:.0f} | "
            f"{r.bins_emptied} | {r.overflow_bin_hours:.0f} | {r.unassigned_bins} |"
            for rate, month in months.items()
            for r in month.values()
        ),
        "",
        *(_summary(rate, m["dynamic"], m["fixed_weekly"]) for rate, m in months.items()),
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        write_section(SECTION, report)


def _summary(rate: float, dynamic, fixed) -> str:
    return (
        f"- {rate} %/h: sensor-driven vs fixed: km {_change(dynamic.km_driven, fixed.km_driven)}, "
        f"bins emptied {_change(dynamic.bins_emptied, fixed.bins_emptied)}, overflow hours "
        f"{_change(dynamic.overflow_bin_hours, fixed.overflow_bin_hours)}."
    )


def _change(new: float, old: float) -> str:
    return f"{(new - old) / old * 100:+.0f} %" if old else "n/a"


def _cores() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
