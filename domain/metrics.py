"""The canonical metric vocabulary: one name and one unit per measured quantity.

Decoders and wire-format parsers emit these names; the database stores one row per
(sensor, metric, time). Each metric carries the physical range outside which a value is
refused as implausible (it goes to the dead-letter table, not into readings).
Documented for users in docs/metrics.md; keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str
    description: str
    min_value: float
    max_value: float

    def accepts(self, value: float) -> bool:
        """True when `value` is a finite number inside the metric's physical range."""
        return self.min_value <= value <= self.max_value


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        # indoor climate
        Metric("temperature_c", "°C", "Air temperature", -60.0, 125.0),
        Metric("humidity_pct", "%", "Relative humidity", 0.0, 100.0),
        Metric("co2_ppm", "ppm", "Carbon dioxide concentration", 0.0, 40000.0),
        Metric("light_lux", "lx", "Illuminance", 0.0, 200000.0),
        Metric("motion_count", "1", "PIR motion events since the previous uplink", 0.0, 65535.0),
        Metric("occupancy", "1", "Room occupied (1) or not (0) as judged by the sensor", 0, 1),
        Metric("pressure_pa", "Pa", "Barometric pressure", 30000.0, 120000.0),
        Metric("tvoc_ppb", "ppb", "Total volatile organic compounds", 0.0, 100000.0),
        Metric("sound_avg_dba", "dB(A)", "Average sound level", 0.0, 200.0),
        Metric("sound_peak_dba", "dB(A)", "Peak sound level", 0.0, 200.0),
        # particulate matter: outdoor and indoor air quality (EU limit values are in µg/m³)
        Metric("pm2_5_ug_m3", "µg/m³", "Fine particulate matter (PM2.5) concentration", 0, 1000),
        Metric("pm10_ug_m3", "µg/m³", "Particulate matter (PM10) concentration", 0.0, 1000.0),
        # waste bins
        Metric("distance_mm", "mm", "Distance from sensor to the nearest surface", 0.0, 20000.0),
        Metric(
            "fill_pct", "%", "Bin fill level: from distance and bin depth, or the sensor", 0, 100
        ),
        Metric("tilt_deg", "°", "Tilt of the sensor from its mounting position", -180, 180),
        # parking
        Metric("occupied", "1", "Parking bay occupied (1) or free (0)", 0.0, 1.0),
        # car parks counted at the gates (historic imports of car-park operators' counts)
        Metric("occupied_spaces", "1", "Vehicles parked in a car park or zone", 0.0, 100000.0),
        # device health
        Metric("battery_v", "V", "Battery or supply voltage", 0.0, 15.0),
        Metric("battery_pct", "%", "Remaining battery capacity", 0.0, 100.0),
        Metric("rssi_dbm", "dBm", "Best received signal strength of the uplink", -200, 50),
        Metric("snr_db", "dB", "Signal-to-noise ratio of the uplink", -50.0, 50.0),
    )
}


def get_metric(name: str) -> Metric | None:
    """The metric called `name`, or None when it is not in the vocabulary."""
    return METRICS.get(name)


def sync_metrics(conn: psycopg.Connection) -> dict[str, int]:
    """Upsert the metric vocabulary above into the `metrics` table; returns name → metric id."""
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO metrics (name, unit, description, min_value, max_value)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (name) DO UPDATE SET unit = EXCLUDED.unit,
                description = EXCLUDED.description,
                min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value
            """,
            [(m.name, m.unit, m.description, m.min_value, m.max_value) for m in METRICS.values()],
        )
        rows = cur.execute("SELECT name, id FROM metrics").fetchall()
    return dict(rows)
