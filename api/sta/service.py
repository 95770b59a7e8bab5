"""Answer a SensorThings request: resolve the resource path, run the bounded queries, and
build the JSON (entities, collections with ``@iot.nextLink``, ``$expand``, ``dataArray``).

Collections page by key: ``@iot.nextLink`` carries a ``$skiptoken`` holding the last
row's position (api/pagination.py), so a page reads from where the previous one ended,
whenever the order is by key columns (the default) or by ``phenomenonTime``. Other
orders page with ``$skip``, up to `MAX_SKIP`. Observations must be limited to one
sensor (a Datastream or FeatureOfInterest path, or ``$filter=Datastream/@iot.id eq N``)
before they are filtered on anything but their times, ordered or counted.

One Datastream's Observations are read through ``iot_published_observations`` (migration
0025): an index range scan of its rows after the page's position, in time order, with the
``phenomenonTime`` bounds of ``$filter`` pushed into it; the rest of ``$filter`` applies
to what it returns. A page reads at most `MAX_SCANNED_ROWS` rows: a filter that keeps few
of them gives a short page whose ``@iot.nextLink`` continues where the reading stopped.
Ordering by anything else, or counting, reads the Datastream's rows within the time
bounds, and is refused when there are more than `MAX_SCANNED_ROWS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import HTTPException
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from api.pagination import decode_cursor, encode_cursor, filter_fingerprint
from api.queries.public import PUBLIC_SENSOR
from api.sta.compile import Compiler, conjuncts, fixed_columns, referenced_paths
from api.sta.entities import ENTITIES, EntityType, iso, observation_times
from api.sta.odata import (
    Binary,
    ExpandItem,
    Literal,
    Node,
    ODataError,
    OrderTerm,
    Path,
    parse_expand,
    parse_filter,
    parse_orderby,
    parse_select,
)

DEFAULT_TOP = 100
MAX_TOP = 10_000
MAX_SKIP = 10_000
MAX_EXPAND_DEPTH = 3
MAX_EXPAND_ROWS = 10_000  # rows an expanded collection may add across all parents
TIME_ONLY = {("phenomenonTime",), ("resultTime",)}
# Rows of one Datastream a request may read: the bound of a filtered page (which then ends
# short, with a next link) and of an order or count other than by time (refused beyond).
MAX_SCANNED_ROWS = 100_000
# Observations of all Datastreams: at most this many Datastreams are read for one page.
MAX_STREAMS_PER_PAGE = 50
END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
# Public Datastreams from a (sensor, metric) position on, in key order (the latest_readings
# primary key bounds the scan).
_STREAMS_FROM = f"""
SELECT l.sensor_id, l.metric_id, r.res
FROM latest_readings l
JOIN sensors s ON s.id = l.sensor_id
CROSS JOIN (VALUES (0), (1), (2)) AS r(res)
WHERE {PUBLIC_SENSOR} AND (l.sensor_id, l.metric_id) >= (%(s)s::bigint, %(m)s::smallint)
ORDER BY l.sensor_id, l.metric_id, r.res
LIMIT %(n)s::int
"""  # noqa: S608 (module constants only)
# One Datastream's Observations (published sensors only), exclusive time bounds.
_OBSERVATIONS_OF = (
    "iot_published_observations(%(ds_sensor)s::bigint, %(ds_metric)s::smallint, "
    "%(ds_res)s::smallint, %(ds_after)s::timestamptz, %(ds_before)s::timestamptz, "
    "%(ds_descending)s::boolean, %(ds_limit)s::integer)"
)
# A filtered stretch of a Datastream: the rows kept, then the last row read with how many
# were read (iot_scanned > 0), so the next stretch starts after it.
_FILTERED_STRETCH = f"""
WITH scanned AS MATERIALIZED (SELECT * FROM {_OBSERVATIONS_OF})
SELECT k.*, 0::bigint AS iot_scanned FROM (
    SELECT t.* FROM scanned t WHERE {{condition}} ORDER BY t.time {{direction}}
    LIMIT %(ds_want)s::integer) k
UNION ALL
SELECT e.*, (SELECT count(*) FROM scanned) FROM (
    SELECT t.* FROM scanned t ORDER BY t.time {{backwards}} LIMIT 1) e
"""  # noqa: S608 (module constants and compiled fragments; values are bound)
# Up to MAX_SCANNED_ROWS + 1 rows of a Datastream, ordered otherwise than by time.
_ORDERED_STRETCH = f"""
WITH scanned AS MATERIALIZED (SELECT * FROM {_OBSERVATIONS_OF})
SELECT n.n AS iot_scanned, k.* FROM (SELECT count(*) AS n FROM scanned) n
LEFT JOIN LATERAL (
    SELECT t.* FROM scanned t WHERE {{condition}} ORDER BY {{order}}
    LIMIT %(ds_want)s::integer OFFSET %(ds_skip)s::integer) k ON true
