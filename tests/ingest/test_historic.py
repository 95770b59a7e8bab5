"""Historic imports of the real vendor files in ../shared/datasets: Windesheim's CO2
meters (wide CSV, times with offsets, humidity as a fraction) and Birmingham's car parks
(naive local times, negative counts, repeated timestamps); dry run, idempotent re-runs,
XLSX."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from openpyxl import Workbook
from psycopg import sql

from ingest.historic import HistoricMapping, MappingError, import_history

pytestmark = pytest.mark.storage

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
WINDESHEIM = DATASETS / "windesheim_b4b_office_co2" / "917810_raw_properties.csv"
BIRMINGHAM = DATASETS / "birmingham_parking_uci" / "dataset.csv"

WINDESHEIM_MAPPING = HistoricMapping(
    time="timestamp",
    sensor=["id", "source"],
    filters={"source": ["CO2-meter-SCD4x"]},
    metrics={
        "co2__ppm": "co2_ppm",
        "temp_in__degC": "temperature_c",
        "rel_humidity__0": "humidity_pct",
    },
    units={"rel_humidity__0": "fraction", "temp_in__degC": "degC"},
)
BIRMINGHAM_MAPPING = HistoricMapping(
    time="LastUpdated",
    timezone="Europe/London",
    sensor=["SystemCodeNumber"],
    metrics={"Occupancy": "occupied_spaces"},
    create_sensors="parking",
)


def _partitions(db: psycopg.Connection) -> set[str]:
    return {
        r[0]
        for r in db.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_p[0-9]{8}$'"
        )
    }


@pytest.fixture(autouse=True)
def _drop_partitions_made_here(db: psycopg.Connection) -> Iterator[None]:
    """The files are from 2016 and 2022: their daily partitions (plain PostgreSQL; chunks
    go with TRUNCATE on TimescaleDB) would
    stay in the session database for the tests after these, which expect to find no old
    days there (retention in tests/test_db_roles.py)."""
    before = _partitions(db)
    yield
    for name in sorted(_partitions(db) - before):
        db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


@pytest.fixture
def municipality(db: psycopg.Connection) -> int:
    return db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('zwolle', 'Zwolle') RETURNING id"
    ).fetchone()[0]


def _readings(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM readings").fetchone()[0]


def _windesheim_cells() -> int:
    """Non-empty CO2/temperature/humidity cells of the SCD41 rows, counted independently."""
    with WINDESHEIM.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] == "CO2-meter-SCD4x"]
    return sum(1 for r in rows for c in ("co2__ppm", "temp_in__degC", "rel_humidity__0") if r[c])


def test_windesheim_dry_run_then_import_then_rerun(
    db: psycopg.Connection, municipality: int
) -> None:
    db.execute(
        "INSERT INTO sensors (municipality_id, external_id, kind) "
        "VALUES (%s, '917810-CO2-meter-SCD4x', 'climate')",
        (municipality,),
    )
    data = WINDESHEIM.read_bytes()
    dry = import_history(db, municipality, data, WINDESHEIM.name, WINDESHEIM_MAPPING, True)
    assert _readings(db) == 0
    assert dry.readings == _windesheim_cells() > 6000
    assert dry.stored == dry.readings and dry.already_stored == 0
    assert dry.refused == {}

    done = import_history(db, municipality, data, WINDESHEIM.name, WINDESHEIM_MAPPING, False)
    assert done.as_dict() | {"dry_run": True} == dry.as_dict()
    assert _readings(db) == done.stored
    # 2022-10-18T13:21:00+0200: 557 ppm, 20.0 °C, RH 0.674 → stored at 11:21 UTC, 67.4 %
    stored = dict(
        db.execute(
            "SELECT m.name, r.value FROM readings r JOIN metrics m ON m.id = r.metric_id "
            "WHERE r.time = %s",
            (datetime(2022, 10, 18, 11, 21, tzinfo=UTC),),
        ).fetchall()
    )
    assert stored == pytest.approx({"co2_ppm": 557.0, "temperature_c": 20.0, "humidity_pct": 67.4})
    assert db.execute("SELECT count(*) FROM latest_readings").fetchone()[0] == 3

    again = import_history(db, municipality, data, WINDESHEIM.name, WINDESHEIM_MAPPING, False)
    assert again.stored == 0 and again.already_stored == done.stored
    assert _readings(db) == done.stored


def _birmingham_expectations() -> tuple[int, int, int, int]:
    """(rows, negative counts, repeated (park, time) among the rest, car parks)."""
    with BIRMINGHAM.open(newline="") as f:
        rows = list(csv.DictReader(f))
    negative = sum(1 for r in rows if int(r["Occupancy"]) < 0)
    keys = Counter(
        (r["SystemCodeNumber"], r["LastUpdated"]) for r in rows if int(r["Occupancy"]) >= 0
    )
    repeated = sum(n - 1 for n in keys.values())
    return len(rows), negative, repeated, len({r["SystemCodeNumber"] for r in rows})


def test_birmingham_refuses_negative_counts_and_repeats_and_converts_local_time(
    db: psycopg.Connection, municipality: int
) -> None:
    rows, negative, repeated, parks = _birmingham_expectations()
    data = BIRMINGHAM.read_bytes()
    dry = import_history(db, municipality, data, BIRMINGHAM.name, BIRMINGHAM_MAPPING, True)
    assert db.execute("SELECT count(*) FROM sensors").fetchone()[0] == 0  # nothing created
    assert len(dry.created_sensors) == parks == 30
    assert dry.rows_read == rows
    assert dry.refused["occupied_spaces outside its plausible range"].count == negative == 12
    assert dry.refused["same sensor, metric and time earlier in the file"].count == repeated
    assert dry.readings == rows - negative - repeated

    done = import_history(db, municipality, data, BIRMINGHAM.name, BIRMINGHAM_MAPPING, False)
    assert done.stored == dry.readings == _readings(db)
    # BHMBCCMKT01,577,61,2016-10-04 07:59:42 (British Summer Time) → 06:59:42 UTC
    value = db.execute(
        "SELECT r.value FROM readings r JOIN sensors s ON s.id = r.sensor_id "
        "WHERE s.external_id = 'BHMBCCMKT01' AND r.time = %s",
        (datetime(2016, 10, 4, 6, 59, 42, tzinfo=UTC),),
    ).fetchone()
    assert value == (61.0,)
    again = import_history(db, municipality, data, BIRMINGHAM.name, BIRMINGHAM_MAPPING, False)
    assert (again.stored, again.already_stored) == (0, done.stored)
    assert again.created_sensors == []


def test_xlsx_gives_what_the_csv_gives(db: psycopg.Connection, municipality: int) -> None:
    with BIRMINGHAM.open(newline="") as f:
        rows = list(csv.reader(f))[:501]
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(rows[0])
    for park, capacity, occupancy, updated in rows[1:]:
        # as a spreadsheet holds them: numbers, and times as (naive) date-time cells
        sheet.append([park, int(capacity), int(occupancy), datetime.fromisoformat(updated)])
    buffer = io.BytesIO()
    workbook.save(buffer)
    text = "\n".join(",".join(r) for r in rows).encode()
    from_csv = import_history(db, municipality, text, "b.csv", BIRMINGHAM_MAPPING, True)
    from_xlsx = import_history(
        db, municipality, buffer.getvalue(), "b.xlsx", BIRMINGHAM_MAPPING, True
    )
    assert from_xlsx.as_dict() == from_csv.as_dict()
    assert from_csv.rows_read == 500 and from_csv.readings > 490


def test_unknown_sensors_are_refused_not_created(db: psycopg.Connection, municipality: int) -> None:
    mapping = BIRMINGHAM_MAPPING.model_copy(update={"create_sensors": None})
    report = import_history(db, municipality, BIRMINGHAM.read_bytes(), "b.csv", mapping, False)
    assert report.stored == 0 and _readings(db) == 0
    assert len(report.unknown_sensors) == 30
    assert report.refused["sensor not registered in the municipality"].count > 35_000


def test_a_mapping_that_does_not_fit_is_refused_up_front(
    db: psycopg.Connection, municipality: int
) -> None:
    mapping = BIRMINGHAM_MAPPING.model_copy(update={"time": "Timestamp"})
    with pytest.raises(MappingError, match=r"\['Timestamp'\] are not in the file"):
        import_history(db, municipality, BIRMINGHAM.read_bytes(), "b.csv", mapping, True)
    with pytest.raises(ValueError, match="cannot convert 'bar'"):
        HistoricMapping(time="t", sensor="s", metrics={"c": "co2_ppm"}, units={"c": "bar"})
    with pytest.raises(ValueError, match="unknown time zone"):
        HistoricMapping(time="t", sensor="s", metrics={"c": "co2_ppm"}, timezone="CET+1")


def test_cli_dry_run_and_import(
    db: psycopg.Connection,
    municipality: int,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cli.__main__ import main
    from models.settings import get_settings

    mapping = tmp_path / "mapping.json"
    mapping.write_text(BIRMINGHAM_MAPPING.model_dump_json())
    monkeypatch.setenv("IOT_DATABASE_URL", database_url)
    get_settings.cache_clear()
    command = ["import-history", "--municipality", "zwolle", "--mapping", str(mapping)]
    try:
        assert main([*command, "--dry-run", str(BIRMINGHAM)]) == 0
        assert _readings(db) == 0
        assert main([*command, str(BIRMINGHAM)]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert '"dry_run": true' in out and '"dry_run": false' in out
    assert _readings(db) > 35_000
