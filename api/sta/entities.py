"""The SensorThings entity types as SQL over the project's tables, and their JSON.

Each entity type is a SELECT (``source``) whose rows are that type's entities, already
limited to public, active sensors (``PUBLIC_SENSOR`` of api/queries/public.py), with the
columns its properties and navigation links are made of. Queries wrap it as
``(source) AS t`` and add the filters; PostgreSQL pushes those into the SELECT, so an
equality on a key column becomes an index condition.

Mapping (docs/api.md, "SensorThings API"):

* Thing: one public sensor installation (a classroom climate sensor, a bin, a bay); id =
  the sensor id. Location and FeatureOfInterest: where it is (same id).
* Sensor: the device model (id 0 for sensors of no registered model).
* ObservedProperty: a metric of /api/v1/metrics.
* Datastream: sensor × metric × resolution, id = sensor_id·100000 + metric_id·10 +
  resolution (0 raw, 1 hourly average, 2 daily average), so every id says what it is.
* Observation: a reading (raw) or a rollup bucket (phenomenonTime an interval, result the
  average, ``parameters`` min/max/count); id ``<datastream id>-<µs since 1970 UTC>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from api.queries.public import PUBLIC_SENSOR

RESOLUTIONS = {0: "raw", 1: "hour", 2: "day"}
RESOLUTION_WIDTH = {1: timedelta(hours=1), 2: timedelta(days=1)}
# Datastream ids pack (sensor, metric, resolution); metric ids stay below this.
METRIC_ID_LIMIT = 10_000
MAX_SENSOR_ID = (2**63 - 1) // 100_000 - 1

OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"

# The project's units (domain/metrics.py) as UCUM codes.
UCUM = {
    "°C": "Cel",
    "%": "%",
    "ppm": "[ppm]",
    "ppb": "[ppb]",
    "lx": "lx",
    "1": "1",
    "Pa": "Pa",
    "dB(A)": "dB",
    "µg/m³": "ug/m3",
    "mm": "mm",
    "°": "deg",
    "V": "V",
    "dBm": "dB[mW]",
    "dB": "dB",
}

_NAME = "coalesce(s.name, 'Sensor ' || s.id)"
_KIND_TEXT = (
    "CASE s.kind WHEN 'climate' THEN 'Indoor climate sensor' "
    "WHEN 'bin' THEN 'Waste bin fill-level sensor' "
    "WHEN 'parking' THEN 'Parking bay occupancy sensor' ELSE 'Sensor' END"
)

THINGS = f"""
SELECT s.id, {_NAME} AS name, {_KIND_TEXT} || ', ' || m.name AS description,
       jsonb_build_object('kind', s.kind, 'municipality', m.slug) AS properties,
       s.lat, s.lon
FROM sensors s JOIN municipalities m ON m.id = s.municipality_id
WHERE {PUBLIC_SENSOR}
"""  # noqa: S608 (module constants only)

LOCATIONS = f"""
SELECT s.id, {_NAME} AS name, 'Location of ' || {_NAME} AS description,
       'application/geo+json'::text AS encoding_type, s.lat, s.lon
FROM sensors s
WHERE {PUBLIC_SENSOR} AND s.lat IS NOT NULL AND s.lon IS NOT NULL
"""  # noqa: S608

# Sensors do not move in this system's model: no location history is kept.
HISTORICAL_LOCATIONS = """
SELECT NULL::bigint AS id, NULL::timestamptz AS time, NULL::bigint AS thing_id WHERE false
"""

SENSORS = f"""
SELECT dm.id::bigint AS id, dm.vendor || ' ' || dm.model AS name,
       dm.vendor || ' ' || dm.model || ' (' || dm.kind || ')' AS description,
       'text/plain'::text AS encoding_type,
       'Payload decoder: ' || dm.decoder AS metadata, dm.vendor, dm.model
FROM device_models dm
WHERE EXISTS (SELECT 1 FROM sensors s WHERE s.device_model_id = dm.id AND {PUBLIC_SENSOR})
UNION ALL
SELECT 0::bigint, 'Unregistered device model', 'A device whose model is not registered',
       'text/plain'::text, '', NULL, NULL
