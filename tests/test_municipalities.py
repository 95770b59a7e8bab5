"""Municipalities (domain/municipalities.py) against the real database, and the admin
commands that use them."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from domain.municipalities import create_municipality, municipality_id, set_new_sensors_public
from domain.registry import upsert_sensor
from models.schemas import SensorCreate


def test_a_created_municipality_is_found_by_its_slug(db: psycopg.Connection) -> None:
    created = create_municipality(db, "viborg", "Viborg Kommune", "0791", new_sensors_public=False)
    assert municipality_id(db, "viborg") == created
    assert municipality_id(db, "nowhere") is None


def test_slug_and_code_are_unique_and_the_slug_well_formed(db: psycopg.Connection) -> None:
    create_municipality(db, "viborg", "Viborg Kommune", "0791", new_sensors_public=False)
    with pytest.raises(psycopg.errors.UniqueViolation):
        create_municipality(db, "viborg", "Viborg igen", None, new_sensors_public=False)
    with pytest.raises(psycopg.errors.UniqueViolation):
        create_municipality(db, "viborg-2", "Samme kode", "0791", new_sensors_public=False)
    with pytest.raises(psycopg.errors.CheckViolation):
        create_municipality(db, "Viborg Kommune", "Viborg", None, new_sensors_public=False)


def test_new_sensors_take_the_municipality_s_visibility(db: psycopg.Connection) -> None:
    viborg = create_municipality(db, "viborg", "Viborg Kommune", None, new_sensors_public=True)
    first = upsert_sensor(db, viborg, SensorCreate(external_id="a", kind="other"))
    set_new_sensors_public(db, viborg, False)
    second = upsert_sensor(db, viborg, SensorCreate(external_id="b", kind="other"))
    assert (first.is_public, second.is_public) == (True, False)


def test_admin_cli_sets_the_visibility_of_new_sensors(db, database_url) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cli", "admin", *args],
            env={"IOT_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=False,
        )

    made = cli(
        "create-municipality", "--slug", "viborg", "--name", "Viborg", "--new-sensors", "public"
    )
    assert made.returncode == 0, made.stderr
    again = cli("create-municipality", "--slug", "viborg", "--name", "Viborg")
    assert again.returncode != 0 and "exists" in again.stderr

    def public_by_default() -> bool:
        row = db.execute(
            "SELECT settings->>'new_sensors_public' FROM municipalities WHERE slug = 'viborg'"
        ).fetchone()
        return row[0] == "true"

    assert public_by_default()
    changed = cli("new-sensors", "--municipality", "viborg", "private")
    assert changed.returncode == 0, changed.stderr
    assert not public_by_default()
    missing = cli("new-sensors", "--municipality", "nowhere", "public")
    assert missing.returncode != 0 and "no municipality" in missing.stderr
