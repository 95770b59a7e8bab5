"""The simulated fleet: 19 Central Denmark municipalities, their schools, bins and parking.

``build_fleet`` lays out classrooms with climate sensors, waste bins with fill-level
sensors and parking bays with occupancy sensors around real towns, deterministically
from a seed. Nothing here talks to a database or a broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True, slots=True)
class MunicipalitySpec:
    """A municipality, its main town and the LoRaWAN network server it runs."""

    slug: str
    name: str
    kommune_code: str
    town: str
    lat: float
    lon: float
    network: str  # "chirpstack" (ChirpStack v4) or "tts" (The Things Stack v3)


# Name, four-digit kommune code, main town and its centre. The network split mirrors
# reality loosely: most run ChirpStack themselves, a few use The Things Stack.
MUNICIPALITIES: tuple[MunicipalitySpec, ...] = (
    MunicipalitySpec("favrskov", "Favrskov", "0710", "Hinnerup", 56.2670, 10.0630, "chirpstack"),
    MunicipalitySpec("hedensted", "Hedensted", "0766", "Hedensted", 55.7700, 9.7010, "tts"),
    MunicipalitySpec("herning", "Herning", "0657", "Herning", 56.1360, 8.9760, "chirpstack"),
    MunicipalitySpec("holstebro", "Holstebro", "0661", "Holstebro", 56.3600, 8.6160, "chirpstack"),
    MunicipalitySpec("horsens", "Horsens", "0615", "Horsens", 55.8610, 9.8500, "chirpstack"),
    MunicipalitySpec("ikast-brande", "Ikast-Brande", "0756", "Ikast", 56.1380, 9.1570, "tts"),
    MunicipalitySpec("lemvig", "Lemvig", "0665", "Lemvig", 56.5480, 8.3100, "chirpstack"),
    MunicipalitySpec("norddjurs", "Norddjurs", "0707", "Grenaa", 56.4160, 10.8780, "chirpstack"),
    MunicipalitySpec("odder", "Odder", "0727", "Odder", 55.9730, 10.1530, "tts"),
    MunicipalitySpec("randers", "Randers", "0730", "Randers", 56.4610, 10.0360, "chirpstack"),
    MunicipalitySpec(
        "ringkobing-skjern", "Ringkøbing-Skjern", "0760", "Ringkøbing", 56.0900, 8.2440, "tts"
    ),
    MunicipalitySpec("samso", "Samsø", "0741", "Tranebjerg", 55.8330, 10.5960, "chirpstack"),
    MunicipalitySpec("silkeborg", "Silkeborg", "0740", "Silkeborg", 56.1700, 9.5450, "chirpstack"),
    MunicipalitySpec(
        "skanderborg", "Skanderborg", "0746", "Skanderborg", 56.0370, 9.9290, "chirpstack"
    ),
    MunicipalitySpec("skive", "Skive", "0779", "Skive", 56.5670, 9.0270, "tts"),
    MunicipalitySpec("struer", "Struer", "0671", "Struer", 56.4910, 8.5840, "chirpstack"),
    MunicipalitySpec("syddjurs", "Syddjurs", "0706", "Ebeltoft", 56.1940, 10.6820, "chirpstack"),
    MunicipalitySpec("viborg", "Viborg", "0791", "Viborg", 56.4530, 9.4020, "chirpstack"),
    MunicipalitySpec("aarhus", "Aarhus", "0751", "Aarhus", 56.1570, 10.2110, "chirpstack"),
)

# (vendor, model, DevEUI prefix) per sensor kind, in the proportions the fleet uses them.
CLIMATE_MODELS = (
    ("Elsys", "ERS CO2", "a81758fffe"),
    ("Milesight", "AM107", "24e124128c"),
    ("Decentlab", "DL-IAM", "70b3d57ba0"),
)
BIN_MODELS = (("Decentlab", "DL-MBX", "70b3d57ba1"),)
PARKING_MODELS = (("Bosch", "TPS110", "fcd6bd0000"), ("Nwave", "NPS-3.10-SM", "70b3d5e050"))

CLIMATE_INTERVAL_S = 600
BIN_INTERVAL_S = 1800
PARKING_HEARTBEAT_S = 3600
ROOMS_PER_SCHOOL = 8
BAYS_PER_AREA = 20

_SCHOOL_NAMES = (
    "{town} Skole",
    "Nordre Skole",
    "Søndre Skole",
    "Vestre Skole",
    "Østre Skole",
    "{town} Friskole",
    "Bakkeskolen",
    "Engskolen",
)
_BIN_AREAS = ("Torvet", "Havnen", "Stationen", "Byparken", "Gågaden", "Stranden")
_PARKING_AREAS = (
    ("P-plads Stationen", "commuter"),
    ("P-hus Centrum", "shopping"),
    ("P-plads Rådhuset", "commuter"),
    ("P-plads Torvet", "shopping"),
)


@dataclass(frozen=True, slots=True)
class SiteSpec:
    municipality: str
    name: str
    kind: str  # school | street | parking
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    municipality: str
    site: str
    name: str
    kind: str  # classroom | bin_group | parking
    floor: str | None
    capacity: int | None


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated sensor, with everything the seed and the simulator need."""

    dev_eui: str
    external_id: str
    name: str
    kind: str  # climate | bin | parking
    vendor: str
    model: str
    municipality: str
    network: str
    site: str
    zone: str | None
    lat: float
    lon: float
    interval_s: int
    serial: int
    capacity_persons: int | None = None
    bin_depth_mm: float | None = None
    mount_offset_mm: float | None = None
    area_profile: str | None = None  # parking: commuter | shopping


