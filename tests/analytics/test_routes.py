"""Route planning against small instances whose optimum is known by hand or brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from analytics.routes import (
    EARTH_RADIUS_M,
    CollectionJob,
    Depot,
    HaversineMatrixSource,
    TravelMatrices,
    VehicleSpec,
    haversine_matrix_m,
    location_coordinates,
    plan_routes,
    plan_to_geojson,
    plan_to_json,
    vroom_problem,
)

DEPOT = Depot("Genbrugsplads", lat=56.15, lon=10.20)
DAY_S = 24 * 3600
M_PER_DEG_LAT = EARTH_RADIUS_M * math.pi / 180


def _vehicle(vid: int = 1, capacity_l: int = 10_000, depot: Depot = DEPOT) -> VehicleSpec:
    return VehicleSpec(vid, depot, capacity_l, shift_start_s=0, shift_end_s=DAY_S)


def _jobs(coords: list[tuple[float, float]], amount_l: int = 100, **kw) -> list[CollectionJob]:
    return [CollectionJob(100 + i, lat, lon, amount_l, **kw) for i, (lat, lon) in enumerate(coords)]


def test_haversine_matches_a_meridian_arc_and_is_symmetric():
    lat = np.array([56.0, 56.1, 55.5])
    lon = np.array([10.0, 10.0, 10.3])
    d = haversine_matrix_m(lat, lon)
    assert d[0, 1] == pytest.approx(0.1 * M_PER_DEG_LAT, rel=1e-9)
    assert np.allclose(d, d.T)
    assert np.all(np.diag(d) == 0)


def test_haversine_source_applies_detour_factor_and_speed():
    lat, lon = np.array([56.0, 56.1]), np.array([10.0, 10.0])
    m = HaversineMatrixSource(detour_factor=1.5, speed_kmh=36.0).matrices(lat, lon)
    assert m.distance_m[0, 1] == pytest.approx(1.5 * 0.1 * M_PER_DEG_LAT)
    assert m.duration_s[0, 1] == pytest.approx(m.distance_m[0, 1] / 10.0)
    with pytest.raises(ValueError, match="detour_factor"):
        HaversineMatrixSource(detour_factor=0.5).matrices(lat, lon)


def test_bins_on_a_line_are_collected_out_and_back():
    # Bins 1..5 km due north: the optimal tour is depot -> farthest -> depot, 10 km.
    coords = [(DEPOT.lat + k * 1000 / M_PER_DEG_LAT, DEPOT.lon) for k in (3, 1, 5, 2, 4)]
    plan, _ = plan_routes([_vehicle()], _jobs(coords), HaversineMatrixSource(1.0, 36.0))
    assert plan.unassigned_job_ids == []
    assert plan.distance_m == pytest.approx(10_000, abs=5)
    order = [s.job_id for s in plan.routes[0].stops]
    km = [(3, 1, 5, 2, 4)[j - 100] for j in order]
    # Any 10 km tour goes out to 5 km and back without reversing twice.
    peak = km.index(5)
    assert km[: peak + 1] == sorted(km[: peak + 1])
    assert km[peak:] == sorted(km[peak:], reverse=True)


def _brute_force_tour_m(distance_m: np.ndarray) -> float:
    n = distance_m.shape[0]
    best = math.inf
    for perm in itertools.permutations(range(1, n)):
        order = [0, *perm, 0]
        best = min(best, distance_m[order[:-1], order[1:]].sum())
    return best


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_single_vehicle_tour_matches_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    coords = list(
        zip(
            DEPOT.lat + rng.uniform(-0.03, 0.03, 7),
            DEPOT.lon + rng.uniform(-0.05, 0.05, 7),
            strict=True,
        )
    )
    source = HaversineMatrixSource(1.0, 36.0)  # duration proportional to distance
    jobs = _jobs(coords)
    plan, _ = plan_routes([_vehicle()], jobs, source)
    lat, lon = location_coordinates([_vehicle()], jobs)
    m = source.matrices(lat, lon)
    # VROOM works on whole seconds/metres, so allow a metre per leg of rounding.
    assert plan.distance_m == pytest.approx(_brute_force_tour_m(m.distance_m), abs=8)


def test_capacity_forces_a_second_vehicle():
    # Four bins of 600 l, trucks of 1,500 l: no truck can take more than two.
    coords = [(DEPOT.lat + 0.01, DEPOT.lon + dx) for dx in (0.01, 0.02, -0.01, -0.02)]
    vehicles = [_vehicle(1, 1500), _vehicle(2, 1500)]
    plan, _ = plan_routes(vehicles, _jobs(coords, amount_l=600))
    assert plan.unassigned_job_ids == []
    assert sorted(len(r.stops) for r in plan.routes) == [2, 2]
    assert all(r.stops[-1].load_l == 1200 for r in plan.routes)
    # The east pair and the west pair go together: splitting them would cross the depot.
    groups = sorted(sorted(s.job_id for s in r.stops) for r in plan.routes)
    assert groups == [[100, 101], [102, 103]]


def test_capacity_too_small_for_all_bins_leaves_the_rest_unassigned():
    coords = [(DEPOT.lat + 0.01 * k, DEPOT.lon) for k in (1, 2, 3)]
    plan, _ = plan_routes([_vehicle(1, 1000)], _jobs(coords, amount_l=600))
    assert len(plan.unassigned_job_ids) == 2
    assert plan.stop_count == 1


def test_time_windows_force_the_far_bin_first():
    # Without windows the route goes near -> far. A window closing early at the far bin
    # makes the vehicle go there first.
    near = (DEPOT.lat + 1000 / M_PER_DEG_LAT, DEPOT.lon)
    far = (DEPOT.lat + 5000 / M_PER_DEG_LAT, DEPOT.lon + 0.03)
    source = HaversineMatrixSource(1.0, 36.0)
    jobs = [
        CollectionJob(1, *near, 100),
        CollectionJob(2, *far, 100, time_windows_s=((0, 700),)),
    ]
    plan, _ = plan_routes([_vehicle()], jobs, source)
    stops = plan.routes[0].stops
    assert [s.job_id for s in stops] == [2, 1]
    assert stops[0].arrival_s <= 700


class _FixedMatrixSource:
    """A road-network stand-in: a hand-written asymmetric matrix (one-way streets)."""

    def __init__(self, distance_m: np.ndarray) -> None:
        self.distance_m = distance_m

    def matrices(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> TravelMatrices:
        return TravelMatrices(self.distance_m, self.distance_m / 10.0)


def test_pluggable_matrix_source_decides_the_order():
    # Depot 0, bins A=1, B=2. 0->A->B->0 costs 3 km; 0->B->A->0 costs 30 km.
    d = np.array([[0, 1000, 10_000], [10_000, 0, 1000], [1000, 10_000, 0]], dtype=float)
    jobs = _jobs([(56.2, 10.2), (56.3, 10.3)])
    plan, _ = plan_routes([_vehicle()], jobs, _FixedMatrixSource(d))
    assert [s.job_id for s in plan.routes[0].stops] == [100, 101]
    assert plan.distance_m == pytest.approx(3000)


def test_vroom_export_has_the_documented_shape():
    jobs = _jobs([(56.16, 10.21), (56.17, 10.22)], service_s=90, time_windows_s=((3600, 7200),))
    vehicles = [_vehicle(1), _vehicle(2, depot=Depot("Syd", 56.10, 10.15))]
    lat, lon = location_coordinates(vehicles, jobs)
    problem = vroom_problem(vehicles, jobs, HaversineMatrixSource().matrices(lat, lon))
    assert set(problem) == {"vehicles", "jobs", "matrices"}
    v = problem["vehicles"][1]
    assert v["start"] == [10.15, 56.10] and v["start_index"] == 1 and v["end_index"] == 1
    assert v["capacity"] == [10_000] and v["time_window"] == [0, DAY_S]
    j = problem["jobs"][0]
    assert j["location"] == [10.21, 56.16] and j["location_index"] == 2
    assert j["pickup"] == [100] and j["service"] == 90 and j["time_windows"] == [[3600, 7200]]
    car = problem["matrices"]["car"]
    assert len(car["durations"]) == 4 and all(len(row) == 4 for row in car["durations"])
    assert all(isinstance(x, int) for row in car["distances"] for x in row)


def test_vroom_export_rejects_mismatched_matrices_and_duplicate_ids():
    jobs = _jobs([(56.16, 10.21)])
    wrong = TravelMatrices(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="2x2"):
        vroom_problem([_vehicle()], jobs, wrong)
    dup = [*jobs, CollectionJob(100, 56.2, 10.2, 1)]
    lat, lon = location_coordinates([_vehicle()], dup)
    with pytest.raises(ValueError, match="unique"):
        vroom_problem([_vehicle()], dup, HaversineMatrixSource().matrices(lat, lon))


def test_json_and_geojson_outputs_describe_the_same_routes():
    coords = [(DEPOT.lat + 0.01, DEPOT.lon + dx) for dx in (0.01, 0.02, -0.01, -0.02)]
    plan, _ = plan_routes([_vehicle(1, 1500), _vehicle(2, 1500)], _jobs(coords, amount_l=600))
    as_json = plan_to_json(plan)
    geo = plan_to_geojson(plan)
    assert geo["type"] == "FeatureCollection"
    lines = [f for f in geo["features"] if f["geometry"]["type"] == "LineString"]
    points = [f for f in geo["features"] if f["geometry"]["type"] == "Point"]
    assert len(lines) == len(as_json["routes"]) == 2
    assert len(points) == as_json["stop_count"] == 4
    for line, route in zip(lines, as_json["routes"], strict=True):
        coords_line = line["geometry"]["coordinates"]
        assert coords_line[0] == coords_line[-1] == [DEPOT.lon, DEPOT.lat]
        assert coords_line[1:-1] == [[s["lon"], s["lat"]] for s in route["stops"]]
        assert line["properties"]["distance_m"] == route["distance_m"]
    arrivals = [s["arrival_s"] for s in as_json["routes"][0]["stops"]]
    assert arrivals == sorted(arrivals)


def test_no_jobs_gives_an_empty_plan():
    plan, problem = plan_routes([_vehicle()], [])
    assert plan.routes == [] and plan.distance_m == 0
    assert problem["jobs"] == []


def _town(n: int, seed: int) -> list[CollectionJob]:
    rng = np.random.default_rng(seed)
    lat = DEPOT.lat + rng.uniform(-0.04, 0.04, n)
    lon = DEPOT.lon + rng.uniform(-0.07, 0.07, n)
    return [
        CollectionJob(i + 1, float(a), float(b), 300)
        for i, (a, b) in enumerate(zip(lat, lon, strict=True))
    ]


def test_sweep_split_serves_every_bin_once_and_stays_near_the_whole_problem_optimum():
    jobs = _town(40, seed=5)
    vehicles = [_vehicle(k, 6000) for k in (1, 2, 3)]
    direct, _ = plan_routes(vehicles, jobs, direct_solve_max_jobs=1000)
    split, problem = plan_routes(vehicles, jobs, direct_solve_max_jobs=0)
    visited = sorted(s.job_id for r in split.routes for s in r.stops)
    assert visited == list(range(1, 41)) and split.unassigned_job_ids == []
    assert len(problem["jobs"]) == 40  # the export is still the whole problem
    for r in split.routes:
        assert [s.load_l for s in r.stops] == [300 * k for k in range(1, len(r.stops) + 1)]
        assert r.stops[-1].load_l <= 6000
    # The sweep gives up some distance for speed; on a small town not much.
    assert direct.distance_m <= split.distance_m <= 1.35 * direct.distance_m


def test_sweep_split_respects_capacity_when_a_sector_overflows_its_truck():
    # 30 bins of 300 l for two 3,000 l trucks: at most 20 bins fit, the rest are unassigned.
    jobs = _town(30, seed=6)
    plan, _ = plan_routes([_vehicle(1, 3000), _vehicle(2, 3000)], jobs, direct_solve_max_jobs=0)
    assert all(r.stops[-1].load_l <= 3000 for r in plan.routes)
    assert plan.stop_count + len(plan.unassigned_job_ids) == 30
    assert plan.stop_count <= 20
