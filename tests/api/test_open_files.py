"""Pre-generated daily and monthly files of the public data: only public sensors, served
with ETag, If-None-Match and byte ranges, listed as distributions in the catalogue (which
still passes the DCAT-AP shapes)."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from rdflib import Graph, URIRef
from rdflib.namespace import DCAT

from api.app import create_app
from api.open_files import generate
from models.settings import Settings
from tests.api.conftest import HIDDEN_IDS, PUBLIC_IDS, Fleet
from tests.api.test_catalog_shacl import _shapes, _violations

pytestmark = pytest.mark.storage

BASE = "http://127.0.0.1:8000/api/v1"


@pytest.fixture
def files_dir(db: psycopg.Connection, fleet: Fleet, tmp_path: Path) -> Path:
    generate(db, tmp_path, [date(2026, 3, 1), date(2026, 3, 2)], [(2026, 3), (2026, 2)])
    return tmp_path


@pytest.fixture
def files_client(settings: Settings, files_dir: Path) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"open_data_files_dir": str(files_dir)}))
    with TestClient(app) as client:
        yield client


def test_files_hold_only_public_sensors(files_dir: Path, fleet: Fleet) -> None:
    names = sorted(p.relative_to(files_dir).as_posix() for p in files_dir.rglob("*.parquet"))
    # no file for February (no readings), none for odense's retired parking sensor
    assert names == sorted(
        f"{slug}/{kind}/{slug}-{kind}-{period}.parquet"
        for slug, kind in (("aarhus", "bin"), ("aarhus", "climate"), ("odense", "climate"))
        for period in ("2026-03", "2026-03-01", "2026-03-02")
    )
    month = pq.read_table(files_dir / "aarhus/climate/aarhus-climate-2026-03.parquet")
    assert set(month.column("sensor_id").to_pylist()) == {1}
    assert month.num_rows == 2 * fleet.readings_per_sensor  # CO2 and temperature, 3 days
    day = gzip.decompress(
        (files_dir / "aarhus/climate/aarhus-climate-2026-03-01.csv.gz").read_bytes()
    )
    lines = day.decode().splitlines()
    assert lines[0] == "time,sensor_id,sensor_name,kind,metric,unit,value,lat,lon"
    assert len(lines) - 1 == 2 * fleet.readings_per_sensor // 3
    assert {int(line.split(",")[1]) for line in lines[1:]} == {1}
    everything = b"".join(p.read_bytes() for p in files_dir.rglob("*.csv.gz"))
    for hidden in HIDDEN_IDS:
        assert f",{hidden},".encode() not in gzip.decompress(everything)
    assert set(PUBLIC_IDS) >= {1, 3, 5}


def test_regenerating_keeps_the_bytes_and_the_etag(db: psycopg.Connection, files_dir: Path) -> None:
    before = {p: p.read_bytes() for p in files_dir.rglob("*") if p.is_file()}
    generate(db, files_dir, [date(2026, 3, 1), date(2026, 3, 2)], [(2026, 3)])
    assert {p: p.read_bytes() for p in files_dir.rglob("*") if p.is_file()} == before


def test_served_with_etag_if_none_match_and_ranges(
    files_client: TestClient, files_dir: Path
) -> None:
    listed = files_client.get("/api/v1/files/aarhus").json()
    assert {f["period"] for f in listed} == {"2026-03", "2026-03-01", "2026-03-02"}
    url = f"{BASE}/files/aarhus/climate/aarhus-climate-2026-03.parquet"
    assert url in {f["url"] for f in listed}
    path = url.removeprefix("http://127.0.0.1:8000")
    whole = files_client.get(path)
    assert whole.status_code == 200
    assert (
        whole.content == (files_dir / "aarhus/climate/aarhus-climate-2026-03.parquet").read_bytes()
    )
    etag = whole.headers["etag"]
    assert etag == f'"{next(f["sha256"] for f in listed if f["url"] == url)}"'
    assert pq.read_table(io.BytesIO(whole.content)).num_rows > 0

    cached = files_client.get(path, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    part = files_client.get(path, headers={"Range": "bytes=100-1123"})
    assert part.status_code == 206
    assert part.content == whole.content[100:1124]
    assert part.headers["content-range"] == f"bytes 100-1123/{len(whole.content)}"
    assert files_client.get(path, headers={"Range": "bytes=999999999-"}).status_code == 416
    # names outside the pattern, or of another kind's folder, are simply not there
    for bad in ("..%2F..%2Fetc%2Fpasswd", "aarhus-bin-2026-03.parquet", "x.parquet"):
        assert files_client.get(f"/api/v1/files/aarhus/climate/{bad}").status_code == 404


def test_catalogue_lists_the_files_and_still_passes_the_shapes(
    files_client: TestClient,
) -> None:
    graph = Graph().parse(data=files_client.get("/api/v1/catalog.ttl").text, format="turtle")
    dataset = URIRef(f"{BASE}/catalog/datasets/aarhus-climate")
    downloads = {
        str(graph.value(d, DCAT.downloadURL)) for d in graph.objects(dataset, DCAT.distribution)
    }
    assert f"{BASE}/files/aarhus/climate/aarhus-climate-2026-03.csv.gz" in downloads
    assert f"{BASE}/files/aarhus/climate/aarhus-climate-2026-03-02.parquet" in downloads
    for shapes in ("dcat-ap-3.0.1-shapes.ttl", "dcat-ap-3.0.1-range.ttl",
                   "dcat-ap-3.0.1-mdr-vocabularies.shape.ttl"):  # fmt: skip
        assert _violations(graph, _shapes(shapes)) == []
