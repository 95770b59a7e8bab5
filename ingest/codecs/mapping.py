"""Declarative mapping from a codec's output fields to canonical metrics, with units.

A device model's mapping says, for each field of its codec's ``data`` (or of the object
the network server decoded), which metric it is and in which unit the codec gives it:

    {
      "fields": {
        "temperature": {"metric": "temperature_c", "unit": "°C"},
        "pressure": {"metric": "pressure_pa", "unit": "hPa"},
        "co2_concentration": {"metric": "co2_ppm"},
        "battery.voltage": {"metric": "battery_v", "unit": "mV"}
      },
      "ignore": ["payloadVersion", "co2_sensor_temperature"]
    }

* A field is named by its path: ``a.b`` is field ``b`` of object ``a``; a list element is
  its index (``values.0``).
* ``unit`` defaults to the metric's own unit (docs/metrics.md). Values are converted from
  it; a value given as text with its unit (``"2000 mm"``, ``"21.5 °C"``) or as a
  ``{"value": .., "unit": ..}`` object is converted from the unit it names, which must be
  of the metric's kind.
* The yes/no metrics (``occupied``, ``occupancy``) take booleans, 0/1 and the words in
  `TRUE_WORDS`/`FALSE_WORDS`, or a field's own ``"true"``/``"false"`` word lists.
* ``ignore`` names fields that are known and deliberately not stored.

Nothing is guessed: a field that is neither mapped nor ignored is left out and reported
(`Mapped.unmapped`), and a mapped value that cannot be read is left out and reported
(`Mapped.problems`). `parse_mapping` checks a mapping before it is stored: an unknown
metric or unit, a unit of the wrong kind, or two fields for one metric is a
`MappingError` listing every problem.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from domain.metrics import METRICS

TRUE_WORDS = frozenset({"true", "yes", "on", "occupied", "busy", "present", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "free", "vacant", "empty", "absent", "0"})
BOOLEAN_METRICS = frozenset({"occupied", "occupancy"})
MAX_FIELDS = 200

# unit → (kind, scale, offset): value in the kind's base unit = value × scale + offset.
_UNITS: dict[str, tuple[str, float, float]] = {
    "°C": ("temperature", 1.0, 0.0),
    "°F": ("temperature", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "K": ("temperature", 1.0, -273.15),
    "Pa": ("pressure", 1.0, 0.0),
    "hPa": ("pressure", 100.0, 0.0),
    "mbar": ("pressure", 100.0, 0.0),
    "kPa": ("pressure", 1000.0, 0.0),
    "bar": ("pressure", 100000.0, 0.0),
    "mm": ("length", 1.0, 0.0),
    "cm": ("length", 10.0, 0.0),
    "m": ("length", 1000.0, 0.0),
    "V": ("voltage", 1.0, 0.0),
    "mV": ("voltage", 0.001, 0.0),
    "%": ("fraction_pct", 1.0, 0.0),
    "ppb": ("concentration", 1.0, 0.0),
    "ppm": ("concentration", 1000.0, 0.0),
    "lx": ("illuminance", 1.0, 0.0),
    "dB(A)": ("sound", 1.0, 0.0),
    "µg/m³": ("mass_concentration", 1.0, 0.0),
    "°": ("angle", 1.0, 0.0),
    "dBm": ("power", 1.0, 0.0),
    "dB": ("ratio", 1.0, 0.0),
    "1": ("count", 1.0, 0.0),
}
# Other spellings of the units above, as vendors' codecs write them.
_SPELLINGS = {
    "c": "°C",
    "degc": "°C",
    "celsius": "°C",
    "°c": "°C",
    "f": "°F",
    "°f": "°F",
    "degf": "°F",
    "kelvin": "K",
    "k": "K",
    "pa": "Pa",
    "hpa": "hPa",
    "mbar": "mbar",
    "kpa": "kPa",
    "bar": "bar",
    "mm": "mm",
    "cm": "cm",
    "m": "m",
    "v": "V",
    "mv": "mV",
    "%": "%",
    "pct": "%",
    "percent": "%",
    "%rh": "%",
    "ppb": "ppb",
    "ppm": "ppm",
    "lx": "lx",
    "lux": "lx",
    "db(a)": "dB(A)",
    "dba": "dB(A)",
    "µg/m³": "µg/m³",
    "μg/m³": "µg/m³",
    "ug/m3": "µg/m³",
    "µg/m3": "µg/m³",
    "μg/m3": "µg/m³",
    "°": "°",
    "deg": "°",
    "degrees": "°",
    "dbm": "dBm",
    "db": "dB",
    "1": "1",
    "count": "1",
}
_NUMBER_WITH_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S.*?)?\s*$")


class MappingError(ValueError):
    """A mapping that cannot be used; `problems` lists each thing wrong with it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def canonical_unit(text: str) -> str | None:
    """The unit `text` names (any of its usual spellings), or None when unknown."""
    if text in _UNITS:
        return text
    return _SPELLINGS.get(text.strip().replace(" ", "").lower())