@dataclass(frozen=True)
class Fleet:
    municipalities: tuple[MunicipalitySpec, ...]
    sites: tuple[SiteSpec, ...]
    zones: tuple[ZoneSpec, ...]
    devices: tuple[DeviceSpec, ...]
    seed: int
    by_eui: dict[str, DeviceSpec] = field(repr=False, default_factory=dict)

    def of_kind(self, kind: str) -> list[DeviceSpec]:
        """The devices of one kind (climate, bin, parking), in fleet order."""
        return [d for d in self.devices if d.kind == kind]


def _dev_eui(prefix: str, number: int, seed: int) -> str:
    # Seed-dependent but collision-free within a fleet: the low digits are the number.
    suffix_digits = 16 - len(prefix)
    seed_part = (seed * 7919) % (16 ** max(suffix_digits - 4, 0))
    return (prefix + f"{seed_part:0{suffix_digits - 4}x}{number:04x}")[:16]


def _near(
    rng: np.random.Generator, lat: float, lon: float, spread_km: float
) -> tuple[float, float]:
    d_lat = rng.normal(0, spread_km / 111.0)
    d_lon = rng.normal(0, spread_km / (111.0 * np.cos(np.radians(lat))))
    return round(lat + d_lat, 6), round(lon + d_lon, 6)


