"""Real public datasets (../shared/datasets, see its README) as native ingest messages.

Each reader yields `Message(external_id, time, readings)`: what a native gateway would
publish on `municipality/<slug>/sensors/<external_id>/readings` as
`{"time": ..., "readings": {...}}` (docs/ingest.md). The data's own defects are passed on
the way a real sensor's would be, and ingest treats them as it treats a sensor's:

- Windesheim: the SCD41's relative humidity is a 0–1 fraction; like a decoder that knows
  its device's unit, the reader scales it to %. The building's PIR is the room's
  `occupancy`.
- UCI occupancy: local Belgian time without an offset (Europe/Brussels); the photo-based
  occupancy label is the room's `occupancy`.
- Birmingham car parks: a count of cars per car park every ~30 min. Each car park is
  replayed as `bays_per_car_park` virtual bays (`<car park>-bay-<n>`, `occupied` 0/1,
  the occupied share of the count, only bays that change are sent). A negative count or
  one above capacity is sent as it is on the car park's first bay (`occupied` −3 or
  1.06): ingest refuses it as out of range, a dead letter with the reason.
- Edinburgh litter bins: one row per collection with the fill level before and after,
  times Europe/London. "100 %" is a bin 80 % full (the dataset's note), so the sensor's
  level × 0.8 is the fill; the level before is sent one second before the collection.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
NAMES = ("windesheim", "uci", "birmingham", "edinburgh")


@dataclass(frozen=True)
class Message:
    external_id: str
    time: datetime
    readings: dict[str, float]


@dataclass(frozen=True)
class SensorSpec:
    external_id: str
    name: str
    kind: str  # climate, parking, bin
    site: str
    zone: str
    extra: dict = field(default_factory=dict)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


# --- Windesheim ------------------------------------------------------------------------------

WINDESHEIM_ROOMS = ("999169", "917810", "925038")


def windesheim(root: Path = DATASETS, rooms=WINDESHEIM_ROOMS, limit: int | None = None):
    """(sensors, messages) of the three office rooms: SCD41 climate every 10 minutes and the
    building's PIR occupancy, in file order."""
    sensors = [
        SensorSpec(f"windesheim-{room}", f"Windesheim {room}", "climate", "Windesheim B4B", room)
        for room in rooms
    ]

    def messages() -> Iterator[Message]:
        count = 0
        for room in rooms:
            path = root / "windesheim_b4b_office_co2" / f"{room}_raw_properties.csv"
            with path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    readings: dict[str, float] = {}
                    if row["source"] == "CO2-meter-SCD4x":
                        for key, metric, scale in (
                            ("co2__ppm", "co2_ppm", 1.0),
                            ("temp_in__degC", "temperature_c", 1.0),
                            # a fraction 0–1 on this device: % like every humidity metric
                            ("rel_humidity__0", "humidity_pct", 100.0),
                        ):
                            value = _float(row.get(key))
                            if value is not None:
                                readings[metric] = round(value * scale, 3)
                    elif row["source"] == "bms":
                        value = _float(row.get("occupancy__bool"))
                        if value is not None:
                            readings["occupancy"] = value
                    if not readings:
                        continue
                    yield Message(
                        f"windesheim-{room}", datetime.fromisoformat(row["timestamp"]), readings
                    )
                    count += 1
                    if limit is not None and count >= limit:
                        return

    return sensors, messages()


# --- UCI occupancy ---------------------------------------------------------------------------

UCI_FILES = ("datatest.txt", "datatraining.txt", "datatest2.txt")
BRUSSELS = ZoneInfo("Europe/Brussels")


