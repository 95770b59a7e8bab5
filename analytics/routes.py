"""Collection routes: travel matrices, VROOM's JSON input, and solving it with pyvroom.

The problem is built once as VROOM's own JSON input (https://github.com/VROOM-Project/vroom
/blob/master/docs/API.md) and the in-system solve parses exactly that document, so an export
handed to an external VROOM server describes the same problem we solved.

Locations are indexed into one matrix: the vehicles' depots first, then the jobs (bins).
Times are whole seconds from an origin the caller chooses (the service uses local midnight of
the collection day), distances whole metres.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import vroom

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)

# Road distance over great-circle distance; 1.3 is the usual figure for mixed urban and rural
# road networks (circuity factors in the literature range 1.2-1.4).
DEFAULT_DETOUR_FACTOR = 1.3
DEFAULT_SPEED_KMH = 30.0  # a refuse truck's average speed between stops, town and suburbs

VROOM_PROFILE = "car"


@dataclass(frozen=True)
class TravelMatrices:
    """Square matrices between locations: road distance in metres and travel time in seconds."""

    distance_m: np.ndarray
    duration_s: np.ndarray


class MatrixSource(Protocol):
    """Anything that turns coordinates into travel matrices (haversine, OSRM, Valhalla, ...)."""

    def matrices(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> TravelMatrices:
        """Distance (m) and duration (s) from every location to every other."""
        ...


def haversine_matrix_m(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres between every pair of points, as an (n, n) array."""
    lat = np.radians(np.asarray(lat_deg, dtype=float))
    lon = np.radians(np.asarray(lon_deg, dtype=float))
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    a = np.sin(dlat / 2) ** 2 + np.cos(lat)[:, None] * np.cos(lat)[None, :] * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


@dataclass(frozen=True)
class HaversineMatrixSource:
    """Straight-line distance times a road detour factor, driven at a constant speed.

    The default source: no road network needed. Swap in a road-network source (anything with
    a `matrices(lat_deg, lon_deg)` method) where an OSRM or Valhalla server is available.
    """

    detour_factor: float = DEFAULT_DETOUR_FACTOR
    speed_kmh: float = DEFAULT_SPEED_KMH

    def matrices(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> TravelMatrices:
        if self.detour_factor < 1.0 or self.speed_kmh <= 0:
            raise ValueError("detour_factor must be >= 1 and speed_kmh > 0")
        distance_m = haversine_matrix_m(lat_deg, lon_deg) * self.detour_factor
        return TravelMatrices(distance_m=distance_m, duration_s=distance_m / (self.speed_kmh / 3.6))


@dataclass(frozen=True)
class Depot:
    """Where vehicles start and end their shift."""

    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class VehicleSpec:
    """One vehicle: its depot, capacity (litres of loose waste) and shift (s from the origin)."""

    id: int
    depot: Depot
    capacity_l: int
    shift_start_s: int
    shift_end_s: int


@dataclass(frozen=True)
class CollectionJob:
    """One bin to empty: `amount_l` litres picked up, `service_s` at the kerb."""

    id: int
    lat: float
    lon: float
    amount_l: int
    service_s: int = 60
    time_windows_s: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class RouteStop:
    """A visited bin in a route: arrival time (s from the origin) and load after the pickup."""

    job_id: int
    lat: float
    lon: float
    arrival_s: int
    load_l: int


@dataclass(frozen=True)
class VehicleRoute:
    """One vehicle's ordered stops, with the route's distance and duration (depot to depot)."""

    vehicle_id: int
    depot: Depot
    stops: list[RouteStop]
    distance_m: float
    duration_s: int
    start_s: int
    end_s: int


@dataclass(frozen=True)
class RoutePlan:
    """The solved plan: one route per used vehicle and the bins no vehicle could take."""

    routes: list[VehicleRoute]
    unassigned_job_ids: list[int] = field(default_factory=list)

    @property
    def distance_m(self) -> float:
        return float(sum(r.distance_m for r in self.routes))

    @property
    def duration_s(self) -> int:
        return int(sum(r.duration_s for r in self.routes))

    @property
    def stop_count(self) -> int:
        return sum(len(r.stops) for r in self.routes)


def location_coordinates(
    vehicles: list[VehicleSpec], jobs: list[CollectionJob]
) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes in matrix order: each vehicle's depot, then each job."""
    lat = [v.depot.lat for v in vehicles] + [j.lat for j in jobs]
    lon = [v.depot.lon for v in vehicles] + [j.lon for j in jobs]
    return np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)


