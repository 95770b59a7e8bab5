"""Vectorised signal models: classroom climate, bin filling, parking occupancy.

Every function works on arrays with one element per sensor and advances all sensors of a
kind by one time step; the stream (simulator/stream.py) calls them once per step. Times
are local (Europe/Copenhagen) hours of the day and ISO weekdays 0 = Monday .. 6 = Sunday.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- classrooms ----------------------------------------------------------------------------

# A Danish school day: 45-minute lessons, a morning break, lunch eaten in the classroom,
# then outdoor play; local hours [start, end).
LESSONS_H = np.array(
    [
        (8.00, 8.75),
        (8.75, 9.50),
        (9.8333, 10.5833),
        (10.5833, 11.3333),
        (11.3333, 11.5833),  # lunch in the classroom
        (11.8333, 12.5833),
        (12.5833, 13.3333),
        (13.50, 14.25),
    ]
)
SCHOOL_DAY_H = (7.75, 15.0)  # caretaker hours: windows opened in breaks inside these
OUTDOOR_CO2_PPM = 420.0
# CO2 a seated child exhales, m³/s (about 0.3 L/min; adults ≈ 0.3–0.4 L/min at rest).
CO2_PER_PERSON_M3_S = 5.0e-6
ROOM_VOLUME_M3 = 180.0  # 60 m² × 3 m
NIGHT_ACH_PER_H = 0.3  # mechanical ventilation off, infiltration only
BREAK_ACH_PER_H = 6.0  # windows open during breaks


@dataclass(frozen=True, slots=True)
class ClimateState:
    """Air in each classroom: CO2 (ppm), temperature (°C), relative humidity (%)."""

    co2_ppm: np.ndarray
    temperature_c: np.ndarray
    humidity_pct: np.ndarray


def initial_climate(n_rooms: int) -> ClimateState:
    """Rooms at night: outdoor CO2, night setback temperature, dry indoor winter air."""
    return ClimateState(
        co2_ppm=np.full(n_rooms, OUTDOOR_CO2_PPM + 30.0),
        temperature_c=np.full(n_rooms, 19.0),
        humidity_pct=np.full(n_rooms, 35.0),
    )


def school_occupants(
    local_hour: float,
    weekday: int,
    capacity_persons: np.ndarray,
    last_lesson_end_h: np.ndarray,
    attendance_fraction: np.ndarray,
) -> np.ndarray:
    """Persons in each classroom at `local_hour`: the class during its lessons, else 0.

    Rooms are empty on weekends, in breaks and after the class's last lesson
    (`last_lesson_end_h`, younger classes leave earlier).
    """
    in_lesson = bool(np.any((LESSONS_H[:, 0] <= local_hour) & (local_hour < LESSONS_H[:, 1])))
    if weekday >= 5 or not in_lesson:
        return np.zeros_like(capacity_persons, dtype=float)
    taught = local_hour < last_lesson_end_h
    # One teacher plus the pupils present.
    return np.where(taught, np.round(capacity_persons * attendance_fraction) + 1.0, 0.0)


def ventilation_ach(
    local_hour: float, weekday: int, occupants: np.ndarray, occupied_ach_per_h: np.ndarray
) -> np.ndarray:
    """Air changes per hour: the room's own rate when occupied, airing in school-day
    breaks, infiltration only at night and on weekends."""
    school_hours = weekday < 5 and SCHOOL_DAY_H[0] <= local_hour < SCHOOL_DAY_H[1]
    idle_ach = BREAK_ACH_PER_H if school_hours else NIGHT_ACH_PER_H
    return np.where(occupants > 0, occupied_ach_per_h, idle_ach)


def heating_setpoint_c(local_hour: float, weekday: int) -> float:
    """Room temperature the heating aims at: 21 °C in school hours, 18 °C set back."""
    return 21.0 if weekday < 5 and 6.0 <= local_hour < 16.0 else 18.0


def step_climate(
    state: ClimateState,
    occupants: np.ndarray,
    ach_per_h: np.ndarray,
    setpoint_c: float,
    dt_s: float,
    volume_m3: float = ROOM_VOLUME_M3,
) -> ClimateState:
    """Advance each room's air by `dt_s` seconds (well-mixed box model, exact over the step).

    CO2: dC/dt = n·G/V − λ(C − C_out) with λ = ACH/3600, integrated exactly for inputs
    constant over the step. Temperature and humidity relax towards an equilibrium that
    rises with the number of occupants.
    """
    decay_per_s = ach_per_h / 3600.0
    source_ppm_per_s = occupants * CO2_PER_PERSON_M3_S / volume_m3 * 1e6
    co2_eq = OUTDOOR_CO2_PPM + source_ppm_per_s / decay_per_s
    co2 = co2_eq + (state.co2_ppm - co2_eq) * np.exp(-decay_per_s * dt_s)

    temp_eq = setpoint_c + 0.08 * occupants
    temp = temp_eq + (state.temperature_c - temp_eq) * np.exp(-dt_s / 5400.0)
    hum_eq = np.clip(30.0 + 0.6 * occupants - 1.5 * (ach_per_h - 2.0), 20.0, 70.0)
    hum = hum_eq + (state.humidity_pct - hum_eq) * np.exp(-dt_s / 3600.0)
    return ClimateState(co2_ppm=co2, temperature_c=temp, humidity_pct=hum)


def measure_climate(
    state: ClimateState,
    occupants: np.ndarray,
    local_hour: float,
    interval_s: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """What the sensors report: the air state plus sensor noise, light, motion, VOC,
    pressure and battery, keyed by canonical metric name."""
    n = occupants.shape[0]
    daylight_lux = max(0.0, np.sin(np.pi * (local_hour - 7.0) / 10.0)) * 250.0
    lights_on = occupants > 0
    return {
        "co2_ppm": state.co2_ppm * (1 + rng.normal(0, 0.02, n)) + rng.normal(0, 15, n),
        "temperature_c": state.temperature_c + rng.normal(0, 0.1, n),
        "humidity_pct": np.clip(state.humidity_pct + rng.normal(0, 1.0, n), 0, 100),
        "light_lux": np.clip(daylight_lux * rng.uniform(0.6, 1.2, n) + 350.0 * lights_on, 0, None),
        "motion_count": rng.poisson(occupants * interval_s / 120.0),
        "tvoc_ppb": 80.0 + 6.0 * occupants + rng.gamma(2.0, 10.0, n),
        "pressure_pa": np.full(n, 101325.0) + rng.normal(0, 30.0, n),
        "battery_v": np.full(n, 3.6) - rng.uniform(0, 0.05, n),
        "battery_pct": np.full(n, 92.0) + rng.integers(0, 8, n),
    }


# --- waste bins ---------------------------------------------------------------------------

# Relative use of street bins over the day (knots at local hours), peaking in the afternoon.
_BIN_USE_HOURS = np.array([0, 6, 9, 12, 16, 20, 23, 24], dtype=float)
_BIN_USE_WEIGHT = np.array([0.1, 0.2, 1.0, 1.6, 1.8, 1.0, 0.3, 0.1])
_BIN_USE_WEIGHT = _BIN_USE_WEIGHT / np.trapezoid(_BIN_USE_WEIGHT, _BIN_USE_HOURS) * 24.0


def step_bins(
    fill_pct: np.ndarray,
    fill_rate_pct_per_day: np.ndarray,
    local_hour: float,
    weekday: int,
    dt_s: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Fill each bin by its daily rate shaped over the day (busier at weekends), with
    lumpy deposits; bins overflow up to 110 %."""
    weekend = 1.4 if weekday >= 5 else 1.0
    use = float(np.interp(local_hour, _BIN_USE_HOURS, _BIN_USE_WEIGHT)) * weekend
    mean_pct = fill_rate_pct_per_day * use * dt_s / 86400.0
    # Gamma with shape 0.5: most steps add little, a few add a bag's worth.
    added = rng.gamma(0.5, 2.0 * mean_pct + 1e-12)
    return np.minimum(fill_pct + added, 110.0)


