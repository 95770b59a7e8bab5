"""Device registry against the real database: models, single sensors, CSV imports."""

from __future__ import annotations

import psycopg
import pytest

from analytics.bins import fill_level_pct
from domain.decoders import device_models
from domain.registry import (
    RegistryError,
    import_sensors_csv,
    register_sensor,
    sync_device_models,
    upsert_sensor,
)
from models.schemas import SensorCreate


def _municipality(conn: psycopg.Connection, slug: str = "aarhus") -> int:
    row = conn.execute(
        "INSERT INTO municipalities (slug, name) VALUES (%s, %s) RETURNING id", (slug, slug.title())
    ).fetchone()
    assert row is not None
    return int(row[0])


def _sensor_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM sensors").fetchone()
    assert row is not None
    return int(row[0])


def test_sync_device_models_upserts_every_decoder_model_once(db: psycopg.Connection) -> None:
    first = sync_device_models(db)
    second = sync_device_models(db)
    assert first == second
    assert set(first) == {(m.vendor, m.model) for m in device_models()}
    decoder, kind, meta = db.execute(
        "SELECT decoder, kind, meta FROM device_models"
        " WHERE vendor = 'Decentlab' AND model = 'DL-MBX'"
    ).fetchone()
    assert (decoder, kind) == ("decentlab_dl_mbx", "bin")
    assert "distance_mm" in meta["metrics"]


def test_register_sensor_takes_kind_from_model_and_creates_site_and_zone(
    db: psycopg.Connection,
) -> None:
    municipality = _municipality(db)
    sensor_id = register_sensor(
        db,
        municipality,
        SensorCreate(
            external_id="skole-1-lokale-12",
            dev_eui="A8:17:58:FF:FE:00:12:34",
            vendor="elsys",
            model="ers co2",
            lat=56.157,
            lon=10.211,
            site="Skovvangskolen",
            zone="Lokale 12",
        ),
    )
    row = db.execute(
        """
        SELECT s.dev_eui, s.kind, m.model, si.name, z.name, z.kind
        FROM sensors s JOIN device_models m ON m.id = s.device_model_id
        JOIN sites si ON si.id = s.site_id JOIN zones z ON z.id = s.zone_id
        WHERE s.id = %s
        """,
        (sensor_id,),
    ).fetchone()
    assert row == ("a81758fffe001234", "climate", "ERS CO2", "Skovvangskolen", "Lokale 12", "room")


