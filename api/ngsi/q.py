"""The NGSI-LD query language (``q=``, ETSI GS CIM 009 §4.9) → parameterised SQL over a
public sensor row ``s`` and its newest values, and the geo-queries ``near``/``within``.

Supported: ``;`` (and), ``|`` (or), parentheses, ``attr`` (exists), ``==``, ``!=``, ``>``,
``>=``, ``<``, ``<=`` with numbers, "strings", true/false and times; ``==`` with a range
``a..b`` or a list ``a,b,c``; ``~=``/``!~=`` with a pattern. Values are always bound.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.ngsi_ld import ATTRIBUTES, PARKING_OCCUPIED_METRIC

MAX_Q_CHARS = 1000


class QueryError(ValueError):
    """A query parameter that cannot be understood (400 BadRequestData)."""


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<op>==|!=|>=|<=|>|<|!~=|~=)
    | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
    | (?P<range>\.\.)
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[();|,])
    )""",
    re.VERBOSE,
)


@dataclass
class QCompiler:
    """Compiles `q` for one entity type; binds values into `params`."""

    type_name: str
    params: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, cast: str) -> str:
        name = f"q{len(self.params) + 1}"
        self.params[name] = value
        return f"%({name})s::{cast}"

    def attribute_sql(self, name: str) -> tuple[str, str]:
        """SQL of an attribute's value over sensor ``s``, and its type."""
        if name == "name":
            return "coalesce(s.name, 'Sensor ' || s.id)", "text"
        if name == "dataProvider":
            return "m.name", "text"
        if self.type_name == "ParkingSpot" and name == "status":
            occupied = self._latest(PARKING_OCCUPIED_METRIC, 1.0)
            return (
                f"(CASE WHEN {occupied} IS NULL THEN 'unknown' "
                f"WHEN {occupied} >= 0.5 THEN 'occupied' ELSE 'free' END)",
                "text",
            )
        spec = ATTRIBUTES[self.type_name].get(name)
        if spec is None:
            known = ["name", "dataProvider", *ATTRIBUTES[self.type_name]]
            if self.type_name == "ParkingSpot":
                known.append("status")
            raise QueryError(
                f"q: {self.type_name} has no queryable attribute {name!r}; known: "
                f"{', '.join(known)}"
            )
        return self._latest(spec.metric, spec.scale), "number"

    def _latest(self, metric: str, scale: float) -> str:
        metric_sql = self.bind(metric, "text")
        # scale is a float of models/ngsi_ld.ATTRIBUTES; the metric name is bound.
        return (
            f"(SELECT l.value * {scale!r} FROM latest_readings l JOIN metrics mt "  # noqa: S608
            f"ON mt.id = l.metric_id WHERE l.sensor_id = s.id AND mt.name = {metric_sql})"
        )

    def compile(self, text: str) -> str:
        if len(text) > MAX_Q_CHARS:
            raise QueryError(f"q: longer than {MAX_Q_CHARS} characters")
        tokens = _tokenize(text)
        parser = _Parser(tokens, self)
        sql = parser.expression(0)
        if parser.index != len(tokens):
            raise QueryError(f"q: unexpected {tokens[parser.index][1]!r}")
        return sql


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise QueryError(f"q: cannot read {text[pos : pos + 20]!r} at position {pos}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    if not tokens:
        raise QueryError("q: empty query")
    return tokens


_SQL_OP = {"==": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


@dataclass
class _Parser:
    tokens: list[tuple[str, str]]
    compiler: QCompiler
    index: int = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise QueryError("q: the query ends too early")
        self.index += 1
        return token

    def expression(self, depth: int) -> str:
        if depth > 20:
            raise QueryError("q: nested too deeply")
        parts = [self.term(depth)]
        ops: list[str] = []
        while (token := self.peek()) is not None and token[1] in (";", "|"):
            self.take()
            ops.append("AND" if token[1] == ";" else "OR")
            parts.append(self.term(depth))
        # ';' binds tighter than '|' (and before or).
        groups: list[list[str]] = [[parts[0]]]
        for op, part in zip(ops, parts[1:], strict=True):
            if op == "AND":
                groups[-1].append(part)
            else:
                groups.append([part])
        return "(" + " OR ".join("(" + " AND ".join(g) + ")" for g in groups) + ")"

    def term(self, depth: int) -> str:
        token = self.take()
        if token == ("punct", "("):
            sql = self.expression(depth + 1)
            if self.take() != ("punct", ")"):
                raise QueryError("q: expected ')'")
            return sql
        if token[0] != "word":
            raise QueryError(f"q: expected an attribute name, found {token[1]!r}")
        attribute, kind = self.compiler.attribute_sql(token[1])
        nxt = self.peek()
        if nxt is None or nxt[0] != "op":
            return f"({attribute} IS NOT NULL)"
        op = self.take()[1]
        if op in ("~=", "!~="):
            value = self.take()
            if value[0] != "string" or kind != "text":
                raise QueryError(f'q: {op} takes a "pattern" on a text attribute')
            pattern = self.compiler.bind(_unquote(value[1]), "text")
            return f"({'NOT ' if op == '!~=' else ''}coalesce({attribute} ~ {pattern}, false))"
        first = self.value(kind)
        nxt = self.peek()
        if op in ("==", "!=") and nxt is not None and nxt[0] == "range":
            self.take()
            last = self.value(kind)
            inside = f"({attribute} BETWEEN {first} AND {last})"
            return inside if op == "==" else f"(NOT coalesce({inside}, false))"
        if op in ("==", "!=") and nxt == ("punct", ","):
            values = [first]
            while self.peek() == ("punct", ","):
                self.take()
                values.append(self.value(kind))
            inside = f"({attribute} IN ({', '.join(values)}))"
            return inside if op == "==" else f"(NOT coalesce({inside}, false))"
        return f"({attribute} {_SQL_OP[op]} {first})"

    def value(self, kind: str) -> str:
        token = self.take()
        if token[0] == "number" and kind == "number":
            return self.compiler.bind(float(token[1]), "float8")
        if token[0] == "string" and kind == "text":
            return self.compiler.bind(_unquote(token[1]), "text")
        if token[0] == "datetime":
            raise QueryError("q: no time-valued attribute can be compared here")
        raise QueryError(f"q: {token[1]!r} cannot be compared with a {kind} attribute")


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class GeoQuery:
    sql: str
    params: dict[str, Any]


def geo_query(georel: str | None, geometry: str | None, coordinates: str | None) -> GeoQuery | None:
    """``georel=near;maxDistance==2000&geometry=Point&coordinates=[10.2,56.15]`` or
    ``georel=within&geometry=Polygon&coordinates=[[[lon,lat],...]]`` → SQL over ``s``."""
    if georel is None and geometry is None and coordinates is None:
        return None
    if not (georel and geometry and coordinates):
        raise QueryError("georel, geometry and coordinates go together; give all three")
    try:
        coords = json.loads(coordinates)
    except ValueError:
        raise QueryError("coordinates: not JSON, e.g. [10.2107,56.1572]") from None
    relation, _, modifier = georel.partition(";")
    if relation == "near":
        if geometry != "Point":
            raise QueryError("georel=near needs geometry=Point")
        lon, lat = _position(coords)
        match = re.fullmatch(r"(maxDistance|minDistance)==(\d+(?:\.\d+)?)", modifier)
        if not match:
            raise QueryError("georel=near needs ;maxDistance==<metres> or ;minDistance==<metres>")
        distance = float(match.group(2))
        op = "<=" if match.group(1) == "maxDistance" else ">="
        sql = (
            "(2 * %(geo_r)s::float8 * asin(sqrt("
            "power(sin(radians(s.lat - %(geo_lat)s::float8) / 2), 2)"
            " + cos(radians(%(geo_lat)s::float8)) * cos(radians(s.lat))"
            " * power(sin(radians(s.lon - %(geo_lon)s::float8) / 2), 2)))) "
            f"{op} %(geo_d)s::float8"
        )
        params = {"geo_r": EARTH_RADIUS_M, "geo_lat": lat, "geo_lon": lon, "geo_d": distance}
        return GeoQuery(sql, params)
    if relation == "within":
        if geometry != "Polygon" or modifier:
            raise QueryError("georel=within needs geometry=Polygon")
        if not isinstance(coords, list) or len(coords) != 1:
            raise QueryError("coordinates: one linear ring (polygons with holes are not offered)")
        ring = [_position(p) for p in coords[0]] if isinstance(coords[0], list) else []
        if len(ring) < 4 or ring[0] != ring[-1]:
            raise QueryError("coordinates: a closed ring of at least 4 positions")
        polygon = "(" + ",".join(f"({lon!r},{lat!r})" for lon, lat in ring) + ")"
        return GeoQuery(
            "(point(s.lon, s.lat) <@ %(geo_polygon)s::polygon)", {"geo_polygon": polygon}
        )
    raise QueryError(f"georel: {relation!r} is not offered; use near or within")


def _position(value: Any) -> tuple[float, float]:
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
        and -180 <= value[0] <= 180
        and -90 <= value[1] <= 90
    ):
        return float(value[0]), float(value[1])
    raise QueryError(f"coordinates: {value!r} is not a [longitude, latitude] position")


def parse_time(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{name}: {text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise QueryError(f"{name}: give a timezone, e.g. {text}Z")
    return value