def uci(root: Path = DATASETS, files=UCI_FILES, limit: int | None = None):
    sensors = [SensorSpec("uci-office", "UCI office (Mons)", "climate", "UCI Mons", "office")]

    def messages() -> Iterator[Message]:
        count = 0
        for name in files:
            with (root / "uci_occupancy_detection" / name).open(newline="") as handle:
                reader = csv.reader(handle)
                next(reader)
                for row in reader:
                    # a leading row number, then date, Temperature, Humidity, Light, CO2, …
                    _, stamp, temperature, humidity, light, co2, _ratio, occupancy = row
                    local = datetime.fromisoformat(stamp).replace(tzinfo=BRUSSELS)
                    yield Message(
                        "uci-office",
                        local,
                        {
                            "temperature_c": float(temperature),
                            "humidity_pct": float(humidity),
                            "light_lux": float(light),
                            "co2_ppm": float(co2),
                            "occupancy": float(occupancy),
                        },
                    )
                    count += 1
                    if limit is not None and count >= limit:
                        return

    return sensors, messages()


# --- Birmingham ------------------------------------------------------------------------------

LONDON = ZoneInfo("Europe/London")


def birmingham(
    root: Path = DATASETS,
    bays_per_car_park: int = 100,
    limit: int | None = None,
    car_parks: tuple[str, ...] | None = None,
):
    path = root / "birmingham_parking_uci" / "dataset.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if car_parks is not None:
        rows = [r for r in rows if r["SystemCodeNumber"] in car_parks]
    if limit is not None:
        rows = rows[:limit]
    parks = sorted({r["SystemCodeNumber"] for r in rows})
    sensors = [
        SensorSpec(f"{park}-bay-{n}", f"{park} bay {n}", "parking", "Birmingham", park)
        for park in parks
        for n in range(bays_per_car_park)
    ]

    def messages() -> Iterator[Message]:
        occupied: dict[str, int] = {}
        for row in sorted(rows, key=lambda r: (r["LastUpdated"], r["SystemCodeNumber"])):
            park = row["SystemCodeNumber"]
            capacity, count = int(row["Capacity"]), int(row["Occupancy"])
            when = datetime.fromisoformat(row["LastUpdated"]).replace(tzinfo=LONDON)
            if count < 0 or count > capacity:
                # What the counter said, on its first bay: out of range, refused by ingest.
                yield Message(f"{park}-bay-0", when, {"occupied": round(count / capacity, 4)})
                continue
            now = round(bays_per_car_park * count / capacity)
            before = occupied.get(park)
            for n in range(bays_per_car_park):
                state = 1.0 if n < now else 0.0
                was = None if before is None else (1.0 if n < before else 0.0)
                if state != was:
                    yield Message(f"{park}-bay-{n}", when, {"occupied": state})
            occupied[park] = now

    return sensors, messages()


# --- Edinburgh -------------------------------------------------------------------------------

EDINBURGH_FULL_SCALE = 0.8  # the sensor's "100 %" is a bin 80 % full


def edinburgh(root: Path = DATASETS, limit: int | None = None):
    path = root / "edinburgh_litter_bin_sensors" / "edinburgh_bin_collections_2016.csv"
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [dict(zip(header, r, strict=False)) for r in reader]
    if limit is not None:
        rows = rows[:limit]
    when_key = next(h for h in header if h.startswith("Date & Time of bin collection"))
    before_key = next(h for h in header if h.startswith("Fill level before collection"))
    names = {r["Site"]: r["Site name"] for r in rows}
    sensors = [
        SensorSpec(f"edinburgh-{site}", name, "bin", "Edinburgh", "litter bins")
        for site, name in sorted(names.items())
    ]

    def messages() -> Iterator[Message]:
        for row in sorted(rows, key=lambda r: r[when_key]):
            when = datetime.fromisoformat(row[when_key]).replace(tzinfo=LONDON)
            before, after = _float(row[before_key]), _float(row["Fill level after"])
            sensor = f"edinburgh-{row['Site']}"
            if before is not None:
                fill = round(before * EDINBURGH_FULL_SCALE, 2)
                yield Message(sensor, when - timedelta(seconds=1), {"fill_pct": fill})
            if after is not None:
                fill = round(after * EDINBURGH_FULL_SCALE, 2)
                yield Message(sensor, when, {"fill_pct": fill})

    return sensors, messages()


READERS = {"windesheim": windesheim, "uci": uci, "birmingham": birmingham, "edinburgh": edinburgh}