def test_registering_the_same_external_id_again_updates_the_sensor(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    first = register_sensor(
        db, municipality, SensorCreate(external_id="bin-7", kind="bin", bin_depth_mm=900)
    )
    second = register_sensor(
        db,
        municipality,
        SensorCreate(external_id="bin-7", kind="bin", bin_depth_mm=1100, mount_offset_mm=150),
    )
    assert first == second
    assert db.execute("SELECT bin_depth_mm, mount_offset_mm FROM sensors").fetchall() == [
        (1100.0, 150.0)
    ]


def test_unknown_device_model_is_refused_with_the_known_models(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    with pytest.raises(RegistryError, match=r"unknown device model Elsys ERS Nano .*ERS CO2"):
        register_sensor(
            db, municipality, SensorCreate(external_id="x", vendor="Elsys", model="ERS Nano")
        )
    assert _sensor_count(db) == 0


def test_bin_model_without_bin_depth_is_refused(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    with pytest.raises(RegistryError, match="bin sensors need bin_depth_mm"):
        register_sensor(
            db, municipality, SensorCreate(external_id="b", vendor="Decentlab", model="DL-MBX")
        )
    assert _sensor_count(db) == 0


def test_dev_eui_of_another_municipality_is_refused_without_naming_its_sensor(
    db: psycopg.Connection,
) -> None:
    aarhus, viborg = _municipality(db, "aarhus"), _municipality(db, "viborg")
    register_sensor(
        db, aarhus, SensorCreate(external_id="secret-1", dev_eui="70b3d57ba0000001", kind="other")
    )
    with pytest.raises(RegistryError) as caught:
        register_sensor(
            db, viborg, SensorCreate(external_id="v1", dev_eui="70B3D57BA0000001", kind="other")
        )
    assert "another municipality" in str(caught.value)
    assert "secret-1" not in str(caught.value)
    assert _sensor_count(db) == 1


def test_unknown_municipality_is_refused(db: psycopg.Connection) -> None:
    with pytest.raises(RegistryError, match="municipality 999 does not exist"):
        register_sensor(db, 999, SensorCreate(external_id="x", kind="other"))


def test_sensor_create_refuses_malformed_dev_eui_and_half_coordinates() -> None:
    with pytest.raises(ValueError, match="dev_eui must be 16 hexadecimal digits"):
        SensorCreate(external_id="x", kind="other", dev_eui="a81758fffe00123")
    with pytest.raises(ValueError, match="both lat and lon"):
        SensorCreate(external_id="x", kind="other", lat=56.1)
    with pytest.raises(ValueError, match="less than or equal to 90"):
        SensorCreate(external_id="x", kind="other", lat=156.1, lon=10.0)
    with pytest.raises(ValueError, match="only apply to bin sensors"):
        SensorCreate(external_id="x", kind="parking", bin_depth_mm=900)


EXCEL_CSV = (
    "\ufeffexternal_id;dev_eui;kind;vendor;model;lat;lon;bin_depth_mm;mount_offset_mm;"
    "is_public;site;zone\r\n"
    "bin-1;70B3D57BA1000001;;Decentlab;DL-MBX;56,1570;10,2110;1200;100;ja;Genbrugsplads Nord;\r\n"
    "p-1;fcd6bd0000000001;parking;Bosch;TPS110;56,1571;10,2112;;;nej;Rådhuspladsen;Række A\r\n"
    ";;;;;;;;;;;\r\n"
    "room-1;;climate;;;;;;;;Skolen;Lokale 1\r\n"
)


def test_csv_import_from_danish_excel_stores_every_row(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    result = import_sensors_csv(db, municipality, EXCEL_CSV)
    assert result.errors == []
    assert (result.committed, result.created, result.updated) == (True, 3, 0)
    assert [(r.line, r.external_id, r.action) for r in result.rows] == [
        (2, "bin-1", "created"),
        (3, "p-1", "created"),
        (5, "room-1", "created"),
    ]
    rows = db.execute(
        "SELECT external_id, dev_eui, kind, lat, is_public FROM sensors ORDER BY external_id"
    ).fetchall()
    assert rows == [
        ("bin-1", "70b3d57ba1000001", "bin", 56.157, True),
        ("p-1", "fcd6bd0000000001", "parking", 56.1571, False),
        ("room-1", None, "climate", None, False),  # empty is_public: the default, private
    ]


def test_csv_reupload_updates_instead_of_duplicating(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    import_sensors_csv(db, municipality, EXCEL_CSV)
    again = import_sensors_csv(db, municipality, EXCEL_CSV.replace(";1200;", ";1300;"))
    assert (again.committed, again.created, again.updated) == (True, 0, 3)
    assert _sensor_count(db) == 3
    depth = db.execute("SELECT bin_depth_mm FROM sensors WHERE external_id = 'bin-1'").fetchone()
    assert depth == (1300.0,)


def test_csv_with_bad_rows_stores_nothing_and_lists_every_problem(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    csv_text = (
        "external_id,dev_eui,kind,vendor,model,lat,lon,bin_depth_mm\n"
        "ok-1,a81758fffe000001,climate,Elsys,ERS CO2,56.1,10.2,\n"
        "bad-eui,a81758fffe00000z,climate,,,,,\n"
        "bad-kind,,kitchen,,,,,\n"
        "bad-lat,,climate,,,95.0,10.0,\n"
        "no-depth,,bin,,,,,\n"
        "bad-model,,,Acme,Bin 3000,,,\n"
        "ok-1,,climate,,,,,\n"
    )
    result = import_sensors_csv(db, municipality, csv_text)
    assert not result.committed
    assert [(e.line, e.external_id) for e in result.errors] == [
        (3, "bad-eui"),
        (4, "bad-kind"),
        (5, "bad-lat"),
        (6, "no-depth"),
        (7, "bad-model"),
        (8, "ok-1"),
    ]
    messages = {e.external_id: e.message for e in result.errors}
    assert "dev_eui must be 16 hexadecimal digits" in messages["bad-eui"]
    assert "kind" in messages["bad-kind"]
    assert "lat" in messages["bad-lat"]
    assert "bin_depth_mm" in messages["no-depth"]
    assert "also on line 2" in messages["ok-1"]
    assert "unknown device model Acme Bin 3000" in messages["bad-model"]
    assert _sensor_count(db) == 0


def test_csv_unknown_model_and_taken_dev_eui_are_reported_by_line(db: psycopg.Connection) -> None:
    aarhus, viborg = _municipality(db, "aarhus"), _municipality(db, "viborg")
    register_sensor(
        db, viborg, SensorCreate(external_id="v", dev_eui="24e124128c000001", kind="other")
    )
    csv_text = (
        "external_id,dev_eui,vendor,model\n"
        "a1,24e124128c000002,Milesight,AM107\n"
        "a2,24e124128c000001,Milesight,AM107\n"
        "a3,,Milesight,AM999\n"
    )
    result = import_sensors_csv(db, aarhus, csv_text)
    assert not result.committed
    assert [(e.line, e.message.split(" (")[0]) for e in result.errors] == [
        (3, "dev_eui 24e124128c000001 is already registered by another municipality"),
        (4, "unknown device model Milesight AM999"),
    ]
    assert db.execute(
        "SELECT count(*) FROM sensors WHERE municipality_id = %s", (aarhus,)
    ).fetchone() == (0,)


def test_csv_with_unknown_column_is_refused_at_the_header(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    result = import_sensors_csv(db, municipality, "external_id,kind,colour\nx,other,red\n")
    assert not result.committed
    assert result.errors[0].line == 1
    assert "unknown column(s) colour" in result.errors[0].message


def test_csv_without_rows_is_refused(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    result = import_sensors_csv(db, municipality, "external_id,kind\n")
    assert not result.committed
    assert result.errors[0].message == "the file has no rows"


def test_registered_bin_geometry_gives_fill_level_from_distance(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    import_sensors_csv(db, municipality, EXCEL_CSV)
    depth, offset = db.execute(
        "SELECT bin_depth_mm, mount_offset_mm FROM sensors WHERE external_id = 'bin-1'"
    ).fetchone()
    # 1200 mm deep, sensor 100 mm above the full line: 700 mm to the surface is half full.
    assert float(fill_level_pct(700.0, depth, offset)) == pytest.approx(50.0)


# --- re-uploads change only what they name -------------------------------------------------

FULL_CSV = (
    "external_id,name,kind,lat,lon,is_public,site,zone\n"
    "room-1,Lokale 1,climate,56.1,10.2,no,Skolen,Lokale 1\n"
    "room-2,Lokale 2,climate,56.2,10.3,yes,Skolen,Lokale 2\n"
)


def _sensor_rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT s.external_id, s.name, s.lat, s.lon, s.is_public, s.expected_interval_s, z.name "
        "FROM sensors s LEFT JOIN zones z ON z.id = s.zone_id ORDER BY s.external_id"
    ).fetchall()


def test_reupload_without_columns_keeps_visibility_position_name_and_zone(
    db: psycopg.Connection,
) -> None:
    """A careless re-upload (a sheet with only ids, kinds and intervals) neither publishes
    the private sensor nor erases what the file does not mention."""
    municipality = _municipality(db)
    assert import_sensors_csv(db, municipality, FULL_CSV).committed
    before = _sensor_rows(db)
    again = import_sensors_csv(
        db,
        municipality,
        "external_id,kind,expected_interval_s\nroom-1,climate,600\nroom-2,climate,900\n",
    )
    assert again.committed, again.errors
    after = _sensor_rows(db)
    intervals = (600, 900)
    assert after == [(*b[:5], i, b[6]) for b, i in zip(before, intervals, strict=True)]
    assert again.visibility_changes == []
    assert [(r.external_id, r.was_public, r.is_public) for r in again.rows] == [
        ("room-1", False, False),
        ("room-2", True, True),
    ]


def test_a_named_column_with_an_empty_cell_clears_the_value_but_not_the_visibility(
    db: psycopg.Connection,
) -> None:
    municipality = _municipality(db)
    import_sensors_csv(db, municipality, FULL_CSV)
    result = import_sensors_csv(db, municipality, "external_id,name,is_public\nroom-1,,\n")
    assert result.committed, result.errors
    assert _sensor_rows(db)[0][:5] == ("room-1", None, 56.1, 10.2, False)


def test_new_sensors_take_the_municipalitys_default_visibility(db: psycopg.Connection) -> None:
    closed, open_ = _municipality(db, "aarhus"), _municipality(db, "odense")
    db.execute(
        "UPDATE municipalities SET settings = '{\"new_sensors_public\": true}' WHERE id = %s",
        (open_,),
    )
    csv_text = "external_id,kind\nnew-1,climate\n"
    private = import_sensors_csv(db, closed, csv_text)
    public = import_sensors_csv(db, open_, csv_text)
    assert [(r.is_public, r.was_public) for r in private.rows] == [(False, None)]
    assert [(r.is_public, r.was_public) for r in public.rows] == [(True, None)]
    # A new sensor is listed with the visibility it got: staff see what gets published.
    assert [r.external_id for r in public.visibility_changes] == ["new-1"]
    assert db.execute(
        "SELECT municipality_id, is_public FROM sensors ORDER BY municipality_id"
    ).fetchall() == [(closed, False), (open_, True)]


def test_every_change_of_visibility_is_listed(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    import_sensors_csv(db, municipality, FULL_CSV)
    flipped = import_sensors_csv(db, municipality, "external_id,is_public\nroom-1,ja\nroom-2,ja\n")
    assert [
        (r.line, r.external_id, r.was_public, r.is_public) for r in flipped.visibility_changes
    ] == [(2, "room-1", False, True)]


def test_register_sensor_updates_only_the_fields_given(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    register_sensor(
        db,
        municipality,
        SensorCreate(
            external_id="bin-7", kind="bin", bin_depth_mm=900, lat=56.1, lon=10.1, is_public=False
        ),
    )
    done = upsert_sensor(db, municipality, SensorCreate(external_id="bin-7", name="Container 7"))
    assert (done.action, done.was_public, done.is_public) == ("updated", False, False)
    assert db.execute(
        "SELECT name, kind, bin_depth_mm, lat, lon, is_public FROM sensors"
    ).fetchone() == ("Container 7", "bin", 900.0, 56.1, 10.1, False)


def test_a_new_sensor_still_needs_a_kind_or_a_model(db: psycopg.Connection) -> None:
    municipality = _municipality(db)
    with pytest.raises(RegistryError, match="give a kind"):
        register_sensor(db, municipality, SensorCreate(external_id="nothing-known"))
    result = import_sensors_csv(db, municipality, "external_id,name\nx,Somewhere\n")
    assert not result.committed and "give a kind" in result.errors[0].message
