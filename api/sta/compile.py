"""$filter and $orderby syntax trees (api/sta/odata.py) → parameterised SQL.

Values from the request are always bound parameters (``%(p1)s``); the SQL text is built
only from this module's fragments and the entity definitions of api/sta/entities.py.
A path through a to-one navigation (``Datastream/ObservedProperty/name``) becomes a
scalar subquery; a comparison through a to-many one (``Datastreams/name eq 'x'``) holds
when it holds for any related entity (``EXISTS``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from api.sta.entities import ENTITIES, EntityType
from api.sta.odata import (
    ARITHMETIC,
    COMPARISONS,
    Binary,
    Call,
    Literal,
    Node,
    ODataError,
    Path,
    Unary,
)

_COMPARE_SQL = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_ARITH_SQL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_TIME_PARTS = {
    "year": "year",
    "month": "month",
    "day": "day",
    "hour": "hour",
    "minute": "minute",
}
_MAX_SUBQUERY_DEPTH = 4


@dataclass(frozen=True)
class Typed:
    sql: str
    type: str  # number, text, time, bool, json, date, timeofday, null


class _ToMany(Exception):  # noqa: N818 (control flow, not an error)
    def __init__(self, nav_name: str, rest: tuple[str, ...], alias: str, entity: EntityType):
        self.nav_name, self.rest, self.alias, self.entity = nav_name, rest, alias, entity


@dataclass
class Compiler:
    """Collects the bound parameters of one statement."""

    params: dict[str, Any] = field(default_factory=dict)
    aliases: int = 0

    def bind(self, value: Any, cast: str) -> str:
        name = f"p{len(self.params) + 1}"
        self.params[name] = value
        return f"%({name})s::{cast}"

    def alias(self) -> str:
        self.aliases += 1
        return f"t{self.aliases}"

    # --- boolean expressions ---------------------------------------------------------

    def condition(self, node: Node, entity: EntityType, alias: str) -> str:
        """SQL for a boolean $filter expression over rows ``alias`` of `entity`."""
        if isinstance(node, Binary) and node.op in ("and", "or"):
            left = self.condition(node.left, entity, alias)
            right = self.condition(node.right, entity, alias)
            return f"({left} {node.op.upper()} {right})"
        if isinstance(node, Unary) and node.op == "not":
            return f"(NOT coalesce({self.condition(node.operand, entity, alias)}, false))"
        try:
            typed = self.value(node, entity, alias)
        except _ToMany as many:
            return self._exists(node, many)
        if typed.type != "bool":
            raise ODataError("$filter: the expression must be a condition (true or false)")
        return typed.sql

    def _exists(self, node: Node, many: _ToMany) -> str:
        nav = many.entity.navs[many.nav_name]
        target = ENTITIES[nav.target]
        inner = self.alias()
        if self.aliases > 8 * _MAX_SUBQUERY_DEPTH:
            raise ODataError("$filter: too many navigation paths")
        rewritten = _replace_path(node, many.nav_name, many.rest)
        join = " AND ".join(f"{inner}.{tc} = {many.alias}.{pc}" for tc, pc in nav.pairs)
        condition = self.condition(rewritten, target, inner)
        # Fragments of this module and api/sta/entities.py only; values are bound.
        return f"EXISTS (SELECT 1 FROM ({target.source}) AS {inner} WHERE {join} AND {condition})"  # noqa: S608

    # --- values ----------------------------------------------------------------------

    def value(self, node: Node, entity: EntityType, alias: str) -> Typed:
        if isinstance(node, Literal):
            return self.literal(node)
        if isinstance(node, Path):
            return self.path(node.segments, entity, alias, depth=0)
        if isinstance(node, Unary):
            if node.op == "neg":
                operand = self.value(node.operand, entity, alias)
                _require(operand, "number", "-")
                return Typed(f"(-{operand.sql})", "number")
            return Typed(f"(NOT {self.condition(node.operand, entity, alias)})", "bool")
        if isinstance(node, Binary):
            if node.op in ("and", "or"):
                return Typed(self.condition(node, entity, alias), "bool")
            left = self.value(node.left, entity, alias)
            right = self.value(node.right, entity, alias)
            if node.op in COMPARISONS:
                return self.compare(node.op, left, right)
            if node.op in ARITHMETIC:
                return self.arithmetic(node.op, left, right)
        if isinstance(node, Call):
            return self.call(node, entity, alias)
        raise ODataError("$filter: cannot evaluate the expression")

    def literal(self, node: Literal) -> Typed:
        if node.kind == "null":
            return Typed("NULL", "null")
        if node.kind == "bool":
            return Typed("true" if node.value else "false", "bool")
        if node.kind == "string":
            return Typed(self.bind(node.value, "text"), "text")
        if node.kind == "datetime":
            return Typed(self.bind(node.value, "timestamptz"), "time")
        if node.kind == "geography":
            kind, text = _geography(node.value)
            return Typed(self.bind(text, kind), kind)
        if isinstance(node.value, int):
            if not -(2**63) <= node.value < 2**63:
                raise ODataError(f"$filter: the number {node.value} is out of range")
            return Typed(self.bind(node.value, "bigint"), "number")
        return Typed(self.bind(node.value, "float8"), "number")

    def path(self, segments: tuple[str, ...], entity: EntityType, alias: str, depth: int) -> Typed:
        head = "id" if segments[0] == "@iot.id" else segments[0]
        joined = "/".join(("id" if s == "@iot.id" else s) for s in segments)
        if joined in entity.props:
            prop = entity.props[joined]
            return Typed(prop.sql.format(t=alias), prop.type)
        if head in entity.props and entity.props[head].type == "json" and len(segments) == 2:
            base = entity.props[head].sql.format(t=alias)
            key = self.bind(segments[1], "text")
            return Typed(f"({base} -> {key})", "json")
        if head in entity.navs:
            nav = entity.navs[head]
            rest = segments[1:]
            if not rest:
                raise ODataError(
                    f"$filter: {head!r} is a navigation property; compare one of its "
                    f"properties, e.g. {head}/id"
                )
            if nav.many:
                if ENTITIES[nav.target].bounded_by is not None:
                    raise ODataError(
                        f"$filter: a condition on {head} would read every reading of every "
                        f"one of the {entity.set_name}; filter the Observations of one "
                        "Datastream instead"
                    )
                raise _ToMany(head, rest, alias, entity)
            if depth >= _MAX_SUBQUERY_DEPTH:
                raise ODataError("$filter: the navigation path is too long")
            target = ENTITIES[nav.target]
            inner = self.alias()
            selected = self.path(rest, target, inner, depth + 1)
            join = " AND ".join(f"{inner}.{tc} = {alias}.{pc}" for tc, pc in nav.pairs)
            return Typed(
                f"(SELECT {selected.sql} FROM ({target.source}) AS {inner} WHERE {join})",  # noqa: S608
                selected.type,
            )
        known = sorted({*entity.props, *entity.navs})
        raise ODataError(
            f"$filter: {entity.set_name} have no property {joined!r}; known: {', '.join(known)}"
        )

    def compare(self, op: str, left: Typed, right: Typed) -> Typed:
        left, right = _json_as(left, right), _json_as(right, left)
        if "null" in (left.type, right.type):
            if op not in ("eq", "ne"):
                raise ODataError(f"$filter: null can only be compared with eq or ne, not {op}")
            other = right if left.type == "null" else left
            return Typed(f"({other.sql} IS {'NOT ' if op == 'ne' else ''}NULL)", "bool")
        if left.type != right.type:
            raise ODataError(
                f"$filter: cannot compare a {left.type} with a {right.type} using {op}"
            )
        if left.type == "json" and op not in ("eq", "ne"):
            raise ODataError("$filter: JSON values can only be compared with eq or ne")
        return Typed(f"({left.sql} {_COMPARE_SQL[op]} {right.sql})", "bool")

    def arithmetic(self, op: str, left: Typed, right: Typed) -> Typed:
        left, right = _json_as(left, right), _json_as(right, left)
        if left.type == "time" and op in ("add", "sub") and right.type == "number":
            raise ODataError("$filter: add/sub on times take a duration, which is not offered")
        _require(left, "number", op)
        _require(right, "number", op)
        if op == "mod":
            return Typed(f"mod(({left.sql})::numeric, ({right.sql})::numeric)::float8", "number")
        if op == "div":
            return Typed(f"(({left.sql})::float8 / nullif(({right.sql})::float8, 0))", "number")
        return Typed(f"({left.sql} {_ARITH_SQL[op]} {right.sql})", "number")

    def call(self, node: Call, entity: EntityType, alias: str) -> Typed:
        args = [self.value(a, entity, alias) for a in node.args]
        name = node.name
        if name == "geo.intersects":
            point, shape = args
            if point.type != "point" or shape.type not in ("polygon", "point"):
                raise ODataError(
                    "$filter: geo.intersects takes a location and a geography'POLYGON((...))' "
                    "or geography'POINT(...)'"
                )
            operator = "<@" if shape.type == "polygon" else "~="
            return Typed(f"coalesce({point.sql} {operator} {shape.sql}, false)", "bool")
        if name in ("substringof", "startswith", "endswith", "indexof", "concat"):
            for arg in args:
                _require(arg, "text", name)
            a, b = args[0].sql, args[1].sql
            if name == "substringof":  # substringof(needle, haystack)
                return Typed(f"(strpos({b}, {a}) > 0)", "bool")
            if name == "startswith":
                return Typed(f"starts_with({a}, {b})", "bool")
            if name == "endswith":
                return Typed(f"(right({a}, length({b})) = {b})", "bool")
            if name == "indexof":
                return Typed(f"(strpos({a}, {b}) - 1)", "number")
            return Typed(f"({a} || {b})", "text")
        if name in ("length", "tolower", "toupper", "trim"):
            _require(args[0], "text", name)
            sql_name = {"length": "length", "tolower": "lower", "toupper": "upper"}.get(
                name, "btrim"
            )
            kind = "number" if name == "length" else "text"
            return Typed(f"{sql_name}({args[0].sql})", kind)
        if name == "substring":
            _require(args[0], "text", name)
            for arg in args[1:]:
                _require(arg, "number", name)
            length = f", ({args[2].sql})::int" if len(args) == 3 else ""
            return Typed(f"substr({args[0].sql}, ({args[1].sql})::int + 1{length})", "text")
        if name in _TIME_PARTS:
            _require(args[0], "time", name)
            return Typed(
                f"extract({_TIME_PARTS[name]} FROM ({args[0].sql}) AT TIME ZONE 'UTC')::int",
                "number",
            )
        if name == "second":
            _require(args[0], "time", name)
            return Typed(f"floor(extract(second FROM {args[0].sql}))::int", "number")
        if name == "fractionalseconds":
            _require(args[0], "time", name)
            return Typed(
                f"(extract(second FROM {args[0].sql}) - floor(extract(second FROM "
                f"{args[0].sql})))::float8",
                "number",
            )
        if name == "date":
            _require(args[0], "time", name)
            return Typed(f"(({args[0].sql}) AT TIME ZONE 'UTC')::date", "date")
        if name == "time":
            _require(args[0], "time", name)
            return Typed(f"(({args[0].sql}) AT TIME ZONE 'UTC')::time", "timeofday")
        if name == "totaloffsetminutes":
            _require(args[0], "time", name)
            return Typed("0", "number")  # every time is stored and served in UTC
        if name == "now":
            return Typed("now()", "time")
        if name == "mindatetime":
            return Typed(self.bind(datetime(1, 1, 1, tzinfo=UTC), "timestamptz"), "time")
        if name == "maxdatetime":
            return Typed(
                self.bind(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "timestamptz"), "time"
            )
        if name in ("round", "floor", "ceiling"):
            _require(args[0], "number", name)
            sql_name = "ceil" if name == "ceiling" else name
            return Typed(f"{sql_name}(({args[0].sql})::float8)", "number")
        raise ODataError(f"$filter: function {name}() is not offered")

    # --- ordering --------------------------------------------------------------------

    def order_value(self, node: Node, entity: EntityType, alias: str) -> Typed:
        if not referenced_paths(node):
            raise ODataError("$orderby: order by a property, or an expression of properties")
        try:
            typed = self.value(node, entity, alias)
        except _ToMany:
            raise ODataError(
                "$orderby: cannot order by a property of a to-many navigation"
            ) from None
        if typed.type == "json":
            return Typed(f"({typed.sql} #>> '{{}}')", "text")
        return typed


def _require(value: Typed, kind: str, where: str) -> None:
    if value.type == "null":
        return
    if value.type != kind:
        raise ODataError(f"$filter: {where} needs a {kind}, got a {value.type}")


def _json_as(value: Typed, other: Typed) -> Typed:
    """A JSON property value compared with a typed value: read it as that type."""
    if value.type != "json" or other.type in ("json", "null"):
        return value
    if other.type == "number":
        return Typed(
            f"(CASE WHEN jsonb_typeof({value.sql}) = 'number' "
            f"THEN ({value.sql} #>> '{{}}')::float8 END)",
            "number",
        )
    if other.type == "bool":
        return Typed(
            f"(CASE WHEN jsonb_typeof({value.sql}) = 'boolean' "
            f"THEN ({value.sql} #>> '{{}}')::boolean END)",
            "bool",
        )
    if other.type == "text":
        return Typed(f"({value.sql} #>> '{{}}')", "text")
    return value


def _replace_path(node: Node, nav_name: str, rest: tuple[str, ...]) -> Node:
    """`node` with every path starting at `nav_name` cut to the part after it."""
    if isinstance(node, Path):
        if node.segments[0] == nav_name:
            return Path(rest if node.segments[1:] == rest else node.segments[1:])
        return node
    if isinstance(node, Unary):
        return Unary(node.op, _replace_path(node.operand, nav_name, rest))
    if isinstance(node, Binary):
        return Binary(
            node.op,
            _replace_path(node.left, nav_name, rest),
            _replace_path(node.right, nav_name, rest),
        )
    if isinstance(node, Call):
        return Call(node.name, tuple(_replace_path(a, nav_name, rest) for a in node.args))
    return node


def fixed_columns(node: Node | None, entity: EntityType) -> tuple[dict[str, Any], bool]:
    """Column equalities implied by top-level ``and`` terms ``id eq N`` or
    ``<to-one navigation>/id eq N`` (so they become index conditions and bound a scan),
    and False when such a term can match nothing (an id of the wrong form)."""
    fixed: dict[str, Any] = {}
    possible = True
    for term in conjuncts(node):
        if not (isinstance(term, Binary) and term.op == "eq"):
            continue
        path, literal = term.left, term.right
        if isinstance(path, Literal):
            path, literal = literal, path
        if not (isinstance(path, Path) and isinstance(literal, Literal)):
            continue
        segments = tuple("id" if s == "@iot.id" else s for s in path.segments)
        if segments == ("id",):
            decoded = entity.decode_id(literal.value)
            if decoded is None:
                possible = False
                continue
            fixed.update(decoded)
        elif len(segments) == 2 and segments[1] == "id" and segments[0] in entity.navs:
            nav = entity.navs[segments[0]]
            if nav.many:
                continue
            decoded = ENTITIES[nav.target].decode_id(literal.value)
            if decoded is None:
                possible = False
                continue
            for target_column, this_column in nav.pairs:
                if target_column in decoded:
                    fixed[this_column] = decoded[target_column]
    return fixed, possible


def conjuncts(node: Node | None) -> list[Node]:
    if node is None:
        return []
    if isinstance(node, Binary) and node.op == "and":
        return conjuncts(node.left) + conjuncts(node.right)
    return [node]


def referenced_paths(node: Node | None) -> set[tuple[str, ...]]:
    """Every property path an expression uses."""
    if node is None:
        return set()
    if isinstance(node, Path):
        return {node.segments}
    if isinstance(node, Unary):
        return referenced_paths(node.operand)
    if isinstance(node, Binary):
        return referenced_paths(node.left) | referenced_paths(node.right)
    if isinstance(node, Call):
        out: set[tuple[str, ...]] = set()
        for arg in node.args:
            out |= referenced_paths(arg)
        return out
    return set()


_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
_PAIR = re.compile(rf"\s*({_NUMBER})\s+({_NUMBER})\s*")


def _geography(wkt: str) -> tuple[str, str]:
    """WKT POINT or POLYGON (one ring, longitude first) → PostgreSQL point/polygon text."""
    text = wkt.strip()
    match = re.fullmatch(r"(?:SRID=4326;)?\s*(POINT|POLYGON)\s*\((.*)\)", text, re.I | re.S)
    if not match:
        raise ODataError(f"$filter: geography'{wkt[:40]}' is not a WKT POINT or POLYGON")
    kind, body = match.group(1).upper(), match.group(2).strip()
    if kind == "POLYGON":
        if not (body.startswith("(") and body.endswith(")")) or body.count("(") != 1:
            raise ODataError("$filter: a POLYGON with one ring (no holes) is offered")
        body = body[1:-1]
    pairs = []
    for part in body.split(","):
        pair = _PAIR.fullmatch(part)
        if not pair:
            raise ODataError(f"$filter: {part.strip()!r} is not a 'longitude latitude' position")
        pairs.append(f"({float(pair.group(1))!r},{float(pair.group(2))!r})")
    if kind == "POINT":
        if len(pairs) != 1:
            raise ODataError("$filter: a POINT has one position")
        return "point", pairs[0]
    if len(pairs) < 4:
        raise ODataError("$filter: a POLYGON ring has at least 4 positions")
    return "polygon", "(" + ",".join(pairs) + ")"