def vroom_problem(
    vehicles: list[VehicleSpec], jobs: list[CollectionJob], matrices: TravelMatrices
) -> dict[str, Any]:
    """VROOM's JSON input for these vehicles and jobs, with custom duration/distance matrices.

    Location i in the matrices is vehicle i's depot for i < len(vehicles), then job
    i - len(vehicles). Bins are pickups (the truck fills up); VROOM optimises duration.
    """
    n = len(vehicles) + len(jobs)
    if matrices.distance_m.shape != (n, n) or matrices.duration_s.shape != (n, n):
        raise ValueError(f"matrices must be {n}x{n} (vehicles' depots, then jobs)")
    if len({j.id for j in jobs}) != len(jobs) or len({v.id for v in vehicles}) != len(vehicles):
        raise ValueError("job ids and vehicle ids must be unique")
    vroom_vehicles = [
        {
            "id": v.id,
            "profile": VROOM_PROFILE,
            "start": [v.depot.lon, v.depot.lat],
            "start_index": i,
            "end": [v.depot.lon, v.depot.lat],
            "end_index": i,
            "capacity": [int(v.capacity_l)],
            "time_window": [int(v.shift_start_s), int(v.shift_end_s)],
            "description": v.depot.name,
        }
        for i, v in enumerate(vehicles)
    ]
    vroom_jobs = []
    for k, j in enumerate(jobs):
        job: dict[str, Any] = {
            "id": j.id,
            "location": [j.lon, j.lat],
            "location_index": len(vehicles) + k,
            "pickup": [int(j.amount_l)],
            "service": int(j.service_s),
        }
        if j.time_windows_s:
            job["time_windows"] = [[int(a), int(b)] for a, b in j.time_windows_s]
        vroom_jobs.append(job)
    return {
        "vehicles": vroom_vehicles,
        "jobs": vroom_jobs,
        "matrices": {
            VROOM_PROFILE: {
                "durations": np.rint(matrices.duration_s).astype(np.int64).tolist(),
                "distances": np.rint(matrices.distance_m).astype(np.int64).tolist(),
            }
        },
    }


def solve_vroom_problem(
    problem: dict[str, Any], exploration_level: int = 5, threads: int = 2
) -> dict[str, Any]:
    """Solve a VROOM JSON input with pyvroom; returns VROOM's own solution document.

    `exploration_level` 0..5 trades time for quality (VROOM's `-x`).
    """
    if not problem.get("jobs"):
        return {"code": 0, "routes": [], "unassigned": []}
    # pyvroom parses JSON only from a file; the file is the exact document we export.
    fd, path = tempfile.mkstemp(suffix=".json", prefix="vroom-")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(problem, handle)
        problem_input = vroom.Input.from_json(path)
    finally:
        os.unlink(path)
    solution = problem_input.solve(exploration_level=exploration_level, nb_threads=threads)
    return solution.to_dict()


# Above this many jobs the whole-problem solve gets slow: VROOM's local search on routes of
# many stops under capacity and shift constraints took, on the bench machine at exploration
# level 5, 1.3 s for 60 bins, 15 s for 120 and ~100 s for 400. So plan_routes splits the
# work above it: sweep, then one route per truck.
DIRECT_SOLVE_MAX_JOBS = 60


def plan_routes(
    vehicles: list[VehicleSpec],
    jobs: list[CollectionJob],
    source: MatrixSource | None = None,
    exploration_level: int = 5,
    threads: int = 2,
    direct_solve_max_jobs: int = DIRECT_SOLVE_MAX_JOBS,
) -> tuple[RoutePlan, dict[str, Any]]:
    """Build the travel matrices and VROOM input, solve it, and read the plan back.

    Returns the plan and the VROOM input document for the whole problem (for export to an
    external solver). Up to `direct_solve_max_jobs` jobs, that document is what is solved.
    Above it, the jobs are split by a sweep (`sweep_partition`) into one group per truck,
    using as few trucks as fit (capacity bound first, one more while a sector's tour breaks
    its shift), and each group is routed by VROOM as a one-vehicle problem: near-linear in
    the number of trucks, at the price of not moving bins between trucks after the sweep.
    """
    if not vehicles:
        raise ValueError("at least one vehicle is needed to plan routes")
    lat, lon = location_coordinates(vehicles, jobs)
    matrices = (source or HaversineMatrixSource()).matrices(lat, lon)
    problem = vroom_problem(vehicles, jobs, matrices)
    if len(jobs) <= direct_solve_max_jobs:
        solution = solve_vroom_problem(problem, exploration_level, threads)
        return plan_from_solution(solution, vehicles, jobs, matrices), problem
    # Use as few trucks as the sweep can make work: start from the capacity bound and add a
    # truck while some sector's route breaks its shift or capacity (fast TSP solves each).
    min_trucks = math.ceil(sum(j.amount_l for j in jobs) / max(v.capacity_l for v in vehicles))
    for n_trucks in range(max(1, min(min_trucks, len(vehicles))), len(vehicles) + 1):
        last_try = n_trucks == len(vehicles)
        plan = _solve_sectors(
            vehicles[:n_trucks], jobs, matrices, exploration_level, threads, len(vehicles), last_try
        )
        if plan is not None:
            return plan, problem
    raise AssertionError("the last try always returns a plan")


