"""Pre-generated open-data files: a municipality's public readings per sensor kind, one
file per UTC day and per UTC month, as gzip-compressed CSV and as Parquet.

Harvesters download these instead of running long exports. A file covers a closed period
and is written once it has ended (again when late readings change it): it is written to a
temporary name and renamed, with a ``.sha256`` file beside it whose digest is the file's
ETag. The bytes depend only on the data (gzip without a time stamp, rows in key order),
so regenerating an unchanged period keeps its ETag. Only public, active sensors count
(`PUBLIC_SENSOR`), as everywhere in the open data.

Layout: ``<dir>/<slug>/<kind>/<slug>-<kind>-<YYYY-MM-DD|YYYY-MM>.<csv.gz|parquet>``.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from api.queries.public import PUBLIC_SENSOR

FORMATS = ("csv.gz", "parquet")
FILE_NAME = re.compile(
    r"^(?P<slug>[a-z0-9][a-z0-9-]*)-(?P<kind>climate|bin|parking|other)-"
    r"(?P<period>\d{4}-\d{2}(?:-\d{2})?)\.(?P<format>csv\.gz|parquet)$"
)
CSV_HEADER = "time,sensor_id,sensor_name,kind,metric,unit,value,lat,lon\n"
SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("sensor_id", pa.int64(), nullable=False),
        pa.field("sensor_name", pa.string()),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
    ]
)
# A name a spreadsheet would run as a formula gets a leading apostrophe (as the exports).
_CSV_SAFE_NAME = r"CASE WHEN s.name ~ '^[=+@\t\r-]' THEN '''' || s.name ELSE s.name END"
_ROWS = f"""
SELECT r.time, s.id, {{name}}, s.kind, m.name, m.unit, r.value, s.lat, s.lon
FROM readings r JOIN sensors s ON s.id = r.sensor_id JOIN metrics m ON m.id = r.metric_id
WHERE s.municipality_id = %(m)s AND s.kind = %(kind)s AND {PUBLIC_SENSOR}
  AND r.time >= %(start)s AND r.time < %(end)s
ORDER BY s.id, m.name, r.time
"""  # noqa: S608 (module constants)


_GROUPS = f"""
SELECT DISTINCT m.id, m.slug, s.kind FROM sensors s
JOIN municipalities m ON m.id = s.municipality_id WHERE {PUBLIC_SENSOR} ORDER BY 2, 3
"""  # noqa: S608 (module constants)


@dataclass(frozen=True)
class OpenFile:
    slug: str
    kind: str
    period: str  # YYYY-MM-DD or YYYY-MM
    format: str  # csv.gz or parquet
    path: Path
    bytes: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def monthly(self) -> bool:
        return len(self.period) == 7


def periods(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def month_span(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def generate(
    conn: psycopg.Connection, directory: Path, days: list[date], months: list[tuple[int, int]]
) -> list[OpenFile]:
    """Write the files of `days` and `months` for every municipality and kind with public
    sensors; periods without readings get no file. Returns the files written."""
    conn.execute("SET TimeZone = 'UTC'")
    groups = conn.execute(_GROUPS).fetchall()
    spans = [(d.isoformat(), *periods(d)) for d in days] + [
        (f"{y:04d}-{m:02d}", *month_span(y, m)) for y, m in months
    ]
    written = []
    for municipality_id, slug, kind in groups:
        for label, start, end in spans:
            params = {"m": municipality_id, "kind": kind, "start": start, "end": end}
            target = directory / slug / kind
            stem = f"{slug}-{kind}-{label}"
            csv_file = _write_csv(conn, params, target, stem)
            if csv_file is None:
                continue
            written.append(_info(slug, kind, label, "csv.gz", csv_file))
            written.append(
                _info(slug, kind, label, "parquet", _write_parquet(conn, params, target, stem))
            )
    return written


def _write_csv(conn: psycopg.Connection, params: dict, target: Path, stem: str) -> Path | None:
    query = _ROWS.format(name=_CSV_SAFE_NAME)
    path = target / f"{stem}.csv.gz"
    tmp = path.with_name(path.name + ".tmp")
    rows = 0
    target.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(CSV_HEADER.encode())
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)", params) as copy,
        ):
            for chunk in copy:
                out.write(chunk)
                rows += 1
    if rows == 0:
        tmp.unlink()
        return None
    return _publish(tmp, path)


def _write_parquet(conn: psycopg.Connection, params: dict, target: Path, stem: str) -> Path:
    path = target / f"{stem}.parquet"
    tmp = path.with_name(path.name + ".tmp")
    writer = pq.ParquetWriter(tmp, SCHEMA, compression="zstd")
    with conn.transaction(), conn.cursor(name="open_file_rows") as cur:
        cur.execute(_ROWS.format(name="s.name"), params)
        while batch := cur.fetchmany(50_000):
            columns = list(zip(*batch, strict=True))
            writer.write_table(pa.table(columns, schema=SCHEMA))
    writer.close()
    return _publish(tmp, path)


def _publish(tmp: Path, path: Path) -> Path:
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    sidecar = path.with_name(path.name + ".sha256")
    if path.exists() and sidecar.exists() and sidecar.read_text().strip() == digest:
        tmp.unlink()  # unchanged: keep the file (and its ETag)
        return path
    tmp.replace(path)
    sidecar.write_text(digest + "\n")
    return path


def _info(slug: str, kind: str, period: str, fmt: str, path: Path) -> OpenFile:
    digest = path.with_name(path.name + ".sha256").read_text().strip()
    return OpenFile(slug, kind, period, fmt, path, path.stat().st_size, digest)


def list_files(directory: Path, slug: str | None = None) -> list[OpenFile]:
    """The files present, newest period first, optionally of one municipality."""
    found = []
    if not directory.is_dir():
        return found
    for path in directory.glob(f"{slug or '*'}/*/*"):
        match = FILE_NAME.match(path.name)
        sidecar = path.with_name(path.name + ".sha256")
        if not match or not sidecar.exists() or path.parent.name != match["kind"]:
            continue
        if path.parent.parent.name != match["slug"]:
            continue
        found.append(
            OpenFile(
                match["slug"], match["kind"], match["period"], match["format"], path,
                path.stat().st_size, sidecar.read_text().strip(),
            )
        )  # fmt: skip
    return sorted(found, key=lambda f: (f.slug, f.kind, f.period, f.format), reverse=True)


def find_file(directory: Path, slug: str, kind: str, name: str) -> OpenFile | None:
    """The file `name` of (slug, kind), or None; names are checked against FILE_NAME, so a
    request cannot reach outside `directory`."""
    match = FILE_NAME.match(name)
    if not match or match["slug"] != slug or match["kind"] != kind:
        return None
    path = directory / slug / kind / name
    sidecar = path.with_name(name + ".sha256")
    if not path.is_file() or not sidecar.is_file():
        return None
    return OpenFile(
        slug, kind, match["period"], match["format"], path, path.stat().st_size,
        sidecar.read_text().strip(),
    )  # fmt: skip
