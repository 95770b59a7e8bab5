"""NGSI-LD entities of the Smart Data Models for this project's sensors: pure functions.

One public sensor is one entity: a climate sensor an ``IndoorEnvironmentObserved``, a bin
sensor a ``WasteContainer``, a parking sensor a ``ParkingSpot`` (dataModel.Environment,
dataModel.WasteManagement, dataModel.Parking). Attributes come from the sensor's metrics
(domain/metrics.py) by `ATTRIBUTES`, scaled to the model's unit where it fixes one
(fillingLevel is a fraction 0–1, our fill_pct a percentage) and otherwise carrying the
UN/CEFACT ``unitCode`` of our unit.

Used by the read API (api/ngsi/) and reusable by anything that pushes entities to a
context broker: nothing here touches the database or the network. Inputs are plain dicts
(`SensorFacts`), outputs NGSI-LD normalized entities or their key-values (simplified) form.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

NGSI_LD_CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
SMART_DATA_MODELS_CONTEXT = "https://smart-data-models.github.io/data-models/context.jsonld"
CONTEXT = [SMART_DATA_MODELS_CONTEXT, NGSI_LD_CORE_CONTEXT]

# Our sensor kind → the Smart Data Model its entities follow.
TYPE_BY_KIND = {
    "climate": "IndoorEnvironmentObserved",
    "bin": "WasteContainer",
    "parking": "ParkingSpot",
}
KIND_BY_TYPE = {v: k for k, v in TYPE_BY_KIND.items()}
# Expanded type names, as a client that did not send our @context may ask for them.
TYPE_URIS = {
    "IndoorEnvironmentObserved": "https://smartdatamodels.org/dataModel.Environment/IndoorEnvironmentObserved",
    "WasteContainer": "https://smartdatamodels.org/dataModel.WasteManagement/WasteContainer",
    "ParkingSpot": "https://smartdatamodels.org/dataModel.Parking/ParkingSpot",
}  # fmt: skip

ID_PREFIX = "urn:ngsi-ld:{type}:kommune-iot:"


@dataclass(frozen=True)
class Attribute:
    """An entity attribute made from one metric: value = metric value × scale."""

    metric: str
    scale: float
    unit_code: str | None  # UN/CEFACT common code


# Per entity type: attribute → metric. Order is the order in the entity.
ATTRIBUTES: dict[str, dict[str, Attribute]] = {
    "IndoorEnvironmentObserved": {
        "temperature": Attribute("temperature_c", 1.0, "CEL"),
        "relativeHumidity": Attribute("humidity_pct", 1.0, "P1"),
        "co2": Attribute("co2_ppm", 1.0, "59"),
        "illuminance": Attribute("light_lux", 1.0, "LUX"),
        "atmosphericPressure": Attribute("pressure_pa", 1.0, "PAL"),
    },
    "WasteContainer": {
        "fillingLevel": Attribute("fill_pct", 0.01, None),
        "temperature": Attribute("temperature_c", 1.0, "CEL"),
    },
    "ParkingSpot": {},  # status comes from the "occupied" metric, see _parking_status
}
PARKING_OCCUPIED_METRIC = "occupied"
# Models whose refDevice is a list of devices (the others name one).
DEVICE_LISTS = frozenset({"WasteContainer", "ParkingSpot"})


@dataclass(frozen=True)
class SensorFacts:
    """What an entity is built from: a public sensor and its newest values."""

    sensor_id: int
    kind: str
    name: str
    municipality: str  # slug
    municipality_name: str
    lat: float | None
    lon: float | None
    site_id: int | None
    parking_category: str | None  # "onStreet" / "offStreet" when the sensor says so
    latest: Mapping[str, tuple[float, datetime]]  # metric → (value, time)


def entity_type(kind: str) -> str | None:
    return TYPE_BY_KIND.get(kind)


def normalise_type(name: str) -> str | None:
    """A type as a query names it (short or expanded) → the short name, or None."""
    if name in TYPE_BY_KIND.values():
        return name
    for short, uri in TYPE_URIS.items():
        if name == uri:
            return short
    return None


def entity_id(type_name: str, sensor_id: int) -> str:
    return ID_PREFIX.format(type=type_name) + str(sensor_id)


def parse_entity_id(urn: str) -> tuple[str, int] | None:
    """``urn:ngsi-ld:WasteContainer:kommune-iot:17`` → ("WasteContainer", 17)."""
    for type_name in TYPE_BY_KIND.values():
        prefix = ID_PREFIX.format(type=type_name)
        if urn.startswith(prefix):
            rest = urn[len(prefix) :]
            if rest.isdigit() and len(rest) <= 18:
                return type_name, int(rest)
    return None


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _property(value: Any, observed_at: datetime | None, unit_code: str | None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "Property", "value": value}
    if observed_at is not None:
        prop["observedAt"] = iso(observed_at)
    if unit_code is not None:
        prop["unitCode"] = unit_code
    return prop


def _relationship(urn: str) -> dict[str, Any]:
    return {"type": "Relationship", "object": urn}


def _parking_status(latest: Mapping[str, tuple[float, datetime]]) -> tuple[str, datetime | None]:
    if PARKING_OCCUPIED_METRIC not in latest:
        return "unknown", None
    value, time = latest[PARKING_OCCUPIED_METRIC]
    return ("occupied" if value >= 0.5 else "free"), time


def build_entity(facts: SensorFacts) -> dict[str, Any] | None:
    """The normalized NGSI-LD entity of a sensor (no @context), or None when the sensor's
    kind has no model here or it has no location (every model here requires one)."""
    type_name = entity_type(facts.kind)
    if type_name is None or facts.lat is None or facts.lon is None:
        return None
    device = f"urn:ngsi-ld:Device:kommune-iot:{facts.sensor_id}"
    entity: dict[str, Any] = {
        "id": entity_id(type_name, facts.sensor_id),
        "type": type_name,
        "name": _property(facts.name, None, None),
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [facts.lon, facts.lat]},
        },
        "dataProvider": _property(facts.municipality_name, None, None),
        "refDevice": _relationship(device),
    }
    if type_name in DEVICE_LISTS:
        entity["refDevice"] = {"type": "Relationship", "object": [device]}
    newest: datetime | None = None
    for attribute, spec in ATTRIBUTES[type_name].items():
        if spec.metric in facts.latest:
            value, time = facts.latest[spec.metric]
            entity[attribute] = _property(_scaled(value, spec), time, spec.unit_code)
            newest = time if newest is None or time > newest else newest
    if type_name == "IndoorEnvironmentObserved":
        # Required by the model: the time of the newest of the values given.
        entity["dateObserved"] = _property(iso(newest) if newest else None, None, None)
        if newest is None:
            del entity["dateObserved"]
            return None
    if type_name == "WasteContainer" and newest is not None:
        entity["timeInstant"] = _property(iso(newest), None, None)
    if type_name == "ParkingSpot":
        status, time = _parking_status(facts.latest)
        entity["status"] = _property(status, time, None)
        category = facts.parking_category if facts.parking_category in (
            "onStreet", "offStreet") else "onStreet"  # fmt: skip
        entity["category"] = _property([category], None, None)
        site = f"site-{facts.site_id}" if facts.site_id is not None else facts.municipality
        entity["refParkingSite"] = _relationship(f"urn:ngsi-ld:ParkingSite:kommune-iot:{site}")
        if time is not None:
            entity["timeInstant"] = _property(iso(time), None, None)
    return entity


def _scaled(value: float, spec: Attribute) -> float:
    return value if spec.scale == 1.0 else round(value * spec.scale, 6)


def key_values(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The simplified (``options=keyValues``) form: attribute → value or object."""
    out: dict[str, Any] = {}
    for name, attribute in entity.items():
        if name in ("id", "type", "@context") or not isinstance(attribute, Mapping):
            out[name] = attribute
        elif attribute.get("type") == "Relationship":
            out[name] = attribute["object"]
        else:
            out[name] = attribute.get("value")
    return out


