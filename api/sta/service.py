"""Answer a SensorThings request: resolve the resource path, run the bounded queries, and
build the JSON (entities, collections with ``@iot.nextLink``, ``$expand``, ``dataArray``).

Collections page by key: ``@iot.nextLink`` carries a ``$skiptoken`` holding the last
row's position (api/pagination.py), so a page reads from where the previous one ended,
whenever the order is by key columns (the default) or by ``phenomenonTime``. Other
orders page with ``$skip``, up to `MAX_SKIP`. Observations must be limited to one
sensor (a Datastream or FeatureOfInterest path, or ``$filter=Datastream/@iot.id eq N``)
before they are filtered on anything but their times, ordered or counted.
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
from api.sta.compile import Compiler, fixed_columns, referenced_paths
from api.sta.entities import ENTITIES, EntityType, iso, observation_times
from api.sta.odata import (
    ExpandItem,
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
# A Datastream's Observations in time order are read in windows of this span (a month of
# daily partitions): the planner then opens those partitions only, not a year's.
WINDOW = timedelta(days=31)
WINDOW_EPSILON = timedelta(microseconds=1)
MAX_WINDOW = timedelta(days=366)
# Observations of all Datastreams: at most this many Datastreams are read for one page.
MAX_STREAMS_PER_PAGE = 50
END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)
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
# Where a Datastream's rows lie: from its first daily rollup (plain PostgreSQL, where
# readings_daily is a table; readings older than it appear once the maintenance job has
# rolled them up) or the oldest chunk of the hypertable (TimescaleDB, where the rollups are
# real-time continuous aggregates too costly to plan per request), to its newest value.
_FIRST_DAY = """
SELECT min(d.bucket) AS first FROM published_readings_daily d
WHERE d.sensor_id = %(s)s::bigint AND d.metric_id = %(m)s::bigint
"""
_LAST = """
SELECT l.time AS last FROM latest_readings l
WHERE l.sensor_id = %(s)s::bigint AND l.metric_id = %(m)s::bigint
"""
_ROLLUP_IS_TABLE = (
    "SELECT relkind = 'r' AS is_table FROM pg_class WHERE oid = 'readings_daily'::regclass"
)
_OLDEST_CHUNK = """
SELECT min(range_start) AS first FROM timescaledb_information.chunks
WHERE hypertable_schema = 'public' AND hypertable_name = 'readings'
"""
_ROLLUP_IS_TABLE_BY_DATABASE: dict[str, bool] = {}


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
        window = None
        resume: list[Any] | None = None
        if keyset is not None and options.skip == 0 and possible:
            window = await self._time_window(entity, fixed, keyset, after)
        if entity.bounded_by is not None and entity.bounded_by not in fixed:
            # Observations of every Datastream: Datastream after Datastream, in key order.
            rows, resume = await self._walk_streams(
                entity, options.filter, after, top + 1 + options.skip, possible
            )
            rows = rows[options.skip :]
        elif window is None:
            sql = (
                f"SELECT t.* FROM ({source}) AS t WHERE {' AND '.join(where)} "  # noqa: S608
                f"ORDER BY {order} LIMIT {top + 1} OFFSET {options.skip}"
            )
            rows = await self._run(sql, compiler.params)
        else:
            rows = await self._windowed(source, where, order, top + 1, compiler, *window)
        more = len(rows) > top
        rows = rows[:top]
        body: dict[str, Any] = {}
        if options.count:
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

    async def _time_window(
        self,
        entity: EntityType,
        fixed: dict[str, Any],
        keyset: list[tuple[str, bool, type]],
        after: list[Any] | None,
    ) -> tuple[datetime, datetime, bool] | None:
        """[first, last] time of one Datastream's rows and the order's direction, when
        the page is of one Datastream in time order (so it can be read window by window,
        each a query the planner prunes to a few partitions), else None."""
        if entity.sources_by_res == {} or not {"sensor_id", "metric_id", "res"} <= set(fixed):
            return None
        if [k[0] for k in keyset] != ["time"]:
            return None
        key = {"s": fixed["sensor_id"], "m": fixed["metric_id"]}
        last = (await self._run(_LAST, key) or [{"last": None}])[0]["last"]
        rollup_is_table, oldest_chunk = await self._storage_facts()
        first = oldest_chunk
        if rollup_is_table:
            first = (await self._run(_FIRST_DAY, key))[0]["first"]
        if first is None or last is None:
            return None  # not in the daily rollup yet: read it in one query
        # A day past the newest value: it may lag readings just stored by a few seconds.
        end = last + timedelta(days=1)
        descending = keyset[0][1]
        if after is not None:  # continue from the page token's time
            if descending:
                end = min(end, after[0] + WINDOW_EPSILON)
            else:
                first = max(first, after[0])
        return first, end, descending

    async def _storage_facts(self) -> tuple[bool, datetime | None]:
        """Whether readings_daily is a table (plain PostgreSQL; asked once per database),
        and else the oldest TimescaleDB chunk's start (asked every time: a backfill of
        older readings adds an older chunk)."""
        database = f"{self.conn.info.host}:{self.conn.info.port}/{self.conn.info.dbname}"
        is_table = _ROLLUP_IS_TABLE_BY_DATABASE.get(database)
        if is_table is None:
            is_table = (await self._run(_ROLLUP_IS_TABLE, {}))[0]["is_table"]
            _ROLLUP_IS_TABLE_BY_DATABASE[database] = is_table
        if is_table:
            return True, None
        return False, (await self._run(_OLDEST_CHUNK, {}))[0]["first"]

    async def _windowed(
        self,
        source: str,
        where: list[str],
        order: str,
        limit: int,
        compiler: Compiler,
        first: datetime,
        end: datetime,
        descending: bool,
    ) -> list[dict[str, Any]]:
        """Rows in time order, read in windows of `WINDOW` from one end of [first, end)
        until `limit` rows are found: each query touches a window's partitions only."""
        rows: list[dict[str, Any]] = []
        lower, upper = first, end
        span = WINDOW
        while len(rows) < limit and lower < upper:
            if descending:
                low, high = max(lower, upper - span), upper
            else:
                low, high = lower, min(upper, lower + span)
            params = {**compiler.params, "w_low": low, "w_high": high}
            sql = (
                f"SELECT t.* FROM ({source}) AS t WHERE {' AND '.join(where)} "  # noqa: S608
                "AND t.time >= %(w_low)s::timestamptz AND t.time < %(w_high)s::timestamptz "
                f"ORDER BY {order} LIMIT {limit - len(rows)}"
            )
            found = await self._run(sql, params)
            rows += found
            # An empty window: the Datastream may start (or pause) much later; widen.
            span = WINDOW if found else min(span * 2, MAX_WINDOW)
            if descending:
                upper = low
            else:
                lower = high
        return rows

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
        position to resume from (after the last Datastream visited) is returned."""
        if not possible:
            return [], None
        start = tuple(after[:3]) if after else (0, 0, -1)
        streams = await self._run(
            _STREAMS_FROM, {"s": start[0], "m": start[1], "n": MAX_STREAMS_PER_PAGE * 3 + 3}
        )
        keys = [k for k in ((r["sensor_id"], r["metric_id"], r["res"]) for r in streams)
                if k >= start]  # fmt: skip
        rows: list[dict[str, Any]] = []
        for visited, key in enumerate(keys):
            if visited == MAX_STREAMS_PER_PAGE:
                return rows, [*keys[visited - 1], END_OF_TIME]
            fixed = dict(zip(("sensor_id", "metric_id", "res"), key, strict=True))
            compiler = Compiler()
            where = [self._fixed_sql(compiler, fixed, "t")]
            if condition is not None:
                where.append(compiler.condition(condition, entity, "t"))
            from_time = None
            if after is not None and key == start:
                where.append(f"t.time > {compiler.bind(after[3], 'timestamptz')}")
                from_time = [after[3]]
            source = entity.source_for(fixed)
            keyset = [("time", False, datetime)]
            window = await self._time_window(entity, fixed, keyset, from_time)
            if window is None:
                sql = (
                    f"SELECT t.* FROM ({source}) AS t WHERE {' AND '.join(where)} "  # noqa: S608
                    f"ORDER BY t.time LIMIT {need - len(rows)}"
                )
                rows += await self._run(sql, compiler.params)
            else:
                rows += await self._windowed(
                    source, where, "t.time", need - len(rows), compiler, *window
                )
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