def _kind_of_metric(metric: str) -> str:
    if metric in BOOLEAN_METRICS:
        return "boolean"
    return _UNITS[METRICS[metric].unit][0]


@dataclass(frozen=True, slots=True)
class FieldRule:
    path: tuple[str, ...]
    metric: str
    unit: str  # canonical spelling; "bool" for the yes/no metrics
    true_words: frozenset[str] = TRUE_WORDS
    false_words: frozenset[str] = FALSE_WORDS


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """A checked mapping (see the module docstring)."""

    rules: tuple[FieldRule, ...]
    ignored: frozenset[str]
    # First path segments the mapping names (mapped or ignored): the rest is unmapped.
    known_roots: frozenset[str]

    def as_json(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for rule in self.rules:
            spec: dict[str, Any] = {"metric": rule.metric}
            if rule.unit != "bool":
                spec["unit"] = rule.unit
            else:
                if rule.true_words != TRUE_WORDS:
                    spec["true"] = sorted(rule.true_words)
                if rule.false_words != FALSE_WORDS:
                    spec["false"] = sorted(rule.false_words)
            fields[".".join(rule.path)] = spec
        return {"fields": fields, "ignore": sorted(self.ignored)}


@dataclass(slots=True)
class Mapped:
    """Canonical values from one decoded object, and what was left out."""

    values: dict[str, float | bool] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)  # fields neither mapped nor ignored
    problems: list[str] = field(default_factory=list)  # mapped fields whose value failed


def _words(spec: Mapping[str, Any], key: str, where: str, problems: list[str]) -> frozenset:
    words = spec.get(key)
    if words is None:
        return TRUE_WORDS if key == "true" else FALSE_WORDS
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        problems.append(f"{where}.{key} must be a list of words")
        return frozenset()
    return frozenset(w.strip().lower() for w in words)


def _rule(path: str, spec: Any, problems: list[str]) -> FieldRule | None:
    where = f"fields.{path}"
    if isinstance(spec, str):
        spec = {"metric": spec}
    if not isinstance(spec, Mapping):
        problems.append(f"{where} must be a metric name or an object with metric and unit")
        return None
    unknown_keys = set(spec) - {"metric", "unit", "true", "false"}
    if unknown_keys:
        problems.append(f"{where} has unknown keys: {', '.join(sorted(map(str, unknown_keys)))}")
    metric = spec.get("metric")
    if not isinstance(metric, str) or metric not in METRICS:
        problems.append(
            f"{where}.metric: {metric!r} is not a metric (docs/metrics.md: "
            f"{', '.join(sorted(METRICS))})"
        )
        return None
    segments = tuple(path.split("."))
    if not path or any(not s for s in segments):
        problems.append(f"{where}: a field path is names separated by single dots")
        return None
    if metric in BOOLEAN_METRICS:
        if spec.get("unit") not in (None, "bool", "1"):
            problems.append(f"{where}.unit: {metric} is yes/no and takes no unit")
        true_words = _words(spec, "true", where, problems)
        false_words = _words(spec, "false", where, problems)
        return FieldRule(segments, metric, "bool", true_words, false_words)
    unit_text = spec.get("unit", METRICS[metric].unit)
    unit = canonical_unit(unit_text) if isinstance(unit_text, str) else None
    if unit is None:
        problems.append(
            f"{where}.unit: {unit_text!r} is not a known unit ({', '.join(sorted(_UNITS))})"
        )
        return None
    if _UNITS[unit][0] != _kind_of_metric(metric):
        problems.append(
            f"{where}.unit: {unit_text!r} is not a unit of {metric} (its unit is "
            f"{METRICS[metric].unit})"
        )
        return None
    return FieldRule(segments, metric, unit)


