"""The signal models behave like the rooms, bins and bays they stand for."""

from __future__ import annotations

import numpy as np

from simulator import physics

MONDAY, SATURDAY = 0, 5


def _simulate_room_day(weekday: int, ach_per_h: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """CO2 (ppm) of one room every minute of a day, and the local hours."""
    hours = np.arange(0, 24, 1 / 60)
    state = physics.initial_climate(1)
    capacity, last_end = np.array([24.0]), np.array([14.25])
    attendance, ach = np.array([1.0]), np.array([ach_per_h])
    co2 = np.empty(hours.size)
    for k, hour in enumerate(hours):
        occupants = physics.school_occupants(hour, weekday, capacity, last_end, attendance)
        air_changes = physics.ventilation_ach(hour, weekday, occupants, ach)
        setpoint = physics.heating_setpoint_c(hour, weekday)
        state = physics.step_climate(state, occupants, air_changes, setpoint, 60.0)
        co2[k] = state.co2_ppm[0]
    return co2, hours


def test_co2_rises_during_lessons_and_stays_at_outdoor_level_at_night():
    co2, hours = _simulate_room_day(MONDAY)
    night = co2[(hours >= 2) & (hours < 5)]
    end_of_double_lesson = co2[np.searchsorted(hours, 9.49)]
    assert night.max() < physics.OUTDOOR_CO2_PPM + 50
    assert end_of_double_lesson > 1000
    assert end_of_double_lesson > 2 * night.mean()


def test_co2_falls_in_the_break_after_a_lesson():
    co2, hours = _simulate_room_day(MONDAY)
    at_break_start = co2[np.searchsorted(hours, 9.5)]
    at_break_end = co2[np.searchsorted(hours, 9.82)]
    assert at_break_end < at_break_start - 200


def test_poorly_ventilated_room_reaches_higher_co2():
    poor, _ = _simulate_room_day(MONDAY, ach_per_h=1.2)
    good, _ = _simulate_room_day(MONDAY, ach_per_h=4.5)
    assert poor.max() > good.max() + 400


def test_rooms_stay_empty_at_weekends():
    co2, _ = _simulate_room_day(SATURDAY)
    assert co2.max() < physics.OUTDOOR_CO2_PPM + 50


def test_bins_fill_over_a_week_and_the_collection_round_empties_them():
    rng = np.random.default_rng(3)
    n = 200
    fill = np.zeros(n)
    rate = np.full(n, 20.0)
    days = np.zeros((n, 7), dtype=bool)
    days[:, 2] = True  # Wednesday
    collect_hour = np.full(n, 9.0)
    for hour_index in range(24 * 2):  # Monday and Tuesday, hourly
        fill = physics.step_bins(fill, rate, hour_index % 24, hour_index // 24, 3600.0, rng)
    assert 30 < fill.mean() < 50  # about two days at 20 %/day
    emptied = physics.bins_collected(8.5, 9.5, 2, days, collect_hour)
    assert emptied.all()
    assert not physics.bins_collected(8.5, 9.5, 3, days, collect_hour).any()
    assert not physics.bins_collected(9.5, 10.5, 2, days, collect_hour).any()


def test_bin_distance_is_the_inverse_of_the_fill_level():
    rng = np.random.default_rng(0)
    fill = np.array([0.0, 50.0, 100.0])
    distance = physics.bin_distance_mm(fill, np.full(3, 1000.0), np.full(3, 100.0), rng)
    assert np.allclose(distance, [1100.0, 600.0, 100.0], atol=40)


def test_commuter_parking_fills_on_weekday_mornings_and_empties_at_night():
    rng = np.random.default_rng(5)
    commuter = np.ones(2000, dtype=bool)
    stay = np.full(2000, physics.MEAN_STAY_H["commuter"])
    occupied = np.zeros(2000, dtype=bool)
    shares = {}
    for minute in range(24 * 60):
        hour = minute / 60
        target = physics.parking_target_occupancy(hour, MONDAY, commuter)
        occupied = physics.step_parking(occupied, target, stay, 60.0, rng)
        shares[minute] = occupied.mean()
    assert shares[11 * 60] > 0.7
    assert shares[23 * 60] < 0.4
    assert shares[11 * 60] > 3 * shares[5 * 60]


def test_shopping_parking_is_busier_on_saturday_than_commuter_parking():
    commuter = np.array([True, False])
    saturday_noon = physics.parking_target_occupancy(12.0, SATURDAY, commuter)
    assert saturday_noon[1] > saturday_noon[0] + 0.4