WHERE EXISTS (SELECT 1 FROM sensors s WHERE s.device_model_id IS NULL AND {PUBLIC_SENSOR})
"""  # noqa: S608

OBSERVED_PROPERTIES = """
SELECT mt.id::bigint AS id, mt.name, mt.description, mt.unit FROM metrics mt
"""

_RESOLUTION_NAME = (
    "CASE r.res WHEN 1 THEN ' (hourly average)' WHEN 2 THEN ' (daily average)' ELSE '' END"
)
DATASTREAMS = f"""
SELECT s.id * 100000 + l.metric_id * 10 + r.res AS id, s.id AS thing_id,
       l.metric_id::bigint AS metric_id, r.res, coalesce(s.device_model_id, 0)::bigint AS sensor_id,
       {_NAME} || ': ' || mt.name || {_RESOLUTION_NAME} AS name,
       mt.description || {_RESOLUTION_NAME} AS description,
       mt.name AS metric, mt.unit, l.time AS last_time,
       jsonb_build_object(
           'metric', mt.name,
           'resolution', CASE r.res WHEN 1 THEN 'hour' WHEN 2 THEN 'day' ELSE 'raw' END,
           'aggregation', CASE r.res WHEN 0 THEN 'none' ELSE 'average' END) AS properties
FROM latest_readings l
JOIN sensors s ON s.id = l.sensor_id
JOIN metrics mt ON mt.id = l.metric_id
CROSS JOIN (VALUES (0), (1), (2)) AS r(res)
WHERE {PUBLIC_SENSOR}
"""  # noqa: S608

# The public API role reads readings and rollups only through the security-barrier views
# of published sensors (migrations 0019 and 0021); its own conditions cannot see others.
_OBSERVATIONS_RAW = """
SELECT r.sensor_id, r.metric_id, 0 AS res, r.time, r.time AS result_time,
       r.value AS result, NULL::float8 AS min, NULL::float8 AS max, NULL::bigint AS count
FROM published_readings r
"""
_OBSERVATIONS_ROLLUP = """
SELECT b.sensor_id, b.metric_id, {res} AS res, b.bucket AS time,
       b.bucket + interval '{width}' AS result_time,
       b.avg AS result, b.min, b.max, b.count::bigint AS count
FROM {view} b
"""
# One resolution's rows: what a Datastream's Observations read (an ordered index scan of
# one table; the union of all three could only be sorted as a whole).
OBSERVATIONS_BY_RESOLUTION = {
    0: _OBSERVATIONS_RAW,
    1: _OBSERVATIONS_ROLLUP.format(res=1, width="1 hour", view="published_readings_hourly"),
    2: _OBSERVATIONS_ROLLUP.format(res=2, width="1 day", view="published_readings_daily"),
}
OBSERVATIONS = "\nUNION ALL\n".join(OBSERVATIONS_BY_RESOLUTION.values())

FEATURES_OF_INTEREST = f"""
SELECT s.id, {_NAME} AS name, {_KIND_TEXT} || ' at ' || {_NAME} AS description,
       'application/geo+json'::text AS encoding_type, s.lat, s.lon
FROM sensors s WHERE {PUBLIC_SENSOR}
"""  # noqa: S608


@dataclass(frozen=True)
class Prop:
    """A property usable in $filter/$orderby: SQL over the row alias ``{t}`` and its type
    ("number", "text", "time", "json"); `column` when it is a plain column usable as a
    keyset position (with `python_type`)."""

    sql: str
    type: str
    column: str | None = None
    python_type: type | None = None


@dataclass(frozen=True)
class Nav:
    """A navigation property: `target`'s rows where target column = this row's column."""

    target: str
    many: bool
    pairs: tuple[tuple[str, str], ...]  # (target column, this column)


@dataclass(frozen=True)
class EntityType:
    set_name: str
    source: str
    key: tuple[str, ...]  # columns that identify a row, in default order
    key_types: tuple[type, ...]
    props: dict[str, Prop]
    navs: dict[str, Nav]
    decode_id: Callable[[Any], dict[str, Any] | None]
    render: Callable[[dict[str, Any], str], dict[str, Any]]
    entity_id: Callable[[dict[str, Any]], Any]
    bounded_by: str | None = None  # a column that must be fixed to list this type
    # Narrower sources by the value of the "res" column (Observations).
    sources_by_res: dict[int, str] = field(default_factory=dict)

    def source_for(self, fixed: dict[str, Any]) -> str:
        """The narrowest SELECT holding every row with the `fixed` column values."""
        return self.sources_by_res.get(fixed.get("res"), self.source)  # type: ignore[arg-type]


def iso(value: datetime) -> str:
    """ISO 8601 in UTC with Z."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _int_id(value: Any) -> dict[str, Any] | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return {"id": value}
    return None