"""  # noqa: S608
_COUNT_STRETCH = f"""
SELECT count(*) AS iot_scanned, count(*) FILTER (WHERE {{condition}}) AS n
FROM {_OBSERVATIONS_OF} t
"""  # noqa: S608


class StaError(Exception):
    """An error answered in the standard's shape: ``{"code", "type", "message"}``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "type": "error", "message": self.message}


@dataclass
class Options:
    """The query options of one (possibly expanded) collection."""

    filter: Node | None = None
    orderby: list[OrderTerm] = field(default_factory=list)
    top: int = DEFAULT_TOP
    skip: int = 0
    skiptoken: str | None = None
    select: list[str] | None = None
    expand: list[ExpandItem] = field(default_factory=list)
    count: bool = False
    data_array: bool = False
    raw: dict[str, str] = field(default_factory=dict)


def parse_options(raw: dict[str, str], nested: bool = False) -> Options:
    options = Options(raw=raw)
    known = {"$filter", "$orderby", "$top", "$skip", "$select", "$expand", "$count"}
    known |= {"$resultFormat", "$skiptoken"} if not nested else {"$resultFormat"}
    for key in raw:
        if key.startswith("$") and key not in known:
            raise ODataError(f"unknown query option {key!r}; known: {', '.join(sorted(known))}")
    if raw.get("$filter"):
        options.filter = parse_filter(raw["$filter"])
    if raw.get("$orderby"):
        options.orderby = parse_orderby(raw["$orderby"])
    if "$top" in raw:
        options.top = _non_negative(raw["$top"], "$top")
    if "$skip" in raw:
        options.skip = _non_negative(raw["$skip"], "$skip")
        if options.skip > MAX_SKIP:
            raise ODataError(
                f"$skip: at most {MAX_SKIP}; follow @iot.nextLink, which continues from the "
                "last row's key, or narrow the request with $filter"
            )
    options.skiptoken = raw.get("$skiptoken") or None
    if raw.get("$select"):
        options.select = parse_select(raw["$select"])
    if raw.get("$expand"):
        options.expand = parse_expand(raw["$expand"])
    if "$count" in raw:
        if raw["$count"] not in ("true", "false"):
            raise ODataError("$count: must be true or false")
        options.count = raw["$count"] == "true"
        if options.count and nested:
            raise ODataError("$count inside $expand is not offered; ask the collection itself")
    if "$resultFormat" in raw:
        if raw["$resultFormat"] != "dataArray":
            raise ODataError("$resultFormat: the only result format offered is dataArray")
        options.data_array = True
    return options


def _non_negative(text: str, option: str) -> int:
    if not re.fullmatch(r"\d{1,9}", text.strip()):
        raise ODataError(f"{option}: must be a non-negative integer, got {text!r}")
    return int(text)


@dataclass
class Target:
    """What a resource path names: rows of `entity` with `fixed` column values."""

    entity: EntityType
    fixed: dict[str, Any]
    single: bool
    path: str  # the path as served, for links
    prop: str | None = None
    value: bool = False  # /$value
    ref: bool = False  # /$ref


_SEGMENT = re.compile(r"^([A-Za-z]+)(?:\((.+)\))?$")


def _key(text: str) -> Any:
    if re.fullmatch(r"\d{1,19}", text):
        return int(text)
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    raise StaError(400, f"{text!r} is not an id: use a number or a quoted string")


