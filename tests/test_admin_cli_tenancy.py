"""The operator's side of tenant binding, through the real CLI and database: mapping
network-server applications to municipalities (read by ingest and by `broker-acl`), and
sensor imports that cannot take a DevEUI another municipality holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).parents[1]
ODENSE_EUI = "a81758fffe0300aa"


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env={**os.environ, "IOT_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def municipalities(db: psycopg.Connection) -> dict[str, int]:
    rows = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('aarhus', 'Aarhus Kommune'), "
        "('odense', 'Odense Kommune') RETURNING slug, id"
    ).fetchall()
    ids = dict(rows)
    db.execute(
        "INSERT INTO sensors (municipality_id, dev_eui, external_id, kind) "
        "VALUES (%s, %s, 'odense-secret-room', 'climate')",
        (ids["odense"], ODENSE_EUI),
    )
    return ids


def test_applications_are_mapped_to_one_municipality_and_broker_acl_reads_the_mapping(
    db, database_url: str, municipalities: dict[str, int], tmp_path: Path
) -> None:
    mapped = cli(
        database_url,
        *("admin", "map-application", "--municipality", "aarhus", "--network", "chirpstack"),
        "8d2c7e36-4a53-4b4c-9d0e-5a1b2c3d4e5f",
    )
    assert mapped.returncode == 0, mapped.stderr
    tts = cli(
        database_url,
        *("admin", "map-application", "--municipality", "aarhus", "--network", "thethings"),
        "aarhus-parking@aarhus",
    )
    assert tts.returncode == 0, tts.stderr
    # Odense cannot take Aarhus's application without an operator's --reassign.
    taken = cli(
        database_url,
        *("admin", "map-application", "--municipality", "odense", "--network", "chirpstack"),
        "8d2c7e36-4a53-4b4c-9d0e-5a1b2c3d4e5f",
    )
    assert taken.returncode != 0 and "another municipality" in taken.stderr
    wildcard = cli(
        database_url,
        *("admin", "map-application", "--municipality", "odense", "--network", "chirpstack"),
        "#",
    )
    assert wildcard.returncode != 0 and "one MQTT topic level" in wildcard.stderr

    listed = cli(database_url, "admin", "list-applications")
    assert [line.split("\t")[:3] for line in listed.stdout.splitlines()] == [
        ["aarhus", "chirpstack", "8d2c7e36-4a53-4b4c-9d0e-5a1b2c3d4e5f"],
        ["aarhus", "thethings", "aarhus-parking@aarhus"],
    ]

    config = tmp_path / "gateways.toml"
    config.write_text('[[network_server]]\nusername = "aarhus-ns"\nmunicipality = "aarhus"\n')
    acl = cli(database_url, "broker-acl", "--out", str(tmp_path / "out"), "--config", str(config))
    assert acl.returncode == 0, acl.stderr
    assert (
        "user aarhus-ns\n"
        "topic write application/8d2c7e36-4a53-4b4c-9d0e-5a1b2c3d4e5f/#\n"
        "topic write v3/aarhus-parking@aarhus/#\n"
    ) in (tmp_path / "out/acl").read_text()

    moved = cli(
        database_url,
        *("admin", "map-application", "--municipality", "odense", "--network", "thethings"),
        *("aarhus-parking@aarhus", "--reassign"),
    )
    assert moved.returncode == 0, moved.stderr
    unmapped = cli(
        database_url,
        *("admin", "unmap-application", "--network", "chirpstack"),
        "8d2c7e36-4a53-4b4c-9d0e-5a1b2c3d4e5f",
    )
    assert unmapped.returncode == 0, unmapped.stderr
    assert db.execute(
        "SELECT network, application_id, municipality_id FROM network_applications"
    ).fetchall() == [("thethings", "aarhus-parking@aarhus", municipalities["odense"])]
    # Aarhus's server now has no application: broker-acl says so instead of granting nothing.
    refused = cli(
        database_url, "broker-acl", "--out", str(tmp_path / "out"), "--config", str(config)
    )
    assert refused.returncode != 0 and "no application is mapped to 'aarhus'" in refused.stderr


def test_csv_import_cannot_claim_a_devEui_another_municipality_holds(
    db, database_url: str, municipalities: dict[str, int], tmp_path: Path
) -> None:
    sheet = tmp_path / "sensors.csv"
    sheet.write_text(f"external_id,kind,dev_eui\nroom-1,climate,{ODENSE_EUI.upper()}\n")
    result = cli(database_url, "admin", "import-sensors", "--municipality", "aarhus", str(sheet))
    assert result.returncode != 0
    assert "already registered by another municipality" in result.stderr
    for secret in ("odense", "Odense", "odense-secret-room"):
        assert secret not in result.stdout + result.stderr
    owners = db.execute("SELECT municipality_id FROM sensors WHERE dev_eui = %s", (ODENSE_EUI,))
    assert owners.fetchall() == [(municipalities["odense"],)]

    sheet.write_text("external_id,kind,dev_eui\nroom-1,climate,a81758fffe030001\n")
    result = cli(database_url, "admin", "import-sensors", "--municipality", "aarhus", str(sheet))
    assert result.returncode == 0, result.stderr
    assert "1 created" in result.stdout
