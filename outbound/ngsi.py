"""Readings as NGSI-LD entities of the FIWARE Smart Data Models.

Each sensor of a batch becomes one entity carrying its newest values in the batch (an
NGSI-LD broker keeps the current state; a target that wants every reading uses the HTTP
JSON kind): climate sensors `IndoorEnvironmentObserved`, bins `WasteContainer`, parking
bays `ParkingSpot`. Other kinds are not forwarded to NGSI-LD.

Entities are built in the normalised form (`Property` / `GeoProperty` / `Relationship`)
that `POST /ngsi-ld/v1/entityOperations/upsert` takes; `simplified` gives the key-values
form that the Smart Data Models JSON schemas describe (tests/outbound validates it).

Units follow the models where they say one: `relativeHumidity` and `fillingLevel` are
fractions (0–1). `co2` is sent in ppm with unitCode "59" (UN/CEFACT ppm): the model's
description says mg/L, a unit no indoor-climate sensor reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SMART_DATA_MODELS_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld"
NGSI_LD_CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
CONTEXTS = {
    "IndoorEnvironmentObserved": SMART_DATA_MODELS_CONTEXT,
    "WasteContainer": "https://raw.githubusercontent.com/smart-data-models/"
    "dataModel.WasteManagement/master/context.jsonld",
    "ParkingSpot": "https://raw.githubusercontent.com/smart-data-models/"
    "dataModel.Parking/master/context.jsonld",
}
ENTITY_TYPES = {
    "climate": "IndoorEnvironmentObserved",
    "bin": "WasteContainer",
    "parking": "ParkingSpot",
}
UPSERT_PATH = "/ngsi-ld/v1/entityOperations/upsert"


@dataclass(frozen=True)
class SensorPlace:
    id: int
    external_id: str
    name: str | None
    kind: str
    lat: float | None
    lon: float | None
    site_id: int | None
    dev_eui: str | None


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def _safe(text: str) -> str:
    """An id segment the models' EntityIdentifierType pattern accepts."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def newest_by_sensor(readings: list[list[Any]]) -> dict[int, dict[str, tuple[float, float]]]:
    """sensor id -> metric -> (epoch s, value), the newest of each in the batch."""
    newest: dict[int, dict[str, tuple[float, float]]] = {}
    for t, sensor_id, metric, value in readings:
        held = newest.setdefault(int(sensor_id), {}).get(metric)
        if held is None or float(t) >= held[0]:
            newest[int(sensor_id)][metric] = (float(t), float(value))
    return newest


def _property(value: Any, observed: str | None = None, unit: str | None = None) -> dict:
    prop: dict[str, Any] = {"type": "Property", "value": value}
    if observed:
        prop["observedAt"] = observed
    if unit:
        prop["unitCode"] = unit
    return prop


def entity(
    municipality: str, sensor: SensorPlace, values: dict[str, tuple[float, float]]
) -> dict | None:
    """The normalised entity of one sensor, or None when its kind or values have no model
    or it has no location (every model requires one)."""
    entity_type = ENTITY_TYPES.get(sensor.kind)
    if entity_type is None or sensor.lat is None or sensor.lon is None or not values:
        return None
    observed_s = max(t for t, _ in values.values())
    observed = _iso(observed_s)
    doc: dict[str, Any] = {
        "id": f"urn:ngsi-ld:{entity_type}:{_safe(municipality)}:{_safe(sensor.external_id)}",
        "type": entity_type,
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [sensor.lon, sensor.lat]},
        },
        "source": _property("kommune-iot"),
    }
    if sensor.name:
        doc["name"] = _property(sensor.name)
    if sensor.dev_eui:
        device = f"urn:ngsi-ld:Device:{_safe(sensor.dev_eui)}"
    else:
        device = f"urn:ngsi-ld:Device:{_safe(municipality)}:{_safe(sensor.external_id)}"

    def put(metric: str, name: str, scale: float = 1.0, unit: str | None = None,
            minimum: float | None = None, maximum: float | None = None) -> None:  # fmt: skip
        if metric not in values:
            return
        t, v = values[metric]
        v = v * scale
        if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
            return  # outside what the model allows: left out rather than sent invalid
        doc[name] = _property(v, _iso(t), unit)

    if entity_type == "IndoorEnvironmentObserved":
        doc["dateObserved"] = _property(observed)
        doc["refDevice"] = {"type": "Relationship", "object": device}
        put("co2_ppm", "co2", unit="59")
        put("temperature_c", "temperature", unit="CEL", minimum=0)
        put("humidity_pct", "relativeHumidity", 0.01, minimum=0, maximum=1)
        put("light_lux", "illuminance", unit="LUX", minimum=0)
    elif entity_type == "WasteContainer":
        doc["refDevice"] = {"type": "Relationship", "object": [device]}
        doc["timeInstant"] = _property(observed)
        put("fill_pct", "fillingLevel", 0.01, minimum=0, maximum=1)
        put("temperature_c", "temperature", unit="CEL")
    else:  # ParkingSpot
        site = f"urn:ngsi-ld:ParkingSite:{_safe(municipality)}:{sensor.site_id or 'unassigned'}"
        doc["refParkingSite"] = {"type": "Relationship", "object": site}
        doc["refDevice"] = {"type": "Relationship", "object": [device]}
        doc["category"] = _property(["onStreet"])
        doc["timeInstant"] = _property(observed)
        status = "unknown"
        if "occupied" in values:
            status = "occupied" if values["occupied"][1] >= 0.5 else "free"
        doc["status"] = _property(status, _iso(values.get("occupied", (observed_s, 0))[0]))
    doc["@context"] = [CONTEXTS[entity_type], NGSI_LD_CORE_CONTEXT]
    return doc


def simplified(doc: dict) -> dict:
    """The key-values form of a normalised entity (what the JSON schemas describe)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "@context":
            continue
        if isinstance(value, dict) and value.get("type") in ("Property", "GeoProperty"):
            out[key] = value["value"]
        elif isinstance(value, dict) and value.get("type") == "Relationship":
            out[key] = value["object"]
        else:
            out[key] = value
    return out


def entities(
    municipality: str, sensors: dict[int, SensorPlace], readings: list[list[Any]]
) -> list[dict]:
    """The entities of a batch of readings ([epoch s, sensor id, metric, value] rows)."""
    result = []
    for sensor_id, values in sorted(newest_by_sensor(readings).items()):
        sensor = sensors.get(sensor_id)
        if sensor is None:
            continue
        doc = entity(municipality, sensor, values)
        if doc is not None:
            result.append(doc)
    return result