class Service:
    """One request against one connection."""

    def __init__(self, conn: AsyncConnection, base: str) -> None:
        self.conn = conn
        self.base = base.rstrip("/")

    # --- paths ------------------------------------------------------------------------

    async def resolve(self, path: str) -> Target:
        segments = [s for s in path.split("/") if s]
        first = _SEGMENT.match(segments[0]) if segments else None
        if first is None or first.group(1) not in ENTITIES:
            raise StaError(
                404, f"no entity set {segments[0] if segments else ''!r}; see the service root"
            )
        entity = ENTITIES[first.group(1)]
        target = Target(entity, {}, False, entity.set_name)
        if first.group(2) is not None:
            target = await self._by_id(target, first.group(2))
        for index, segment in enumerate(segments[1:], start=1):
            if segment == "$ref":
                if index != len(segments) - 1:
                    raise StaError(400, "$ref must end the path")
                target.ref = True
                break
            if segment == "$value":
                if target.prop is None or index != len(segments) - 1:
                    raise StaError(400, "$value follows a property, at the end of the path")
                target.value = True
                break
            if target.prop is not None:
                raise StaError(404, f"{target.prop!r} has no part {segment!r}")
            match = _SEGMENT.match(segment)
            if match is None or not target.single:
                raise StaError(
                    404, f"{segment!r} must follow a single entity, e.g. Things(1)/Datastreams"
                )
            name = match.group(1)
            if name in target.entity.navs:
                row = await self.fetch_one(target)
                nav = target.entity.navs[name]
                fixed = {tc: row[pc] for tc, pc in nav.pairs}
                child = ENTITIES[nav.target]
                target = Target(
                    child,
                    fixed,
                    not nav.many,
                    f"{target.entity.set_name}({_quote(target.entity.entity_id(row))})/{name}",
                )
                if match.group(2) is not None:
                    if not nav.many:
                        raise StaError(400, f"{name} is a single entity: drop the id")
                    target = await self._by_id(target, match.group(2))
                elif not nav.many:
                    await self.fetch_one(target)
            elif name in _RENDERED_PROPERTIES[target.entity.set_name] and match.group(2) is None:
                await self.fetch_one(target)
                target.prop = name
            else:
                raise StaError(404, f"{target.entity.set_name} have no property {name!r}")
        return target

    async def _by_id(self, target: Target, key_text: str) -> Target:
        key = _key(key_text)
        decoded = target.entity.decode_id(key)
        if decoded is None or any(target.fixed.get(c, v) != v for c, v in decoded.items()):
            raise StaError(404, f"no {target.entity.set_name}({key_text})")
        fixed = {**target.fixed, **decoded}
        path = f"{target.entity.set_name}({key_text})"
        single = Target(target.entity, fixed, True, path)
        await self.fetch_one(single)
        return single

    async def fetch_one(self, target: Target) -> dict[str, Any]:
        compiler = Compiler()
        where = self._fixed_sql(compiler, target.fixed, "t")
        source = target.entity.source_for(target.fixed)
        sql = f"SELECT t.* FROM ({source}) AS t WHERE {where} LIMIT 1"  # noqa: S608
        rows = await self._run(sql, compiler.params)
        if not rows:
            raise StaError(404, f"no such entity: {target.path}")
        return rows[0]

    # --- answers ----------------------------------------------------------------------

    async def answer(self, target: Target, raw: dict[str, str]) -> Any:
        options = parse_options(raw)
        if target.single:
            row = await self.fetch_one(target)
            if target.prop is not None:
                value = target.entity.render(row, self.base).get(target.prop)
                if isinstance(value, datetime):
                    value = iso(value)
                if target.value:
                    return _ValueText("" if value is None else str(value))
                return {target.prop: value}
            if target.ref:
                return {"@iot.selfLink": target.entity.render(row, self.base)["@iot.selfLink"]}
            body = target.entity.render(row, self.base)
            await self.expand([body], [row], target.entity, options.expand, depth=1)
            return _select(body, options.select, target.entity)
        return await self.collection(target, options)

    async def collection(self, target: Target, options: Options) -> dict[str, Any]:
        entity = target.entity
        fixed_by_filter, possible = fixed_columns(options.filter, entity)
        fixed = {**target.fixed}
        for column, value in fixed_by_filter.items():
            if fixed.get(column, value) != value:
                possible = False
            fixed[column] = value
        self._check_bounded(entity, fixed, options)
        top = min(options.top, MAX_TOP)
        compiler = Compiler()
        where = [self._fixed_sql(compiler, fixed, "t")]
        if options.filter is not None:
            where.append(compiler.condition(options.filter, entity, "t"))
        if not possible:
            where.append("false")
        order, keyset = self._order(compiler, entity, fixed, options.orderby)
        fingerprint = filter_fingerprint(
            path=target.path, filter=options.raw.get("$filter"), orderby=options.raw.get("$orderby")
        )
        count_where = list(where)
        count_params = dict(compiler.params)
        after: list[Any] | None = None
        if options.skiptoken:
            if keyset is None:
                raise StaError(400, "$skiptoken belongs to a keyset order; use $skip instead")
            try:
                after = decode_cursor(options.skiptoken, fingerprint, [c[2] for c in keyset])
            except HTTPException as exc:
                raise StaError(400, str(exc.detail).replace("'cursor'", "'$skiptoken'")) from None
            where.append(self._after_sql(compiler, keyset, after))  # type: ignore[arg-type]
        source = entity.source_for(fixed)
        resume: list[Any] | None = None
        stream = _one_datastream(entity, fixed)
        total: int | None = None
        if stream is not None:
            condition = " AND ".join(where)
            filtered = options.filter is not None
            if options.count:
                total = await self._count_stream(stream, options.filter, condition,
                                                 compiler.params)  # fmt: skip
            if not possible:
                rows = []
            elif keyset is not None and [k[0] for k in keyset] == ["time"]:
                rows, resume_time, _ = await self._stream_page(
                    stream,
                    condition if filtered else None,
                    compiler.params,
                    options.filter,
                    keyset[0][1],
                    after[0] if after is not None else None,
                    options.skip + top + 1,
                )
                rows = rows[options.skip :]
                resume = None if resume_time is None else [resume_time]
            else:
                rows = await self._ordered_stream(
                    stream, options.filter, condition, order, compiler.params, options, top
                )
        elif entity.bounded_by is not None and entity.bounded_by not in fixed:
            # Observations of every Datastream: Datastream after Datastream, in key order.
            rows, resume = await self._walk_streams(
                entity, options.filter, after, top + 1 + options.skip, possible
            )
            rows = rows[options.skip :]
        else:
            sql = (
                f"SELECT t.* FROM ({source}) AS t WHERE {' AND '.join(where)} "  # noqa: S608
                f"ORDER BY {order} LIMIT {top + 1} OFFSET {options.skip}"
            )
            rows = await self._run(sql, compiler.params)
        more = len(rows) > top
        rows = rows[:top]
        body: dict[str, Any] = {}
        if total is not None:
            body["@iot.count"] = total
        elif options.count:
            count_sql = (
                f"SELECT count(*) AS n FROM ({source}) AS t "  # noqa: S608
                f"WHERE {' AND '.join(count_where)}"
            )
            body["@iot.count"] = (await self._run(count_sql, count_params))[0]["n"]
        if target.ref:
            body["value"] = [{"@iot.selfLink": entity.render(r, self.base)["@iot.selfLink"]}
                             for r in rows]  # fmt: skip
        elif options.data_array:
            body["value"] = self._data_array(entity, rows, options.select)
        else:
            rendered = [entity.render(row, self.base) for row in rows]
            await self.expand(rendered, rows, entity, options.expand, depth=1)
            body["value"] = [_select(item, options.select, entity) for item in rendered]
        if (more or resume is not None) and top > 0:
            next_options = {
                k: v for k, v in options.raw.items() if k not in ("$skip", "$skiptoken")
            }
            if keyset is not None:
                position = [rows[-1][c[0]] for c in keyset] if more else resume
                token = encode_cursor(position, fingerprint)  # type: ignore[arg-type]
                next_options["$skiptoken"] = token
                if options.skip:
                    next_options["$skip"] = "0"
            else:
                next_options["$skip"] = str(options.skip + top)
                if options.skip + top > MAX_SKIP:
                    next_options = {}
            if next_options:
                body["@iot.nextLink"] = f"{self.base}/{target.path}?{urlencode(next_options)}"
        return body

    async def _stream_page(
        self,
        stream: tuple[int, int, int],
        condition: str | None,
        params: dict[str, Any],
        filter_node: Node | None,
        descending: bool,
        after_time: datetime | None,
        need: int,
        budget: int | None = None,
    ) -> tuple[list[dict[str, Any]], datetime | None, int]:
        """Up to `need` Observations of one Datastream in time order after `after_time`
        where `condition` (SQL over ``t``; None: every row) holds; when the page ends
        short because `budget` (default `MAX_SCANNED_ROWS`) rows were read, the time to
        resume after; and how many rows a filtered read went through."""
        budget = MAX_SCANNED_ROWS if budget is None else budget
        low, high = time_bounds(filter_node)
        if after_time is not None:
            if descending:
                high = after_time if high is None else min(high, after_time)
            else:
                low = after_time if low is None else max(low, after_time)
        if low is not None and high is not None and low >= high:
            return [], None, 0
        key = _stream_params(stream, low, high, descending)
        if condition is None:
            sql = f"SELECT t.* FROM {_OBSERVATIONS_OF} t"  # noqa: S608
            return await self._run(sql, {**key, "ds_limit": need}), None, 0
        direction = "DESC" if descending else "ASC"
        backwards = "ASC" if descending else "DESC"
        sql = _FILTERED_STRETCH.format(
            condition=condition, direction=direction, backwards=backwards
        )
        rows: list[dict[str, Any]] = []
        scanned = 0
        stretch = max(1_000, 4 * need)
        while True:
            limit = min(stretch, budget - scanned)
            found = await self._run(
                sql, {**params, **key, "ds_limit": limit, "ds_want": need - len(rows)}
            )
            edge: dict[str, Any] | None = None
            read = 0
            for row in found:
                count = row.pop("iot_scanned")
                if count:  # the last row read, with how many were read
                    edge, read = row, count
                else:
                    rows.append(row)
            scanned += read
            if len(rows) >= need or edge is None:
                return rows[:need], None, scanned
            if read < limit:
                return rows, None, scanned  # the Datastream ends within the stretch
            if scanned >= budget:
                return rows, edge["time"], scanned
            if descending:
                key["ds_before"] = edge["time"]
            else:
                key["ds_after"] = edge["time"]
            stretch *= 2  # a selective filter: read longer stretches

    async def _ordered_stream(
        self,
        stream: tuple[int, int, int],
        filter_node: Node | None,
        condition: str,
        order: str,
        params: dict[str, Any],
        options: Options,
        top: int,
    ) -> list[dict[str, Any]]:
        """A page of one Datastream in an order other than by time: every row within the
        filter's time bounds is read, so at most `MAX_SCANNED_ROWS` may be."""
        low, high = time_bounds(filter_node)
        key = _stream_params(stream, low, high, False)
        sql = _ORDERED_STRETCH.format(condition=condition, order=order)
        found = await self._run(
            sql,
            {**params, **key, "ds_limit": MAX_SCANNED_ROWS + 1, "ds_want": top + 1,
             "ds_skip": options.skip},
        )  # fmt: skip
        if found and found[0]["iot_scanned"] > MAX_SCANNED_ROWS:
            raise _too_many(stream, "ordered otherwise than by phenomenonTime")
        rows = []
        for row in found:
            del row["iot_scanned"]
            if row["sensor_id"] is not None:
                rows.append(row)
        return rows

    async def _count_stream(
        self,
        stream: tuple[int, int, int],
        filter_node: Node | None,
        condition: str,
        params: dict[str, Any],
    ) -> int:
        low, high = time_bounds(filter_node)
        key = _stream_params(stream, low, high, False)
        sql = _COUNT_STRETCH.format(condition=condition)
        found = await self._run(sql, {**params, **key, "ds_limit": MAX_SCANNED_ROWS + 1})
        if found[0]["iot_scanned"] > MAX_SCANNED_ROWS:
            raise _too_many(stream, "counted")
        return found[0]["n"]

    async def _walk_streams(
        self,
        entity: EntityType,
        condition: Node | None,
        after: list[Any] | None,
        need: int,
        possible: bool,
    ) -> tuple[list[dict[str, Any]], list[Any] | None]:
        """Up to `need` Observations of all public Datastreams in key order after `after`
        (sensor, metric, resolution, time), one Datastream's index range at a time. Visits
        at most `MAX_STREAMS_PER_PAGE` Datastreams; then the page may be short, and the
        position to resume from (after the last Datastream visited) is returned. The
        Datastreams of one page read at most `MAX_SCANNED_ROWS` rows together."""
        if not possible:
            return [], None
        start = tuple(after[:3]) if after else (0, 0, -1)
        streams = await self._run(
            _STREAMS_FROM, {"s": start[0], "m": start[1], "n": MAX_STREAMS_PER_PAGE * 3 + 3}
        )
        keys = [k for k in ((r["sensor_id"], r["metric_id"], r["res"]) for r in streams)
                if k >= start]  # fmt: skip
        rows: list[dict[str, Any]] = []
        budget = MAX_SCANNED_ROWS  # shared by the Datastreams of the page
        for visited, key in enumerate(keys):
            if visited == MAX_STREAMS_PER_PAGE:
                return rows, [*keys[visited - 1], END_OF_TIME]
            fixed = dict(zip(("sensor_id", "metric_id", "res"), key, strict=True))
            compiler = Compiler()
            where = [self._fixed_sql(compiler, fixed, "t")]
            if condition is not None:
                where.append(compiler.condition(condition, entity, "t"))
            after_time = after[3] if after is not None and key == start else None
            found, resume_time, read = await self._stream_page(
                key,
                " AND ".join(where) if condition is not None else None,
                compiler.params,
                condition,
                False,
                after_time,
                need - len(rows),
                budget,
            )
            rows += found
            budget -= read
            if resume_time is not None:
                return rows, [*key, resume_time]
            if budget <= 0 and len(rows) < need:  # the rows one page may read are read
                return rows, [*key, END_OF_TIME]
            if len(rows) >= need:
                break
        return rows, None

    def _check_bounded(self, entity: EntityType, fixed: dict[str, Any], options: Options) -> None:
        if entity.bounded_by is None or entity.bounded_by in fixed:
            return
        paths = referenced_paths(options.filter)
        unbounded = options.count or options.orderby or any(p not in TIME_ONLY for p in paths)
        if unbounded:
            raise StaError(
                400,
                f"{entity.set_name} of all Datastreams can only be listed in their default "
                "order and filtered by phenomenonTime or resultTime: this request would scan "
                "without bound. Name one Datastream (Datastreams(<id>)/Observations, or "
                "$filter=Datastream/@iot.id eq <id> and ...) to filter on result, order or "
                "count.",
            )

    def _order(
        self,
        compiler: Compiler,
        entity: EntityType,
        fixed: dict[str, Any],
        terms: list[OrderTerm],
    ) -> tuple[str, list[tuple[str, bool, type]] | None]:
        """ORDER BY text, and the keyset columns (column, descending, type) when the
        order is by plain columns only (else None: pages go by $skip)."""
        keyset: list[tuple[str, bool, type]] | None = []
        parts: list[str] = []
        used: set[str] = set()
        for term in terms:
            prop = None
            if isinstance(term.expression, Path):
                name = "/".join("id" if s == "@iot.id" else s for s in term.expression.segments)
                prop = entity.props.get(name)
            if prop is not None and prop.column is not None and keyset is not None:
                keyset.append((prop.column, term.descending, prop.python_type or int))
                used.add(prop.column)
                parts.append(f"t.{prop.column}{' DESC' if term.descending else ''}")
                continue
            keyset = None
            typed = compiler.order_value(term.expression, entity, "t")
            parts.append(f"{typed.sql}{' DESC' if term.descending else ''}")
        descending = terms[-1].descending if terms else False
        for column, kind in zip(entity.key, entity.key_types, strict=True):
            if column in used or column in fixed:
                continue
            parts.append(f"t.{column}{' DESC' if descending else ''}")
            if keyset is not None:
                keyset.append((column, descending, kind))
        if not parts:
            parts.append("1")
        return ", ".join(parts), keyset

    def _after_sql(
        self, compiler: Compiler, keyset: list[tuple[str, bool, type]], after: list[Any]
    ) -> str:
        casts = {int: "bigint", datetime: "timestamptz", str: "text"}
        bound = [compiler.bind(v, casts[k[2]]) for k, v in zip(keyset, after, strict=True)]
        if len({k[1] for k in keyset}) == 1:
            op = "<" if keyset[0][1] else ">"
            columns = ", ".join(f"t.{k[0]}" for k in keyset)
            return f"(({columns}) {op} ({', '.join(bound)}))"
        alternatives = []
        for i, (column, descending, _) in enumerate(keyset):
            equal = [f"t.{keyset[j][0]} = {bound[j]}" for j in range(i)]
            equal.append(f"t.{column} {'<' if descending else '>'} {bound[i]}")
            alternatives.append("(" + " AND ".join(equal) + ")")
        return "(" + " OR ".join(alternatives) + ")"

    def _fixed_sql(self, compiler: Compiler, fixed: dict[str, Any], alias: str) -> str:
        parts = ["true"]
        for column, value in fixed.items():
            if value is None:
                parts.append(f"{alias}.{column} IS NULL")
            else:
                cast = "timestamptz" if isinstance(value, datetime) else "bigint"
                parts.append(f"{alias}.{column} = {compiler.bind(value, cast)}")
        return " AND ".join(parts)

    async def _run(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)  # type: ignore[arg-type]
            return await cur.fetchall()

    # --- $expand ------------------------------------------------------------------------

    async def expand(
        self,
        bodies: list[dict[str, Any]],
        rows: list[dict[str, Any]],
        entity: EntityType,
        items: list[ExpandItem],
        depth: int,
    ) -> None:
        if not items or not rows:
            return
        if depth > MAX_EXPAND_DEPTH:
            raise ODataError(f"$expand: at most {MAX_EXPAND_DEPTH} levels")
        for item in items:
            name = item.path[0]
            if name not in entity.navs:
                raise ODataError(f"$expand: {entity.set_name} have no navigation {name!r}")
            options = parse_options(item.options, nested=True)
            if len(item.path) > 1:
                rest = ExpandItem(item.path[1:], {})
                options.expand = [*options.expand, rest]
            nav = entity.navs[name]
            child = ENTITIES[nav.target]
            keys = sorted({tuple(row[pc] for _, pc in nav.pairs) for row in rows})
            if child.bounded_by is not None and len(keys) > 1:
                # Each parent's Observations are one index range in time order; a filter on
                # anything else, or another order, reads each parent's whole history.
                ordered_by_time = all(
                    isinstance(t.expression, Path) and t.expression.segments == ("phenomenonTime",)
                    for t in options.orderby
                )
                if not ordered_by_time or not referenced_paths(options.filter) <= TIME_ONLY:
                    raise ODataError(
                        f"$expand: {name} of several {entity.set_name} can be filtered by "
                        "phenomenonTime/resultTime and ordered by phenomenonTime only; this "
                        "would read every reading of each. Ask one entity's Observations."
                    )
            top = min(options.top, MAX_TOP) if nav.many else 1
            if nav.many and top * len(keys) > MAX_EXPAND_ROWS:
                raise ODataError(
                    f"$expand: {name} could add {top * len(keys)} rows (at most "
                    f"{MAX_EXPAND_ROWS}); lower $top inside $expand or the outer $top"
                )
            columns = [tc for tc, _ in nav.pairs]
            # Parents grouped by resolution where the child has a source per resolution.
            groups: dict[Any, list[tuple[Any, ...]]] = {}
            res_index = columns.index("res") if child.sources_by_res and "res" in columns else None
            for key in keys:
                groups.setdefault(None if res_index is None else key[res_index], []).append(key)
            found: list[dict[str, Any]] = []
            for res, group in groups.items():
                found += await self._expand_query(child, columns, group, res, options, top)
            by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
            for row in found:
                key = tuple(row.pop(f"iot_parent_k{i}") for i in range(len(columns)))
                by_key.setdefault(key, []).append(row)
            child_rows: list[dict[str, Any]] = []
            child_bodies: list[dict[str, Any]] = []
            per_parent: list[tuple[dict[str, Any], list[dict[str, Any]], bool]] = []
            for body, row in zip(bodies, rows, strict=True):
                related = by_key.get(tuple(row[pc] for _, pc in nav.pairs), [])
                more = len(related) > top
                related = related[:top]
                rendered = [child.render(r, self.base) for r in related]
                child_rows += related
                child_bodies += rendered
                per_parent.append((body, rendered, more))
            await self.expand(child_bodies, child_rows, child, options.expand, depth + 1)
            for body, rendered, more in per_parent:
                selected = [_select(r, options.select, child) for r in rendered]
                if nav.many:
                    body[name] = selected
                    if more:
                        next_options = {**item.options, "$skip": str(options.skip + top)}
                        link = body[f"{name}@iot.navigationLink"]
                        body[f"{name}@iot.nextLink"] = f"{link}?{urlencode(next_options)}"
                else:
                    body[name] = selected[0] if selected else None

    async def _expand_query(
        self,
        child: EntityType,
        columns: list[str],
        keys: list[tuple[Any, ...]],
        res: Any,
        options: Options,
        top: int,
    ) -> list[dict[str, Any]]:
        """The first `top` + 1 related rows of each parent key, one LATERAL query."""
        compiler = Compiler()
        arrays = ", ".join(
            compiler.bind([k[i] for k in keys], "bigint[]") for i in range(len(columns))
        )
        keys_as = ", ".join(f"k{i}" for i in range(len(columns)))
        where = [" AND ".join(f"t.{tc} = p.k{i}" for i, tc in enumerate(columns))]
        if options.filter is not None:
            where.append(compiler.condition(options.filter, child, "t"))
        order, _ = self._order(compiler, child, dict.fromkeys(columns), options.orderby)
        select_keys = ", ".join(f"p.k{i} AS iot_parent_k{i}" for i in range(len(columns)))
        source = child.source if res is None else child.source_for({"res": res})
        by_time = all(
            isinstance(t.expression, Path) and t.expression.segments == ("phenomenonTime",)
            for t in options.orderby
        )
        if columns == ["sensor_id", "metric_id", "res"] and options.filter is None and by_time:
            # Each parent is one Datastream: its first rows in time order, by key.
            descending = bool(options.orderby) and options.orderby[-1].descending
            sql = (
                f"SELECT {select_keys}, c.* FROM unnest({arrays}) AS p({keys_as}) "  # noqa: S608
                "CROSS JOIN LATERAL iot_published_observations(p.k0, p.k1::smallint, "
                f"p.k2::smallint, NULL, NULL, {'true' if descending else 'false'}, "
                f"{top + 1 + options.skip}) AS c"
            )
            found = await self._run(sql, compiler.params)
            if options.skip:
                by_parent: dict[tuple[Any, ...], int] = {}
                kept = []
                for row in found:
                    parent = (row["iot_parent_k0"], row["iot_parent_k1"], row["iot_parent_k2"])
                    by_parent[parent] = by_parent.get(parent, 0) + 1
                    if by_parent[parent] > options.skip:
                        kept.append(row)
                found = kept
            return found
        sql = (
            f"SELECT {select_keys}, c.* FROM unnest({arrays}) AS p({keys_as}) "  # noqa: S608
            f"CROSS JOIN LATERAL (SELECT t.* FROM ({source}) AS t "
            f"WHERE {' AND '.join(where)} ORDER BY {order} "
            f"LIMIT {top + 1} OFFSET {options.skip}) AS c"
        )
        return await self._run(sql, compiler.params)

    # --- dataArray ----------------------------------------------------------------------

    def _data_array(
        self, entity: EntityType, rows: list[dict[str, Any]], select: list[str] | None
    ) -> list[dict[str, Any]]:
        if entity.set_name != "Observations":
            raise ODataError("$resultFormat=dataArray applies to Observations only")
        components = select or ["id", "phenomenonTime", "result"]
        unknown = [c for c in components if c not in DATA_ARRAY_COMPONENTS]
        if unknown:
            raise ODataError(
                f"$select: {unknown[0]!r} cannot be a dataArray component; choose from "
                f"{', '.join(DATA_ARRAY_COMPONENTS)}"
            )
        groups: dict[int, list[list[Any]]] = {}
        for row in rows:
            stream = row["sensor_id"] * 100_000 + row["metric_id"] * 10 + row["res"]
            groups.setdefault(stream, []).append(_components(row, components, self.base))
        return [
            {
                "Datastream@iot.navigationLink": f"{self.base}/Datastreams({stream})",
                "components": components,
                "dataArray@iot.count": len(values),
                "dataArray": values,
            }
            for stream, values in groups.items()
        ]