def build_fleet(
    classrooms: int = 38,
    bins: int = 57,
    parking_bays: int = 76,
    seed: int = 1,
    municipalities: int = 19,
    network: str | None = None,
) -> Fleet:
    """Lay out a fleet, spread round-robin over the first `municipalities` municipalities.

    Classrooms are grouped into schools of up to eight, bins into street areas and parking
    bays into parking areas of up to twenty. The same arguments give the same fleet.
    `network` ("chirpstack" or "tts") puts every municipality on that network server.
    """
    if not 1 <= municipalities <= len(MUNICIPALITIES):
        raise ValueError(f"municipalities must be between 1 and {len(MUNICIPALITIES)}")
    if min(classrooms, bins, parking_bays) < 0:
        raise ValueError("device counts must not be negative")
    if classrooms + bins + parking_bays > 0xFFFF:
        raise ValueError("at most 65535 devices per fleet")
    rng = np.random.default_rng(seed)
    if network not in (None, "chirpstack", "tts"):
        raise ValueError("network must be 'chirpstack' or 'tts'")
    chosen = tuple(
        m if network is None else replace(m, network=network)
        for m in MUNICIPALITIES[:municipalities]
    )
    sites: dict[tuple[str, str], SiteSpec] = {}
    zones: list[ZoneSpec] = []
    devices: list[DeviceSpec] = []
    number = 0

    def site(m: MunicipalitySpec, name: str, kind: str, spread_km: float) -> SiteSpec:
        key = (m.slug, name)
        if key not in sites:
            lat, lon = _near(rng, m.lat, m.lon, spread_km)
            sites[key] = SiteSpec(m.slug, name, kind, lat, lon)
        return sites[key]

    for i in range(classrooms):
        m = chosen[i % len(chosen)]
        local = i // len(chosen)  # this room's number within its municipality
        school_no, room_no = divmod(local, ROOMS_PER_SCHOOL)
        school = _SCHOOL_NAMES[school_no % len(_SCHOOL_NAMES)].format(town=m.town)
        if school_no >= len(_SCHOOL_NAMES):
            school += f" afd. {school_no // len(_SCHOOL_NAMES) + 1}"
        s = site(m, school, "school", 2.0)
        floor = str(room_no // 4)
        room = f"Lokale {floor}.{room_no % 4 + 1:02d}"
        capacity = int(rng.integers(20, 29))
        zones.append(ZoneSpec(m.slug, s.name, room, "classroom", floor, capacity))
        vendor, model, prefix = CLIMATE_MODELS[i % len(CLIMATE_MODELS)]
        number += 1
        eui = _dev_eui(prefix, number, seed)
        devices.append(
            DeviceSpec(
                eui,
                f"climate-{eui[-8:]}",
                f"{s.name} {room}",
                "climate",
                vendor,
                model,
                m.slug,
                m.network,
                s.name,
                room,
                s.lat,
                s.lon,
                CLIMATE_INTERVAL_S,
                number,
                capacity_persons=capacity,
            )
        )

    for i in range(bins):
        m = chosen[i % len(chosen)]
        area = _BIN_AREAS[(i // len(chosen)) % len(_BIN_AREAS)]
        s = site(m, f"{m.town} {area}", "street", 1.0)
        vendor, model, prefix = BIN_MODELS[i % len(BIN_MODELS)]
        number += 1
        eui = _dev_eui(prefix, number, seed)
        lat, lon = _near(rng, s.lat, s.lon, 0.15)
        depth = float(rng.choice([800.0, 1000.0, 1200.0]))
        devices.append(
            DeviceSpec(
                eui,
                f"bin-{eui[-8:]}",
                f"Affaldsspand {s.name} {i // len(chosen) + 1}",
                "bin",
                vendor,
                model,
                m.slug,
                m.network,
                s.name,
                None,
                lat,
                lon,
                BIN_INTERVAL_S,
                number,
                bin_depth_mm=depth,
                mount_offset_mm=float(rng.integers(40, 120)),
            )
        )

    for i in range(parking_bays):
        m = chosen[i % len(chosen)]
        local = i // len(chosen)
        area_no, bay_no = divmod(local, BAYS_PER_AREA)
        area, profile = _PARKING_AREAS[area_no % len(_PARKING_AREAS)]
        area = f"{area} {m.town}"
        if area_no >= len(_PARKING_AREAS):
            area += f" {area_no // len(_PARKING_AREAS) + 1}"
        s = site(m, area, "parking", 1.0)
        if bay_no == 0:
            zones.append(ZoneSpec(m.slug, s.name, "Båse", "parking", None, None))
        vendor, model, prefix = PARKING_MODELS[i % len(PARKING_MODELS)]
        number += 1
        eui = _dev_eui(prefix, number, seed)
        lat, lon = _near(rng, s.lat, s.lon, 0.03)
        devices.append(
            DeviceSpec(
                eui,
                f"bay-{eui[-8:]}",
                f"{s.name} bås {bay_no + 1}",
                "parking",
                vendor,
                model,
                m.slug,
                m.network,
                s.name,
                "Båse",
                lat,
                lon,
                PARKING_HEARTBEAT_S,
                number,
                area_profile=profile,
            )
        )

    fleet_devices = tuple(devices)
    return Fleet(
        municipalities=chosen,
        sites=tuple(sites.values()),
        zones=tuple(zones),
        devices=fleet_devices,
        seed=seed,
        by_eui={d.dev_eui: d for d in fleet_devices},
    )