def _solve_sectors(
    vehicles: list[VehicleSpec],
    jobs: list[CollectionJob],
    matrices: TravelMatrices,
    exploration_level: int,
    threads: int,
    job_offset: int,
    constrained_fallback: bool,
) -> RoutePlan | None:
    """Sweep `jobs` into one sector per vehicle and route each; None when a sector's
    unconstrained tour breaks its truck's capacity or shift and `constrained_fallback` is off
    (then the caller tries with one more truck)."""
    groups = sweep_partition(vehicles, jobs)
    routes: list[VehicleRoute] = []
    unassigned: list[int] = []
    for v, (vehicle, group) in enumerate(zip(vehicles, groups, strict=True)):
        if not group:
            continue
        # Matrix rows: this vehicle's depot (index v in the whole problem), then its jobs.
        sub_index = np.array([v] + [job_offset + k for k in group])
        sub = TravelMatrices(
            matrices.distance_m[np.ix_(sub_index, sub_index)],
            matrices.duration_s[np.ix_(sub_index, sub_index)],
        )
        sub_jobs = [jobs[k] for k in group]
        solution = _solve_single_vehicle(
            vehicle, sub_jobs, sub, exploration_level, threads, constrained_fallback
        )
        if solution is None:
            return None
        part = plan_from_solution(solution, [vehicle], sub_jobs, sub)
        routes.extend(part.routes)
        unassigned.extend(part.unassigned_job_ids)
    return RoutePlan(routes=routes, unassigned_job_ids=unassigned)


def sweep_partition(vehicles: list[VehicleSpec], jobs: list[CollectionJob]) -> list[list[int]]:
    """Job indices per vehicle: jobs sorted by bearing round the depots' centre, cut into
    contiguous sectors of equal work (the sweep heuristic, Gillett & Miller 1974).

    Work is the pickup volume relative to the vehicle's capacity plus the service time
    relative to its shift, so sectors fill trucks and shifts about evenly.
    """
    if not jobs:
        return [[] for _ in vehicles]
    centre_lat = np.mean([v.depot.lat for v in vehicles])
    centre_lon = np.mean([v.depot.lon for v in vehicles])
    lat = np.array([j.lat for j in jobs])
    lon = np.array([j.lon for j in jobs])
    bearing = np.arctan2((lon - centre_lon) * np.cos(np.radians(centre_lat)), lat - centre_lat)
    capacity_l = np.mean([v.capacity_l for v in vehicles])
    shift_s = np.mean([v.shift_end_s - v.shift_start_s for v in vehicles])
    work = np.array([j.amount_l for j in jobs]) / capacity_l
    work = work + np.array([j.service_s for j in jobs]) / shift_s
    order = np.argsort(bearing, kind="stable")
    cum = np.cumsum(work[order]) - work[order] / 2
    sector = np.minimum((cum / cum[-1] * len(vehicles)).astype(int), len(vehicles) - 1)
    return [order[sector == k].tolist() for k in range(len(vehicles))]


def _solve_single_vehicle(
    vehicle: VehicleSpec,
    jobs: list[CollectionJob],
    matrices: TravelMatrices,
    exploration_level: int,
    threads: int,
    constrained_fallback: bool = True,
) -> dict[str, Any] | None:
    """Route one vehicle; as a plain travelling-salesman tour when constraints cannot bind.

    VROOM solves an unconstrained single-vehicle problem with its fast TSP solver (0.1 s for
    200 stops) instead of the constrained local search. The tour is kept when it fits the
    capacity and the shift; otherwise the constrained problem is solved, or None is returned
    when `constrained_fallback` is off.
    """
    problem = vroom_problem([vehicle], jobs, matrices)
    load_l = sum(j.amount_l for j in jobs)
    if load_l <= vehicle.capacity_l and not any(j.time_windows_s for j in jobs):
        relaxed = {**problem, "vehicles": [dict(problem["vehicles"][0])]}
        for key in ("capacity", "time_window"):
            relaxed["vehicles"][0].pop(key)
        relaxed["jobs"] = [{k: v for k, v in j.items() if k != "pickup"} for j in problem["jobs"]]
        solution = solve_vroom_problem(relaxed, exploration_level, threads)
        steps = solution["routes"][0]["steps"] if solution["routes"] else []
        if steps and steps[-1]["arrival"] <= vehicle.shift_end_s - vehicle.shift_start_s:
            return _with_loads_and_shift(solution, jobs, vehicle.shift_start_s)
    if not constrained_fallback:
        return None
    return solve_vroom_problem(problem, exploration_level, threads)