def parse_mapping(document: Any) -> FieldMapping:
    """A checked mapping from its JSON form; MappingError listing every problem."""
    if not isinstance(document, Mapping):
        raise MappingError(["the mapping must be a JSON object with fields and ignore"])
    problems: list[str] = []
    extra = set(document) - {"fields", "ignore"}
    if extra:
        problems.append(f"unknown keys in the mapping: {', '.join(sorted(map(str, extra)))}")
    fields = document.get("fields", {})
    ignore = document.get("ignore", [])
    if not isinstance(fields, Mapping):
        problems.append("fields must be an object: field path → metric")
        fields = {}
    if len(fields) > MAX_FIELDS:
        problems.append(f"at most {MAX_FIELDS} fields may be mapped")
    if not isinstance(ignore, list) or not all(isinstance(n, str) and n for n in ignore):
        problems.append("ignore must be a list of field paths")
        ignore = []
    rules: list[FieldRule] = []
    by_metric: dict[str, str] = {}
    for path, spec in fields.items():
        rule = _rule(str(path), spec, problems)
        if rule is None:
            continue
        if rule.metric in by_metric:
            problems.append(
                f"fields.{path}: {rule.metric} is mapped from {by_metric[rule.metric]!r} "
                "already; one field per metric (ignore the other)"
            )
            continue
        by_metric[rule.metric] = str(path)
        rules.append(rule)
    both = {".".join(r.path) for r in rules} & set(ignore)
    if both:
        problems.append(f"fields both mapped and ignored: {', '.join(sorted(both))}")
    if not rules and not ignore and not problems:
        problems.append("the mapping maps no field")
    if problems:
        raise MappingError(problems)
    roots = {r.path[0] for r in rules} | {name.split(".")[0] for name in ignore}
    return FieldMapping(tuple(rules), frozenset(ignore), frozenset(roots))


def _lookup(obj: Any, path: tuple[str, ...]) -> Any:
    for segment in path:
        if isinstance(obj, Mapping):
            obj = obj.get(segment)
        elif isinstance(obj, list) and segment.isdigit() and int(segment) < len(obj):
            obj = obj[int(segment)]
        else:
            return None
    return obj


def _boolean(rule: FieldRule, value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        word = value.strip().lower()
        if word in rule.true_words:
            return True
        if word in rule.false_words:
            return False
    return None


def _convert(value: float, unit: str, metric: str) -> float:
    _, scale, offset = _UNITS[unit]
    _, metric_scale, metric_offset = _UNITS[METRICS[metric].unit]
    return (value * scale + offset - metric_offset) / metric_scale


def _value(rule: FieldRule, raw: Any) -> float | bool | str:
    """The field's value in the metric's unit, or a sentence saying why it cannot be read."""
    name = ".".join(rule.path)
    value, unit = raw, rule.unit
    if isinstance(raw, Mapping) and "value" in raw:  # {"value": 21.5, "unit": "°C"}
        value = raw["value"]
        if isinstance(raw.get("unit"), str) and rule.unit != "bool":
            named = canonical_unit(raw["unit"])
            if named is None or _UNITS[named][0] != _UNITS[rule.unit][0]:
                return f"{name}: unit {raw['unit']!r} is not a unit of {rule.metric}"
            unit = named
    if rule.unit == "bool":
        flag = _boolean(rule, value)
        return flag if flag is not None else f"{name}: {str(value)[:40]!r} is not yes/no"
    if isinstance(value, str):
        match = _NUMBER_WITH_UNIT.match(value)
        if match is None:
            return f"{name}: {value[:40]!r} is not a number"
        if match[2]:
            named = canonical_unit(match[2])
            if named is None or _UNITS[named][0] != _UNITS[rule.unit][0]:
                return f"{name}: unit {match[2]!r} in {value[:40]!r} is not a unit of {rule.metric}"
            unit = named
        value = float(match[1])
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name}: {type(value).__name__} is not a number"
    converted = _convert(float(value), unit, rule.metric)
    if not math.isfinite(converted):
        return f"{name}: {value!r} is not a finite number"
    return converted


def apply_mapping(mapping: FieldMapping, obj: Mapping[str, Any]) -> Mapped:
    """Canonical values of `obj` by `mapping`; unmapped fields and unreadable values are
    left out and listed, never guessed."""
    out = Mapped()
    for rule in mapping.rules:
        raw = _lookup(obj, rule.path)
        if raw is None:
            continue  # a field not in this frame (codecs send what the frame holds)
        value = _value(rule, raw)
        if isinstance(value, str):
            out.problems.append(value)
        else:
            out.values[rule.metric] = value
    out.unmapped = sorted(str(key) for key in obj if str(key) not in mapping.known_roots)
    return out