def _one_datastream(entity: EntityType, fixed: dict[str, Any]) -> tuple[int, int, int] | None:
    """(sensor, metric, resolution) when the rows asked for are one Datastream's
    Observations, read through ``iot_published_observations``."""
    if not entity.sources_by_res:
        return None
    key = tuple(fixed.get(c) for c in ("sensor_id", "metric_id", "res"))
    if any(not isinstance(v, int) for v in key) or key[2] not in entity.sources_by_res:
        return None
    if not 0 <= key[1] < 2**15:  # metric ids are smallints: no such Datastream
        return None
    return key  # type: ignore[return-value]


def _stream_params(
    stream: tuple[int, int, int], after: datetime | None, before: datetime | None, descending: bool
) -> dict[str, Any]:
    sensor, metric, res = stream
    return {
        "ds_sensor": sensor,
        "ds_metric": metric,
        "ds_res": res,
        "ds_after": after,
        "ds_before": before,
        "ds_descending": descending,
    }


_BOUND_OPS = {"gt", "ge", "lt", "le", "eq"}
_MIRRORED = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge", "eq": "eq"}


def time_bounds(node: Node | None) -> tuple[datetime | None, datetime | None]:
    """Exclusive (after, before) bounds on ``phenomenonTime`` implied by the top-level
    ``and`` terms of a filter that compare it with a literal time, so that they bound the
    index range read; the filter itself still applies to the rows read."""
    after: datetime | None = None
    before: datetime | None = None
    for term in conjuncts(node):
        if not (isinstance(term, Binary) and term.op in _BOUND_OPS):
            continue
        op, path, literal = term.op, term.left, term.right
        if isinstance(path, Literal):
            op, path, literal = _MIRRORED[op], literal, path
        if not (
            isinstance(path, Path)
            and path.segments == ("phenomenonTime",)
            and isinstance(literal, Literal)
            and literal.kind == "datetime"
        ):
            continue
        value: datetime = literal.value
        try:
            low = {"gt": value, "ge": value - MICROSECOND, "eq": value - MICROSECOND}.get(op)
            high = {"lt": value, "le": value + MICROSECOND, "eq": value + MICROSECOND}.get(op)
        except OverflowError:
            continue
        if low is not None:
            after = low if after is None else max(after, low)
        if high is not None:
            before = high if before is None else min(before, high)
    return after, before