def _with_loads_and_shift(
    solution: dict[str, Any], jobs: list[CollectionJob], shift_start_s: int
) -> dict[str, Any]:
    """Put back what the relaxed solve left out: cumulative loads and the shift's start time."""
    amount = {j.id: j.amount_l for j in jobs}
    load = 0
    for step in solution["routes"][0]["steps"]:
        if step["type"] == "job":
            load += amount[step["id"]]
        step["load"] = [load]
        step["arrival"] += shift_start_s
    return solution


def plan_from_solution(
    solution: dict[str, Any],
    vehicles: list[VehicleSpec],
    jobs: list[CollectionJob],
    matrices: TravelMatrices,
) -> RoutePlan:
    """Read VROOM's solution into routes, with distances summed from our distance matrix.

    The distance is recomputed from the matrix (rather than taken from VROOM) so that it is in
    metres whatever VROOM was asked to report.
    """
    by_vehicle = {v.id: v for v in vehicles}
    by_job = {j.id: j for j in jobs}
    routes = []
    for route in solution.get("routes", []):
        vehicle = by_vehicle[route["vehicle"]]
        steps = route["steps"]
        order = [s["location_index"] for s in steps]
        distance_m = float(matrices.distance_m[order[:-1], order[1:]].sum())
        stops = [
            RouteStop(
                job_id=s["id"],
                lat=by_job[s["id"]].lat,
                lon=by_job[s["id"]].lon,
                arrival_s=int(s["arrival"]),
                load_l=int(s["load"][0]),
            )
            for s in steps
            if s["type"] == "job"
        ]
        routes.append(
            VehicleRoute(
                vehicle_id=vehicle.id,
                depot=vehicle.depot,
                stops=stops,
                distance_m=distance_m,
                duration_s=int(steps[-1]["arrival"] - steps[0]["arrival"]),
                start_s=int(steps[0]["arrival"]),
                end_s=int(steps[-1]["arrival"]),
            )
        )
    unassigned = [int(u["id"]) for u in solution.get("unassigned", [])]
    return RoutePlan(routes=routes, unassigned_job_ids=unassigned)


def plan_to_json(plan: RoutePlan) -> dict[str, Any]:
    """The plan as plain JSON: per vehicle the ordered stops, distance_m and duration_s."""
    return {
        "distance_m": round(plan.distance_m, 1),
        "duration_s": plan.duration_s,
        "stop_count": plan.stop_count,
        "unassigned_bin_ids": plan.unassigned_job_ids,
        "routes": [
            {
                "vehicle_id": r.vehicle_id,
                "depot": {"name": r.depot.name, "lat": r.depot.lat, "lon": r.depot.lon},
                "start_s": r.start_s,
                "end_s": r.end_s,
                "distance_m": round(r.distance_m, 1),
                "duration_s": r.duration_s,
                "stops": [
                    {
                        "sequence": n,
                        "bin_id": s.job_id,
                        "lat": s.lat,
                        "lon": s.lon,
                        "arrival_s": s.arrival_s,
                        "load_l": s.load_l,
                    }
                    for n, s in enumerate(r.stops, start=1)
                ],
            }
            for r in plan.routes
        ],
    }


def plan_to_geojson(plan: RoutePlan) -> dict[str, Any]:
    """The plan as a GeoJSON FeatureCollection (RFC 7946, [lon, lat]).

    Per vehicle: one LineString feature (depot, stops in order, depot; straight legs, not the
    road geometry) with `feature_type: "route"`, then one Point feature per stop with
    `feature_type: "stop"` and its sequence, bin id, arrival and load.
    """
    features: list[dict[str, Any]] = []
    for r in plan.routes:
        depot = [r.depot.lon, r.depot.lat]
        line = [depot, *([s.lon, s.lat] for s in r.stops), depot]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": line},
                "properties": {
                    "feature_type": "route",
                    "vehicle_id": r.vehicle_id,
                    "depot": r.depot.name,
                    "distance_m": round(r.distance_m, 1),
                    "duration_s": r.duration_s,
                    "stop_count": len(r.stops),
                },
            }
        )
        features.extend(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [s.lon, s.lat]},
                "properties": {
                    "feature_type": "stop",
                    "vehicle_id": r.vehicle_id,
                    "sequence": n,
                    "bin_id": s.job_id,
                    "arrival_s": s.arrival_s,
                    "load_l": s.load_l,
                },
            }
            for n, s in enumerate(r.stops, start=1)
        )
    return {"type": "FeatureCollection", "features": features}
