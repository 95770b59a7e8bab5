"""Every table holding a municipality's data is exported or excluded with a reason, so a
table added later (calendars, notification rules, codecs, audit) cannot be forgotten."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tenancy import inventory
from tenancy.delete import DeleteError, delete_municipality
from tenancy.export import ExportError, export_municipality
from tenancy.parquet_tables import (
    DEAD_LETTERS_NOT_CARRIED,
    DEAD_LETTERS_SCHEMA,
    READINGS_COLUMNS,
)


def _columns(conn: psycopg.Connection, table: str) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        )
    }


def test_every_tenant_table_is_exported_or_excluded(db: psycopg.Connection) -> None:
    tables = inventory.tenant_tables(db)
    # the detection itself finds the known ones: by column, and through foreign keys
    assert {"sensors", "alerts", "dead_letters", "api_keys", "latest_readings"} <= set(tables)
    assert inventory.unaccounted_tables(db) == [], (
        "add these tables to tenancy/inventory.py: EXPORTED (and the import) or EXCLUDED "
        "with the reason"
    )


def test_the_inventory_names_only_tables_that_exist(db: psycopg.Connection) -> None:
    existing = {
        r[0]
        for r in db.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')"
        )
    }
    assert inventory.accounted() <= existing


def test_parquet_files_carry_every_column(db: psycopg.Connection) -> None:
    assert _columns(db, "readings") == set(READINGS_COLUMNS)
    assert _columns(db, "dead_letters") == set(DEAD_LETTERS_SCHEMA.names) | set(
        DEAD_LETTERS_NOT_CARRIED
    )


def test_a_new_table_with_municipality_data_stops_export_and_delete(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('aarhus', 'Aarhus Kommune')")
    with db.transaction(force_rollback=True):
        db.execute(
            "CREATE TABLE calendars (id int PRIMARY KEY, "
            "municipality_id int REFERENCES municipalities (id), day date)"
        )
        db.execute(
            "CREATE TABLE calendar_notes (calendar_id int REFERENCES calendars (id), note text)"
        )
        assert inventory.unaccounted_tables(db) == ["calendar_notes", "calendars"]
        with pytest.raises(ExportError, match="calendar_notes, calendars"):
            export_municipality(db, "aarhus", tmp_path / "aarhus.zip")
        with pytest.raises(DeleteError, match="calendar_notes, calendars"):
            delete_municipality(db, "aarhus")
    assert not (tmp_path / "aarhus.zip").exists()
    assert inventory.unaccounted_tables(db) == []