def _too_many(stream: tuple[int, int, int], what: str) -> StaError:
    sensor, metric, res = stream
    return StaError(
        400,
        f"the Observations of Datastreams({sensor * 100_000 + metric * 10 + res}) cannot be "
        f"{what} here: the request would read more than {MAX_SCANNED_ROWS:,} of them, a scan "
        "without bound as the Datastream grows. Narrow it with a time range "
        "($filter=phenomenonTime ge <start> and phenomenonTime lt <end>), or page in "
        "phenomenonTime order (the default), which reads by key.",
    )


DATA_ARRAY_COMPONENTS = ("id", "phenomenonTime", "resultTime", "result", "parameters")


def _components(row: dict[str, Any], components: list[str], base: str) -> list[Any]:
    phenomenon, result_time = observation_times(row)
    out: list[Any] = []
    for name in components:
        if name == "id":
            out.append(ENTITIES["Observations"].entity_id(row))
        elif name == "phenomenonTime":
            out.append(phenomenon)
        elif name == "resultTime":
            out.append(result_time)
        elif name == "result":
            out.append(row["result"])
        else:
            out.append(
                None
                if row["res"] == 0
                else {"min": row["min"], "max": row["max"], "count": row["count"]}
            )
    return out


def _select(body: dict[str, Any], select: list[str] | None, entity: EntityType) -> dict[str, Any]:
    if select is None:
        return body
    allowed = _RENDERED_PROPERTIES[entity.set_name] | set(entity.navs) | {"id"}
    unknown = [name for name in select if name not in allowed]
    if unknown:
        raise ODataError(
            f"$select: {entity.set_name} have no property {unknown[0]!r}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    out: dict[str, Any] = {}
    for name in select:
        if name == "id":
            out["@iot.id"] = body["@iot.id"]
        elif name in entity.navs:
            out[f"{name}@iot.navigationLink"] = body[f"{name}@iot.navigationLink"]
            if name in body:
                out[name] = body[name]
        elif name in body:
            out[name] = body[name]
    # Expanded entities stay, whether or not $select names them.
    for name in entity.navs:
        if name in body and name not in out:
            out[name] = body[name]
            for suffix in ("@iot.nextLink",):
                if name + suffix in body:
                    out[name + suffix] = body[name + suffix]
    return out


class _ValueText(str):
    """The raw value of a property (``/$value``)."""


_RENDERED_PROPERTIES: dict[str, set[str]] = {
    "Things": {"name", "description", "properties"},
    "Locations": {"name", "description", "encodingType", "location"},
    "HistoricalLocations": {"time"},
    "Sensors": {"name", "description", "encodingType", "metadata", "properties"},
    "ObservedProperties": {"name", "definition", "description", "properties"},
    "Datastreams": {"name", "description", "observationType", "unitOfMeasurement",
                    "properties"},
    "Observations": {"phenomenonTime", "resultTime", "result", "parameters"},
    "FeaturesOfInterest": {"name", "description", "encodingType", "feature"},
}  # fmt: skip


def _quote(value: Any) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


def value_text(value: Any) -> str | None:
    """The text of a ``/$value`` answer, or None when the answer is JSON."""
    return value if isinstance(value, _ValueText) else None
