"""Export a municipality, import it into an empty instance, export again: the same
archive apart from the export time. Conflicts are refused before anything is written;
API keys never leave."""

from __future__ import annotations

import json
import zipfile
from datetime import time
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from analytics.calendar_store import load_calendar
from cli.__main__ import main
from tenancy.archive import MANIFEST, ArchiveError
from tenancy.export import export_municipality
from tenancy.importer import ImportConflictError, import_archive
from tests.tenancy.conftest import Tenants, archive_entries, compress_all

pytestmark = pytest.mark.storage


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = [
        "municipalities", "sites", "zones", "device_models", "sensors", "readings",
        "latest_readings", "alerts", "dead_letters", "dead_letter_repeats",
        "network_applications", "api_keys", "school_hours", "school_holidays",
    ]  # fmt: skip
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def test_export_import_export_gives_the_same_archive(
    db: psycopg.Connection, tenants: Tenants, empty_instance: str, tmp_path: Path, backend: str
) -> None:
    compress_all(db, backend)
    first = export_municipality(db, "aarhus", tmp_path / "first.zip")
    assert first.counts["readings"] == tenants.readings_per_municipality["aarhus"]
    assert first.counts["sensors"] == 3 and first.counts["dead_letters"] == 1

    with psycopg.connect(empty_instance, autocommit=True) as target:
        imported = import_archive(target, first.path)
        assert imported.counts["readings"] == first.counts["readings"]
        # ids were allocated anew, and the alert's subject follows its sensor's new id
        sensor_id, subject = target.execute(
            "SELECT a.sensor_id, a.subject FROM alerts a"
        ).fetchone()
        assert subject == f"sensor:{sensor_id}"
        assert target.execute("SELECT count(*) FROM latest_readings").fetchone()[0] == 5
        # the school calendar arrives whole: occupied hours are computed the same there
        calendar = load_calendar(target, imported.municipality_id)
        assert calendar == load_calendar(db, tenants.aarhus) and not calendar.is_default
        assert calendar.hours[5] == (time(8, 15), time(13))
        assert [h[2] for h in calendar.holidays] == ["Efterårsferie", "Juleferie"]
        second = export_municipality(target, "aarhus", tmp_path / "second.zip")

    before, after = archive_entries(first.path), archive_entries(second.path)
    assert before.keys() == after.keys()
    for name in before:
        if name != MANIFEST:
            assert before[name] == after[name], name
    manifest_before, manifest_after = json.loads(before[MANIFEST]), json.loads(after[MANIFEST])
    assert manifest_before.pop("exported_at") <= manifest_after.pop("exported_at")
    assert manifest_before == manifest_after


def test_archive_holds_every_part_with_checksums(
    db: psycopg.Connection, tenants: Tenants, tmp_path: Path
) -> None:
    result = export_municipality(db, "aarhus", tmp_path / "aarhus.zip")
    manifest = result.manifest
    assert manifest["format_version"] == 1 and manifest["schema_revision"]
    assert manifest["metrics"] == ["co2_ppm", "fill_pct", "temperature_c"]
    with zipfile.ZipFile(result.path) as archive:
        names = set(archive.namelist())
        sensors = json.loads(archive.read("metadata/sensors.json"))
        municipality = json.loads(archive.read("metadata/municipality.json"))
        readings = pq.read_table(archive.open("data/readings.parquet"))
    assert names == {MANIFEST, *manifest["entries"]}
    assert municipality["settings"]["thresholds"] == {"co2_ppm": 1000}
    assert [s["id"] for s in sensors] == [1, 2, 3]  # archive ids, not database ids
    assert {s["external_id"] for s in sensors} == {"aarhus-0", "aarhus-1", "aarhus-2"}
    assert readings.num_rows == manifest["counts"]["readings"]
    assert set(readings.column("sensor").to_pylist()) == {1, 2, 3}
    # by sensor, metric and time, across the month boundary the export reads in between
    keys = list(
        zip(
            readings.column("sensor").to_pylist(),
            readings.column("metric").to_pylist(),
            readings.column("time").to_pylist(),
            strict=True,
        )
    )
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert {t.month for t in readings.column("time").to_pylist()} == {2, 3}
    # nothing of odense
    assert b"odense" not in b"".join(archive_entries(result.path).values())


