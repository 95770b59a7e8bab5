"""Alert thresholds: defaults plus per-municipality overrides from municipalities.settings.

`municipalities.settings` is JSONB; its "climate", "bins", "parking", "health" and
"evaluation" objects override the defaults below key by key. Unknown keys and bad values
are refused with a message naming the key, so a typo never silently disables a rule.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClimateThresholds(_Section):
    co2_limit_ppm: float = Field(1000.0, gt=0, description="BR18 §447 limit in teaching rooms")
    co2_critical_ppm: float = Field(1400.0, gt=0)
    co2_hysteresis_ppm: float = Field(50.0, ge=0)
    min_duration_s: float = Field(900.0, ge=0)
    max_gap_s: float = Field(1800.0, gt=0)
    temperature_low_c: float = 20.0
    temperature_high_c: float = 24.0
    temperature_hysteresis_c: float = Field(0.5, ge=0)
    humidity_low_pct: float = Field(20.0, ge=0, le=100)
    humidity_high_pct: float = Field(70.0, ge=0, le=100)
    humidity_hysteresis_pct: float = Field(2.0, ge=0)
    comfort_min_duration_s: float = Field(1800.0, ge=0)
    # EN 16798-1 category II, cooling season (the heating-season band is above)
    temperature_cooling_low_c: float = 23.0
    temperature_cooling_high_c: float = 26.0
    heating_months: tuple[int, ...] = Field(
        (10, 11, 12, 1, 2, 3, 4), description="local months of the heating season"
    )
    occupied_hours_only: bool = Field(
        True, description="judge rooms only while occupied (sensor, else school calendar)"
    )
    occupancy_max_age_s: float = Field(
        1800.0, gt=0, description="how long an occupancy or motion reading stands"
    )

    @model_validator(mode="after")
    def _ordered(self) -> ClimateThresholds:
        if any(not 1 <= m <= 12 for m in self.heating_months):
            raise ValueError("heating_months must be months 1–12")
        if self.temperature_cooling_low_c >= self.temperature_cooling_high_c:
            raise ValueError("temperature_cooling_low_c must be below temperature_cooling_high_c")
        if self.co2_critical_ppm < self.co2_limit_ppm:
            raise ValueError("co2_critical_ppm must be at least co2_limit_ppm")
        if self.temperature_low_c >= self.temperature_high_c:
            raise ValueError("temperature_low_c must be below temperature_high_c")
        if self.humidity_low_pct >= self.humidity_high_pct:
            raise ValueError("humidity_low_pct must be below humidity_high_pct")
        return self


class BinThresholds(_Section):
    full_pct: float = Field(90.0, gt=0, le=100)
    soon_full_h: float = Field(24.0, gt=0)
    emptying_drop_pct: float = Field(30.0, gt=0, le=100)
    sudden_rise_pct: float = Field(25.0, gt=0, le=100)
    recent_s: float = Field(6 * 3600.0, gt=0)
    fault_margin_pct: float = Field(10.0, ge=0)
    max_points: int = Field(24, ge=2, le=200)


class ParkingThresholds(_Section):
    max_stay_s: float = Field(4 * 3600.0, gt=0)
    max_gap_s: float = Field(3 * 3600.0, gt=0)


class HealthThresholds(_Section):
    stale_factor: float = Field(3.0, gt=1)
    default_interval_s: float = Field(900.0, gt=0)
    battery_min_v: float = Field(3.3, ge=0)
    battery_min_pct: float = Field(15.0, ge=0, le=100)
    stuck_samples: int = Field(24, ge=3)
    spike_half_window: int = Field(6, ge=1, le=50)
    spike_sigmas: float = Field(5.0, gt=0)
    spike_min_co2_ppm: float = Field(100.0, ge=0)
    spike_recent_s: float = Field(3600.0, gt=0)


class EvaluationSettings(_Section):
    window_h: float = Field(72.0, gt=0, le=24 * 62, description="hours of readings loaded")
    # Per family, at most window_h: rules run in occupied hours, so a school day's run
    # starts within 12 h; an older ongoing run keeps its alert's started_at.
    climate_window_h: float = Field(12.0, gt=0, le=24 * 62)
    parking_window_h: float = Field(12.0, gt=0, le=24 * 62)
    bins_window_h: float = Field(48.0, gt=0, le=24 * 62)


class AnalyticsThresholds(_Section):
    climate: ClimateThresholds = ClimateThresholds()
    bins: BinThresholds = BinThresholds()
    parking: ParkingThresholds = ParkingThresholds()
    health: HealthThresholds = HealthThresholds()
    evaluation: EvaluationSettings = EvaluationSettings()


SECTIONS = tuple(AnalyticsThresholds.model_fields)


class ThresholdsError(ValueError):
    """A municipality's settings hold an unusable threshold; the message names it."""


def thresholds_from_settings(
    settings: dict[str, Any] | None, where: str = "settings"
) -> AnalyticsThresholds:
    """Defaults overridden by the analytics sections of a municipality's settings JSON.

    Keys outside SECTIONS belong to other features and are ignored here.
    """
    relevant = {k: v for k, v in (settings or {}).items() if k in SECTIONS}
    try:
        return AnalyticsThresholds.model_validate(relevant)
    except ValidationError as exc:
        problems = "; ".join(
            f"{where}.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise ThresholdsError(problems) from None