def pick_attributes(entity: dict[str, Any], attrs: Iterable[str] | None) -> dict[str, Any]:
    """Only `attrs` (and id, type), as ``attrs=`` asks."""
    if attrs is None:
        return entity
    wanted = set(attrs)
    return {k: v for k, v in entity.items() if k in ("id", "type", "@context") or k in wanted}


def temporal_attribute(
    spec: Attribute, instances: Iterable[tuple[float, datetime]], temporal_values: bool
) -> dict[str, Any] | list[dict[str, Any]]:
    """One attribute's history: a list of property instances (normalized), or with
    ``options=temporalValues`` one object with ``values`` [[value, time], ...]."""
    if temporal_values:
        return {
            "type": "Property",
            "values": [[_scaled(v, spec), iso(t)] for v, t in instances],
        }
    return [_property(_scaled(v, spec), t, spec.unit_code) for v, t in instances]


def parking_status_attribute(
    instances: Iterable[tuple[float, datetime]], temporal_values: bool
) -> dict[str, Any] | list[dict[str, Any]]:
    """ParkingSpot ``status`` over time, from the occupied metric."""
    pairs = [("occupied" if v >= 0.5 else "free", t) for v, t in instances]
    if temporal_values:
        return {"type": "Property", "values": [[s, iso(t)] for s, t in pairs]}
    return [_property(s, t, None) for s, t in pairs]


def metric_of(type_name: str, attribute: str) -> str | None:
    """The metric behind an attribute of `type_name` (status of ParkingSpot: occupied)."""
    if type_name == "ParkingSpot" and attribute == "status":
        return PARKING_OCCUPIED_METRIC
    spec = ATTRIBUTES.get(type_name, {}).get(attribute)
    return spec.metric if spec else None