def decode_datastream_id(value: Any) -> dict[str, Any] | None:
    """Datastream id → thing_id, metric_id, res; None if it cannot be one."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value >= 2**63:
        return None
    res = value % 10
    if res not in RESOLUTIONS:
        return None
    return {"thing_id": value // 100_000, "metric_id": (value % 100_000) // 10, "res": res}


def datastream_id(thing_id: int, metric_id: int, res: int) -> int:
    return thing_id * 100_000 + metric_id * 10 + res


_OBSERVATION_ID = re.compile(r"^(\d{1,19})-(-?\d{1,19})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def observation_id(row: dict[str, Any]) -> str:
    since = row["time"] - _EPOCH  # timedelta fields: cheaper than dividing timedeltas
    micros = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
    stream = row["sensor_id"] * 100_000 + row["metric_id"] * 10 + row["res"]
    return f"{stream}-{micros}"


def decode_observation_id(value: Any) -> dict[str, Any] | None:
    """``<datastream id>-<µs since 1970>`` → sensor_id, metric_id, res, time."""
    match = _OBSERVATION_ID.match(value) if isinstance(value, str) else None
    if not match:
        return None
    stream = decode_datastream_id(int(match.group(1)))
    if stream is None:
        return None
    try:
        time = _EPOCH + timedelta(microseconds=int(match.group(2)))
    except OverflowError:
        return None
    return {
        "sensor_id": stream["thing_id"],
        "metric_id": stream["metric_id"],
        "res": stream["res"],
        "time": time,
    }


def _links(body: dict[str, Any], base: str, path: str, navs: dict[str, Nav]) -> dict[str, Any]:
    body["@iot.selfLink"] = f"{base}/{path}"
    for name in navs:
        body[f"{name}@iot.navigationLink"] = f"{base}/{path}/{name}"
    return body


def _point(row: dict[str, Any]) -> dict[str, Any] | None:
    if row.get("lat") is None or row.get("lon") is None:
        return None
    return {"type": "Point", "coordinates": [row["lon"], row["lat"]]}


def _render_thing(row: dict[str, Any], base: str) -> dict[str, Any]:
    body = {
        "@iot.id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "properties": row["properties"],
    }
    return _links(body, base, f"Things({row['id']})", ENTITIES["Things"].navs)


def _render_location(row: dict[str, Any], base: str) -> dict[str, Any]:
    body = {
        "@iot.id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "encodingType": row["encoding_type"],
        "location": _point(row),
    }
    return _links(body, base, f"Locations({row['id']})", ENTITIES["Locations"].navs)


def _render_historical_location(row: dict[str, Any], base: str) -> dict[str, Any]:
    body = {"@iot.id": row["id"], "time": iso(row["time"])}
    return _links(
        body, base, f"HistoricalLocations({row['id']})", ENTITIES["HistoricalLocations"].navs
    )


def _render_sensor(row: dict[str, Any], base: str) -> dict[str, Any]:
    body = {
        "@iot.id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "encodingType": row["encoding_type"],
        "metadata": row["metadata"],
        "properties": {"vendor": row["vendor"], "model": row["model"]},
    }
    return _links(body, base, f"Sensors({row['id']})", ENTITIES["Sensors"].navs)


def _render_observed_property(row: dict[str, Any], base: str) -> dict[str, Any]:
    body = {
        "@iot.id": row["id"],
        "name": row["name"],
        "definition": f"{base.rsplit('/sta/', 1)[0]}/api/v1/metrics#{row['name']}",
        "description": row["description"],
        "properties": {"unit": row["unit"]},
    }
    return _links(
        body, base, f"ObservedProperties({row['id']})", ENTITIES["ObservedProperties"].navs
    )


def unit_of_measurement(unit: str) -> dict[str, str]:
    code = UCUM.get(unit, unit)
    return {
        "name": code,
        "symbol": unit,
        "definition": f"https://ucum.org/ucum#{code}",
    }


def _render_datastream(row: dict[str, Any], base: str) -> dict[str, Any]:
    body = {
        "@iot.id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "observationType": OM_MEASUREMENT,
        "unitOfMeasurement": unit_of_measurement(row["unit"]),
        "properties": row["properties"],
    }
    return _links(body, base, f"Datastreams({row['id']})", ENTITIES["Datastreams"].navs)


def observation_times(row: dict[str, Any]) -> tuple[str | datetime, str | datetime]:
    """phenomenonTime (an instant, or start/end of a rollup bucket) and resultTime.

    Instants stay datetimes: the JSON encoder writes them as ISO 8601 UTC with Z
    (api/http_cache.json_body), faster than formatting each here."""
    if row["res"] == 0:
        return row["time"], row["time"]
    end = iso(row["result_time"])
    return f"{iso(row['time'])}/{end}", end


def _render_observation(row: dict[str, Any], base: str) -> dict[str, Any]:
    # A page holds up to 10,000 of these: written out rather than through observation_id,
    # observation_times and _links (same keys, same order), about twice as fast.
    time = row["time"]
    res = row["res"]
    since = time - _EPOCH
    micros = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
    oid = f"{row['sensor_id'] * 100_000 + row['metric_id'] * 10 + res}-{micros}"
    link = f"{base}/Observations('{oid}')"
    if res == 0:
        return {
            "@iot.id": oid,
            "phenomenonTime": time,
            "resultTime": time,
            "result": row["result"],
            "@iot.selfLink": link,
            "Datastream@iot.navigationLink": link + "/Datastream",
            "FeatureOfInterest@iot.navigationLink": link + "/FeatureOfInterest",
        }
    end = iso(row["result_time"])
    return {
        "@iot.id": oid,
        "phenomenonTime": f"{iso(time)}/{end}",
        "resultTime": end,
        "result": row["result"],
        "parameters": {"min": row["min"], "max": row["max"], "count": row["count"]},
        "@iot.selfLink": link,
        "Datastream@iot.navigationLink": link + "/Datastream",
        "FeatureOfInterest@iot.navigationLink": link + "/FeatureOfInterest",
    }


def _render_feature(row: dict[str, Any], base: str) -> dict[str, Any]:
    body = {
        "@iot.id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "encodingType": row["encoding_type"],
        "feature": _point(row),
    }
    return _links(
        body, base, f"FeaturesOfInterest({row['id']})", ENTITIES["FeaturesOfInterest"].navs
    )


def _id_prop() -> Prop:
    return Prop("{t}.id", "number", "id", int)


def _text(column: str) -> Prop:
    return Prop(f"{{t}}.{column}", "text")


def _geometry(name: str) -> dict[str, Prop]:
    """A GeoJSON Point property of lat/lon columns: the point itself (for geo.intersects)
    and its type paths, as QGIS asks ``location/type eq 'Point'``."""
    return {
        name: Prop("point({t}.lon, {t}.lat)", "point"),
        f"{name}/type": Prop("CASE WHEN {t}.lat IS NOT NULL THEN 'Point' END", "text"),
        f"{name}/geometry/type": Prop("NULL::text", "text"),
    }


_OBSERVATION_ID_SQL = (
    "(({t}.sensor_id * 100000 + {t}.metric_id * 10 + {t}.res)::text || '-' || "
    "(extract(epoch FROM {t}.time) * 1000000)::bigint::text)"
)

ENTITIES: dict[str, EntityType] = {
    "Things": EntityType(
        "Things",
        THINGS,
        ("id",),
        (int,),
        {
            "id": _id_prop(),
            "name": _text("name"),
            "description": _text("description"),
            "properties": Prop("{t}.properties", "json"),
        },
        {
            "Locations": Nav("Locations", True, (("id", "id"),)),
            "HistoricalLocations": Nav("HistoricalLocations", True, (("thing_id", "id"),)),
            "Datastreams": Nav("Datastreams", True, (("thing_id", "id"),)),
        },
        _int_id,
        _render_thing,
        lambda row: row["id"],
    ),
    "Locations": EntityType(
        "Locations",
        LOCATIONS,
        ("id",),
        (int,),
        {
            "id": _id_prop(),
            "name": _text("name"),
            "description": _text("description"),
            "encodingType": _text("encoding_type"),
            **_geometry("location"),
        },
        {
            "Things": Nav("Things", True, (("id", "id"),)),
            "HistoricalLocations": Nav("HistoricalLocations", True, (("thing_id", "id"),)),
        },
        _int_id,
        _render_location,
        lambda row: row["id"],
    ),
    "HistoricalLocations": EntityType(
        "HistoricalLocations",
        HISTORICAL_LOCATIONS,
        ("id",),
        (int,),
        {"id": _id_prop(), "time": Prop("{t}.time", "time", "time", datetime)},
        {
            "Thing": Nav("Things", False, (("id", "thing_id"),)),
            "Locations": Nav("Locations", True, (("id", "thing_id"),)),
        },
        _int_id,
        _render_historical_location,
        lambda row: row["id"],
    ),
    "Sensors": EntityType(
        "Sensors",
        SENSORS,
        ("id",),
        (int,),
        {
            "id": _id_prop(),
            "name": _text("name"),
            "description": _text("description"),
            "encodingType": _text("encoding_type"),
            "metadata": _text("metadata"),
        },
        {"Datastreams": Nav("Datastreams", True, (("sensor_id", "id"),))},
        _int_id,
        _render_sensor,
        lambda row: row["id"],
    ),
    "ObservedProperties": EntityType(
        "ObservedProperties",
        OBSERVED_PROPERTIES,
        ("id",),
        (int,),
        {"id": _id_prop(), "name": _text("name"), "description": _text("description")},
        {"Datastreams": Nav("Datastreams", True, (("metric_id", "id"),))},
        _int_id,
        _render_observed_property,
        lambda row: row["id"],
    ),
    "Datastreams": EntityType(
        "Datastreams",
        DATASTREAMS,
        ("thing_id", "metric_id", "res"),
        (int, int, int),
        {
            "id": Prop("{t}.id", "number"),
            "name": _text("name"),
            "description": _text("description"),
            "observationType": Prop(f"'{OM_MEASUREMENT}'::text", "text"),
            "unitOfMeasurement/symbol": _text("unit"),
            "properties": Prop("{t}.properties", "json"),
        },
        {
            "Thing": Nav("Things", False, (("id", "thing_id"),)),
            "Sensor": Nav("Sensors", False, (("id", "sensor_id"),)),
            "ObservedProperty": Nav("ObservedProperties", False, (("id", "metric_id"),)),
            "Observations": Nav(
                "Observations",
                True,
                (("sensor_id", "thing_id"), ("metric_id", "metric_id"), ("res", "res")),
            ),
        },
        decode_datastream_id,
        _render_datastream,
        lambda row: row["id"],
    ),
    "Observations": EntityType(
        "Observations",
        OBSERVATIONS,
        ("sensor_id", "metric_id", "res", "time"),
        (int, int, int, datetime),
        {
            "id": Prop(_OBSERVATION_ID_SQL, "text"),
            "phenomenonTime": Prop("{t}.time", "time", "time", datetime),
            "resultTime": Prop("{t}.result_time", "time"),
            "result": Prop("{t}.result", "number"),
            "parameters/min": Prop("{t}.min", "number"),
            "parameters/max": Prop("{t}.max", "number"),
            "parameters/count": Prop("{t}.count", "number"),
        },
        {
            "Datastream": Nav(
                "Datastreams",
                False,
                (("thing_id", "sensor_id"), ("metric_id", "metric_id"), ("res", "res")),
            ),
            "FeatureOfInterest": Nav("FeaturesOfInterest", False, (("id", "sensor_id"),)),
        },
        decode_observation_id,
        _render_observation,
        observation_id,
        bounded_by="sensor_id",
        sources_by_res=OBSERVATIONS_BY_RESOLUTION,
    ),
    "FeaturesOfInterest": EntityType(
        "FeaturesOfInterest",
        FEATURES_OF_INTEREST,
        ("id",),
        (int,),
        {
            "id": _id_prop(),
            "name": _text("name"),
            "description": _text("description"),
            "encodingType": _text("encoding_type"),
            **_geometry("feature"),
        },
        {"Observations": Nav("Observations", True, (("sensor_id", "id"),))},
        _int_id,
        _render_feature,
        lambda row: row["id"],
    ),
}