def test_api_keys_are_never_exported(
    db: psycopg.Connection, tenants: Tenants, tmp_path: Path
) -> None:
    result = export_municipality(db, "aarhus", tmp_path / "aarhus.zip")
    prefix, secret_hash = db.execute(
        "SELECT prefix, secret_hash FROM api_keys WHERE municipality_id = %s",
        (tenants.aarhus,),
    ).fetchone()
    entries = archive_entries(result.path)
    blob = b"".join(entries.values())
    secret = tenants.token.rsplit("_", 1)[1]
    for forbidden in (prefix, secret, secret_hash.hex(), bytes(secret_hash).hex()):
        assert forbidden.encode() not in blob
    assert bytes(secret_hash) not in blob
    assert not any("key" in entry for entry in entries)
    assert "api_keys" in json.loads(entries[MANIFEST])["excluded"]


def test_conflicts_are_refused_before_anything_is_written(
    db: psycopg.Connection, tenants: Tenants, tmp_path: Path
) -> None:
    archive = export_municipality(db, "aarhus", tmp_path / "aarhus.zip").path
    before = _counts(db)
    with pytest.raises(ImportConflictError) as refused:
        import_archive(db, archive)
    conflicts = "\n".join(refused.value.conflicts)
    assert "municipality slug 'aarhus' already exists" in conflicts
    assert "kommune code 0751" in conflicts
    assert "DevEUI a0b1c2d3e4f50000 is already registered here" in conflicts
    assert "chirpstack application app-aarhus is already mapped here" in conflicts
    assert "dead letters are already stored here" in conflicts
    assert _counts(db) == before


def test_only_the_devEUI_conflict_still_refuses_everything(
    db: psycopg.Connection, tenants: Tenants, tmp_path: Path
) -> None:
    archive = export_municipality(db, "aarhus", tmp_path / "aarhus.zip").path
    # what is left of aarhus here is one of its DevEUIs, now odense's
    db.execute("DELETE FROM dead_letters WHERE municipality_id = %s", (tenants.aarhus,))
    db.execute("DELETE FROM dead_letter_repeats WHERE municipality_id = %s", (tenants.aarhus,))
    db.execute(
        "UPDATE sensors SET municipality_id = %s, external_id = 'moved' "
        "WHERE dev_eui = 'a0b1c2d3e4f50001'",
        (tenants.odense,),
    )
    db.execute("DELETE FROM municipalities WHERE id = %s", (tenants.aarhus,))
    before = _counts(db)
    with pytest.raises(ImportConflictError) as refused:
        import_archive(db, archive)
    assert refused.value.conflicts == ["DevEUI a0b1c2d3e4f50001 is already registered here"]
    assert _counts(db) == before


def test_an_altered_archive_is_refused(
    db: psycopg.Connection, tenants: Tenants, empty_instance: str, tmp_path: Path
) -> None:
    archive = export_municipality(db, "aarhus", tmp_path / "aarhus.zip").path
    entries = archive_entries(archive)
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tampered, "w") as out:
        for name, data in entries.items():
            if name == "metadata/sensors.json":
                data = data.replace(b"aarhus-0", b"aarhus-X")
            out.writestr(name, data)
    with psycopg.connect(empty_instance, autocommit=True) as target:
        with pytest.raises(ArchiveError, match=r"metadata/sensors\.json does not match"):
            import_archive(target, tampered)
        assert target.execute("SELECT count(*) FROM municipalities").fetchone()[0] == 0


def test_cli_exports_and_imports(
    db: psycopg.Connection,
    tenants: Tenants,
    empty_instance: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
) -> None:
    from models.settings import get_settings

    archive = tmp_path / "odense.zip"
    monkeypatch.setenv("IOT_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert main(["tenant", "export", "--municipality", "odense", "--out", str(archive)]) == 0
        monkeypatch.setenv("IOT_DATABASE_URL", empty_instance)
        get_settings.cache_clear()
        assert main(["tenant", "import", str(archive)]) == 0
        with pytest.raises(SystemExit, match="7 conflict"):
            main(["tenant", "import", str(archive)])
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr()
    assert "imported odense" in out.out
    assert "conflict: municipality slug 'odense' already exists" in out.err
