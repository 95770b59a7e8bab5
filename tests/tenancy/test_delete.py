"""Deleting a municipality after its export removes every row of it and reports the
counts; the other municipality is untouched (both storage backends)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest

from cli.__main__ import main
from models.timescale import run_policy_jobs
from tenancy import inventory
from tenancy.delete import delete_municipality
from tenancy.export import export_municipality
from tests.tenancy.conftest import Tenants, compress_all

pytestmark = pytest.mark.storage


def _refresh_rollups(conn: psycopg.Connection, backend: str) -> None:
    if backend == "timescaledb":
        for view in ("readings_hourly", "readings_daily"):
            conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (view,))
    else:
        conn.execute("SELECT iot_refresh_rollups()")


def _fingerprint(conn: psycopg.Connection, municipality_id: int) -> dict[str, str]:
    """A hash of every row of the municipality, per table (readings and rollups by its
    sensors)."""
    sensors = [
        r[0] for r in conn.execute("SELECT id FROM sensors WHERE municipality_id = %s",
                                   (municipality_id,))
    ]  # fmt: skip
    result = {}
    for table in inventory.tenant_tables(conn):
        where = "id = %s" if table == "municipalities" else "municipality_id = %s"
        value: object = municipality_id
        if table == "latest_readings":
            where, value = "sensor_id = ANY(%s)", sensors
        rows = conn.execute(
            f"SELECT t::text FROM {table} t WHERE {where} ORDER BY 1", (value,)
        ).fetchall()
        result[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
    # Rollups recomputed by TimescaleDB may sum in another order: compare sums and
    # averages to 9 significant places.
    columns = {
        "readings": "time, sensor_id, metric_id, value",
        "readings_hourly": "bucket, sensor_id, metric_id, count, min, max, "
        "round(sum::numeric, 6), round(avg::numeric, 6)",
    }
    columns["readings_daily"] = columns["readings_hourly"]
    for table in ("readings", "readings_hourly", "readings_daily"):
        rows = conn.execute(
            f"SELECT {columns[table]} FROM {table} t WHERE sensor_id = ANY(%s) ORDER BY 1, 2, 3",
            (sensors,),
        ).fetchall()
        assert rows, table
        result[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return result


def test_delete_removes_everything_of_one_municipality_only(
    db: psycopg.Connection, tenants: Tenants, backend: str, tmp_path: Path
) -> None:
    _refresh_rollups(db, backend)
    compress_all(db, backend)
    export_municipality(db, "aarhus", tmp_path / "aarhus.zip")
    sensors = [
        r[0] for r in db.execute("SELECT id FROM sensors WHERE municipality_id = %s",
                                 (tenants.aarhus,))
    ]  # fmt: skip
    odense_before = _fingerprint(db, tenants.odense)

    counts = delete_municipality(db, "aarhus")

    assert counts["readings"] == tenants.readings_per_municipality["aarhus"]
    assert counts["sensors"] == 3 and counts["municipalities"] == 1
    assert counts["api_keys"] == 1 and counts["dead_letters"] == 1
    assert counts["alerts"] == 1 and counts["latest_readings"] == 5
    # its own device models with every codec version; the shared model stays
    assert counts["device_models"] == 2 and counts["device_codecs"] == 3
    assert db.execute("SELECT count(*) FROM device_models WHERE municipality_id IS NULL"
                      ).fetchone()[0] == 1  # fmt: skip
    assert counts["school_hours"] == 2 and counts["school_holidays"] == 2
    if backend == "timescaledb":
        run_policy_jobs(db)
    for table in inventory.tenant_tables(db):
        if table == "municipalities":
            left = db.execute("SELECT count(*) FROM municipalities WHERE id = %s",
                              (tenants.aarhus,)).fetchone()[0]  # fmt: skip
        elif table == "latest_readings":
            left = db.execute("SELECT count(*) FROM latest_readings WHERE sensor_id = ANY(%s)",
                              (sensors,)).fetchone()[0]  # fmt: skip
        else:
            left = db.execute(
                f"SELECT count(*) FROM {table} WHERE municipality_id = %s", (tenants.aarhus,)
            ).fetchone()[0]
        assert left == 0, table
    for table in ("readings", "readings_hourly", "readings_daily"):
        left = db.execute(
            f"SELECT count(*) FROM {table} WHERE sensor_id = ANY(%s)", (sensors,)
        ).fetchone()[0]
        assert left == 0, table
    # no letter of aarhus survives unattributed either (its FK would only null it)
    assert db.execute("SELECT count(*) FROM dead_letters WHERE municipality_id IS NULL"
                      ).fetchone()[0] == 0  # fmt: skip
    assert _fingerprint(db, tenants.odense) == odense_before


def test_cli_deletes_only_with_a_current_export(
    db: psycopg.Connection,
    tenants: Tenants,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
) -> None:
    from models.settings import get_settings

    archive = tmp_path / "aarhus.zip"
    other = tmp_path / "odense.zip"
    monkeypatch.setenv("IOT_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        main(["tenant", "export", "--municipality", "aarhus", "--out", str(archive)])
        main(["tenant", "export", "--municipality", "odense", "--out", str(other)])
        with pytest.raises(SystemExit, match="export of 'odense', not 'aarhus'"):
            main(["tenant", "delete", "--municipality", "aarhus", "--export", str(other)])
        db.execute(
            "INSERT INTO readings (time, sensor_id, metric_id, value) SELECT "
            "'2026-02-28T12:00:30Z', id, 1, 1 FROM sensors WHERE external_id = 'aarhus-0'"
        )
        with pytest.raises(SystemExit, match="data changed since"):
            main(["tenant", "delete", "--municipality", "aarhus", "--export", str(archive)])
        assert db.execute("SELECT count(*) FROM municipalities").fetchone()[0] == 2
        main(["tenant", "export", "--municipality", "aarhus", "--out", str(archive)])
        assert main(["tenant", "delete", "--municipality", "aarhus", "--export", str(archive)]) == 0
    finally:
        get_settings.cache_clear()
    assert '"readings": 2161' in capsys.readouterr().out
    assert db.execute("SELECT slug FROM municipalities").fetchall() == [("odense",)]