def bins_collected(
    previous_local_hour: float,
    local_hour: float,
    weekday: int,
    collection_days: np.ndarray,
    collection_hour: np.ndarray,
) -> np.ndarray:
    """Mask of bins the collection round empties in the step ending at `local_hour`.

    `collection_days` is a (bins, 7) boolean array of weekdays with a round;
    `collection_hour` the local hour the truck passes each bin.
    """
    if local_hour < previous_local_hour:  # the step crossed midnight
        previous_local_hour -= 24.0
    passed = (previous_local_hour < collection_hour) & (collection_hour <= local_hour)
    return passed & collection_days[:, weekday]


def bin_distance_mm(
    fill_pct: np.ndarray,
    bin_depth_mm: np.ndarray,
    mount_offset_mm: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Ultrasonic distance from sensor to the waste surface, with ±10 mm echo noise.

    Inverse of analytics.bins.fill_level_pct: empty = offset + depth, full = offset.
    """
    surface = mount_offset_mm + bin_depth_mm * (1.0 - fill_pct / 100.0)
    return np.clip(surface + rng.normal(0, 10.0, fill_pct.shape[0]), 20.0, None)


# --- parking ------------------------------------------------------------------------------

_DAY_HOURS = np.array([0, 6, 7, 8, 10, 12, 15, 16, 17, 18, 20, 22, 24], dtype=float)
# Share of bays occupied, by area profile and day type.
_TARGET = {
    ("commuter", "weekday"): [
        0.08,
        0.1,
        0.4,
        0.8,
        0.9,
        0.88,
        0.85,
        0.6,
        0.35,
        0.2,
        0.12,
        0.1,
        0.08,
    ],
    ("commuter", "weekend"): [
        0.05,
        0.05,
        0.06,
        0.1,
        0.2,
        0.25,
        0.2,
        0.15,
        0.1,
        0.08,
        0.06,
        0.05,
        0.05,
    ],
    ("shopping", "weekday"): [
        0.05,
        0.05,
        0.08,
        0.2,
        0.55,
        0.75,
        0.7,
        0.72,
        0.65,
        0.5,
        0.3,
        0.1,
        0.05,
    ],
    ("shopping", "weekend"): [
        0.05,
        0.05,
        0.06,
        0.15,
        0.7,
        0.92,
        0.8,
        0.6,
        0.4,
        0.25,
        0.15,
        0.08,
        0.05,
    ],
}
MEAN_STAY_H = {"commuter": 7.0, "shopping": 1.5}


def parking_target_occupancy(local_hour: float, weekday: int, commuter: np.ndarray) -> np.ndarray:
    """Expected share of occupied bays at `local_hour` for commuter and shopping areas."""
    day = "weekend" if weekday >= 5 else "weekday"
    commuter_p = np.interp(local_hour, _DAY_HOURS, _TARGET[("commuter", day)])
    shopping_p = np.interp(local_hour, _DAY_HOURS, _TARGET[("shopping", day)])
    return np.where(commuter, commuter_p, shopping_p)


def step_parking(
    occupied: np.ndarray,
    target_share: np.ndarray,
    mean_stay_h: np.ndarray,
    dt_s: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Advance each bay's two-state (free/occupied) Markov chain by `dt_s` seconds.

    Cars leave at rate 1/stay and arrive at the rate that makes `target_share` the
    stationary share, so the fleet follows the daily cycle with realistic churn.
    """
    leave_per_s = 1.0 / (mean_stay_h * 3600.0)
    share = np.clip(target_share, 0.01, 0.98)
    arrive_per_s = leave_per_s * share / (1.0 - share)
    p_leave = 1.0 - np.exp(-leave_per_s * dt_s)
    p_arrive = 1.0 - np.exp(-arrive_per_s * dt_s)
    draw = rng.random(occupied.shape[0])
    return np.where(occupied, draw >= p_leave, draw < p_arrive)
