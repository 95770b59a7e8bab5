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
from tests.tenancy.conftest import Tenants, archive_entries, compress_all, secrets_of

pytestmark = pytest.mark.storage


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = [
        "municipalities", "sites", "zones", "device_models", "sensors", "readings",
        "latest_readings", "alerts", "dead_letters", "dead_letter_repeats",
        "network_applications", "api_keys", "notification_channels", "notification_rules",
        "data_targets", "audit_events", "school_hours", "school_holidays",
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
        # outbound configuration follows its new ids: a data target's sensors, a rule's
        # channels, site and zone; secrets stayed behind
        target_sensors, target_secret = target.execute(
            "SELECT sensor_ids, secret FROM data_targets"
        ).fetchone()
        assert target_secret is None
        assert target_sensors == [
            r[0]
            for r in target.execute(
                "SELECT id FROM sensors WHERE external_id IN ('aarhus-0', 'aarhus-2') ORDER BY id"
            )
        ]
        assert target.execute(
            "SELECT c.name, e.name, s.name, z.name FROM notification_rules r "
            "JOIN notification_channels c ON c.id = r.channel_id "
            "JOIN notification_channels e ON e.id = r.escalate_channel_id "
            "JOIN sites s ON s.id = r.site_id JOIN zones z ON z.id = r.zone_id"
        ).fetchall() == [("Driftsvagt", "Teknik", "Skolen", "Lokale 1.01")]
        assert target.execute("SELECT count(*) FROM notification_channels WHERE secret IS NOT NULL"
                              ).fetchone()[0] == 0  # fmt: skip
        # the audit trail came along as recorded, and the import itself added no event
        assert target.execute("SELECT actor_name, action FROM audit_events").fetchall() == [
            ("Mette Hansen", "sensor.update")
        ]
        for table in ("identity_providers", "staff_sessions", "login_states", "deliveries"):
            assert target.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
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


def _models(conn: psycopg.Connection, municipality_id: int | None) -> list[tuple]:
    """(vendor, model, decoder, [(version, script, mapping, created_at)]) of a
    municipality's own device models (None: the shared ones)."""
    return conn.execute(
        "SELECT m.vendor, m.model, m.decoder, coalesce(array_agg(ARRAY[c.version::text, "
        "c.script, c.mapping::text, c.created_at::text] ORDER BY c.version) "
        "FILTER (WHERE c.id IS NOT NULL), '{}') FROM device_models m "
        "LEFT JOIN device_codecs c ON c.device_model_id = m.id "
        "WHERE m.municipality_id IS NOT DISTINCT FROM %s GROUP BY m.id ORDER BY m.model",
        (municipality_id,),
    ).fetchall()


def _sensor_models(conn: psycopg.Connection, municipality_id: int) -> dict[str, tuple]:
    return {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT s.external_id, m.vendor, m.model, m.municipality_id FROM sensors s "
            "JOIN device_models m ON m.id = s.device_model_id WHERE s.municipality_id = %s",
            (municipality_id,),
        )
    }


def test_a_municipalitys_codecs_go_with_it_and_stay_its_own(
    db: psycopg.Connection, tenants: Tenants, empty_instance: str, tmp_path: Path
) -> None:
    """Its own device models and every codec version arrive as its own; its sensors keep
    their models, and never take another municipality's model of the same name."""
    own_before = _models(db, tenants.aarhus)
    assert [(m[1], len(m[3])) for m in own_before] == [
        ("Fill level v2", 2),
        ("Fill level v3 (test)", 1),
    ]
    archive = export_municipality(db, "aarhus", tmp_path / "aarhus.zip")
    assert archive.counts["device_codecs"] == 3
    assert b"odense bin codec" not in b"".join(archive_entries(archive.path).values())

    with psycopg.connect(empty_instance, autocommit=True) as target:
        # Another municipality here has models of its own named like the archive's shared
        # model and like one of aarhus's own.
        odder = target.execute(
            "INSERT INTO municipalities (slug, name) VALUES ('odder', 'Odder') RETURNING id"
        ).fetchone()[0]
        for vendor, model in (("Elsys", "ERS CO2"), ("Teneo IoT", "Fill level v2")):
            target.execute(
                "INSERT INTO device_models (vendor, model, decoder, kind, municipality_id) "
                "VALUES (%s, %s, 'codec', 'climate', %s)",
                (vendor, model, odder),
            )
        odder_before = _models(target, odder)
        imported = import_archive(target, archive.path)
        aarhus = imported.municipality_id
        assert imported.counts["device_codecs"] == 3
        assert _models(target, aarhus) == own_before
        assert _sensor_models(target, aarhus) == {
            "aarhus-0": ("Elsys", "ERS CO2", None),
            "aarhus-1": ("Elsys", "ERS CO2", None),
            "aarhus-2": ("Teneo IoT", "Fill level v2", aarhus),
        }
        assert _models(target, odder) == odder_before
        assert [m[:2] for m in _models(target, None)] == [("Elsys", "ERS CO2")]


def test_an_own_model_named_like_a_built_in_one_here_is_a_conflict(
    db: psycopg.Connection, tenants: Tenants, empty_instance: str, tmp_path: Path
) -> None:
    """An uploaded model may not shadow a built-in one (ingest/codecs/store.py)."""
    archive = export_municipality(db, "aarhus", tmp_path / "aarhus.zip").path
    with psycopg.connect(empty_instance, autocommit=True) as target:
        target.execute(
            "INSERT INTO device_models (vendor, model, decoder, kind) "
            "VALUES ('teneo iot', 'FILL LEVEL  v2', 'teneo', 'bin')"
        )
        with pytest.raises(ImportConflictError) as refused:
            import_archive(target, archive)
        assert refused.value.conflicts == [
            "device model Teneo IoT Fill level v2 of the archive is built in here; rename it "
            "where it was exported from, export again and import that"
        ]
        assert target.execute("SELECT count(*) FROM municipalities").fetchone()[0] == 0
        assert target.execute("SELECT count(*) FROM device_models").fetchone()[0] == 1


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


def test_sign_in_and_delivery_secrets_are_never_exported(
    db: psycopg.Connection, tenants: Tenants, tmp_path: Path
) -> None:
    """Provider client secrets, session and sign-in state, webhook and data-target
    secrets: none in any entry, in any encoding the archive could carry them."""
    result = export_municipality(db, "aarhus", tmp_path / "aarhus.zip")
    entries = archive_entries(result.path)
    blob = b"".join(entries.values())
    for name, secret in secrets_of("aarhus").items():
        for encoded in (secret, secret.hex().encode(), b"\\x" + secret.hex().encode()):
            assert encoded not in blob, name
    # what was left out is said in the manifest; channels and targets did go, without secret
    excluded = json.loads(entries[MANIFEST])["excluded"]
    assert {"identity_providers", "staff_sessions", "login_states", "deliveries"} <= set(excluded)
    for entry in ("metadata/notification_channels.json", "metadata/data_targets.json"):
        rows = json.loads(entries[entry])
        assert rows and all("secret" not in row for row in rows), entry
    assert json.loads(entries["metadata/audit_events.json"])[0]["actor_name"] == "Mette Hansen"


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
