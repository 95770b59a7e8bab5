"""Reports people file, through the staff API over the real database: room-month figures
against hand-computed values, school summary, bins, parking profile; the XLSX read back
with openpyxl, the Danish PDF rendered with pdftoppm and read with pdftotext; another
municipality's key sees none of it."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_key
from models.settings import Settings

pytestmark = pytest.mark.storage

CPH = ZoneInfo("Europe/Copenhagen")
STEP = timedelta(minutes=10)
BASE = "/api/v1/staff/reports"
EVIL_NAME = '=HYPERLINK("http://evil.example","Lokale 2")'
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _local(*args: int) -> datetime:
    return datetime(*args, tzinfo=CPH).astimezone(UTC)


def _day(sensor: int, metric: int, day: tuple[int, int, int], value_at) -> list[tuple]:
    start = _local(*day, 0, 0)
    return [
        (t, sensor, metric, float(value_at(t.astimezone(CPH))))
        for t in (start + i * STEP for i in range(144))
    ]


@pytest.fixture
def seeded(db: psycopg.Connection) -> dict:
    metric = dict(db.execute("SELECT name, id FROM metrics").fetchall())
    out: dict = {}
    for slug in ("silkeborg", "odense"):
        m = db.execute(
            "INSERT INTO municipalities (slug, name) VALUES (%s, %s) RETURNING id",
            (slug, f"{slug.title()} Kommune"),
        ).fetchone()[0]
        out[slug] = {"id": m, "key": create_key(db, m, ["read-private"]).token}
    m = out["silkeborg"]["id"]
    site = db.execute(
        "INSERT INTO sites (municipality_id, name, kind) VALUES (%s, 'Balleskolen', 'school') "
        "RETURNING id",
        (m,),
    ).fetchone()[0]
    out["site"] = site
    sensors = {}
    for name in ("Lokale 1", EVIL_NAME):
        zone = db.execute(
            "INSERT INTO zones (municipality_id, site_id, name) VALUES (%s, %s, %s) RETURNING id",
            (m, site, name),
        ).fetchone()[0]
        sensors[name] = db.execute(
            "INSERT INTO sensors (municipality_id, external_id, name, kind, site_id, zone_id) "
            "VALUES (%s, %s, %s, 'climate', %s, %s) RETURNING id",
            (m, f"room-{zone}", name, site, zone),
        ).fetchone()[0]
    parking_zone = db.execute(
        "INSERT INTO zones (municipality_id, site_id, name, kind) "
        "VALUES (%s, %s, 'P-Syd', 'parking') RETURNING id",
        (m, site),
    ).fetchone()[0]
    bays = [
        db.execute(
            "INSERT INTO sensors (municipality_id, external_id, kind, zone_id) "
            "VALUES (%s, %s, 'parking', %s) RETURNING id",
            (m, f"bay-{n}", parking_zone),
        ).fetchone()[0]
        for n in range(2)
    ]
    bin_id = db.execute(
        "INSERT INTO sensors (municipality_id, external_id, name, kind) "
        "VALUES (%s, 'bin-1', 'Container 1', 'bin') RETURNING id",
        (m,),
    ).fetchone()[0]
    # Odense has a school of its own, with CO2 far above the limit.
    other_site = db.execute(
        "INSERT INTO sites (municipality_id, name) VALUES (%s, 'Odense Skole') RETURNING id",
        (out["odense"]["id"],),
    ).fetchone()[0]
    other = db.execute(
        "INSERT INTO sensors (municipality_id, external_id, name, kind, site_id) "
        "VALUES (%s, 'o-room', 'Odense lokale', 'climate', %s) RETURNING id",
        (out["odense"]["id"], other_site),
    ).fetchone()[0]
    out.update(sensors=sensors, bays=bays, bin=bin_id, other_site=other_site)

    db.execute("SELECT iot_ensure_partitions('2026-01-01', '2026-02-01')")
    rows = []
    # Monday 12 January: room 1 at 1200 ppm 08:00–10:00, 600 ppm otherwise; Saturday 17th
    # 1500 ppm all day (nobody there). Room 2: 25 °C (category III in the heating season).
    room1, room2 = sensors["Lokale 1"], sensors[EVIL_NAME]
    rows += _day(
        room1, metric["co2_ppm"], (2026, 1, 12), lambda t: 1200 if 8 <= t.hour < 10 else 600
    )
    rows += _day(room1, metric["co2_ppm"], (2026, 1, 17), lambda t: 1500)
    rows += _day(room2, metric["co2_ppm"], (2026, 1, 12), lambda t: 500)
    rows += _day(room2, metric["temperature_c"], (2026, 1, 12), lambda t: 25.0)
    rows += _day(other, metric["co2_ppm"], (2026, 1, 12), lambda t: 2000)
    # Both bays occupied 08:00–12:00 on Monday 12th, free otherwise.
    for bay in bays:
        rows += _day(bay, metric["occupied"], (2026, 1, 12), lambda t: 8 <= t.hour < 12)
    # The bin fills 1 %/h from 20 %, is emptied at 90 % and starts again at 5 %.
    t0 = _local(2026, 1, 5, 0, 0)
    for h in range(24 * 4):
        fill = 20 + h if 20 + h < 90 else 5 + (20 + h - 90)
        rows.append((t0 + timedelta(hours=h), bin_id, metric["fill_pct"], float(fill)))
    with db.cursor().copy("COPY readings (time, sensor_id, metric_id, value) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)
    return out


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _get(client: TestClient, key: str, path: str, **params):
    return client.get(BASE + path, params=params, headers={"Authorization": f"Bearer {key}"})


def test_room_month_in_occupied_time(client, seeded) -> None:
    key = seeded["silkeborg"]["key"]
    response = _get(client, key, "/rooms", month="2026-01")
    assert response.status_code == 200, response.text
    rooms = {r["sensor_id"]: r for r in response.json()["items"]}
    room1 = rooms[seeded["sensors"]["Lokale 1"]]
    # Occupied: Monday 08:00–16:00 (the default calendar); Saturday's 1500 ppm is not.
    assert room1["occupied_h"] == 8.0
    assert room1["br18_hours_above_1000_ppm"] == 2.0
    # 1200 ppm is 800 above outdoor air: category II; 600 ppm: category I.
    assert (room1["co2_category_I_share"], room1["co2_category_II_share"]) == (0.75, 0.25)
    room2 = rooms[seeded["sensors"][EVIL_NAME]]
    assert room2["temperature_category_III_share"] == 1.0
    assert room2["br18_hours_above_1000_ppm"] == 0.0
    assert all(r["site"] == "Balleskolen" for r in rooms.values())  # no Odense rooms

    schools = _get(client, key, "/schools", month="2026-01").json()["items"]
    assert len(schools) == 1
    assert schools[0]["rooms"] == 2 and schools[0]["br18_hours_above_1000_ppm"] == 2.0
    assert schools[0]["worst_room"] == "Lokale 1"
    assert schools[0]["co2_category_I_II_share"] == 1.0

    text = _get(client, key, "/rooms", month="2026-01", format="csv").text
    table = list(csv.reader(io.StringIO(text)))
    assert table[0][:3] == ["Måned", "Skole", "Lokale"]
    assert "'" + EVIL_NAME in [row[2] for row in table[1:]]  # never a formula
    english = _get(client, key, "/rooms", month="2026-01", format="csv", lang="en").text
    assert english.startswith("Month,School,Room")


def test_bins_and_parking(client, seeded) -> None:
    key = seeded["silkeborg"]["key"]
    bins = _get(client, key, "/bins", month="2026-01").json()["items"]
    (bin_row,) = bins
    assert bin_row["emptyings"] == 1
    assert bin_row["emptying_history"][0]["fill_before_pct"] == 89.0
    assert bin_row["fill_rate_pct_per_h"] == pytest.approx(1.0)
    parking = _get(client, key, "/parking", month="2026-01").json()["items"]
    (zone,) = parking
    assert zone["zone"] == "P-Syd" and zone["bays"] == 2 and zone["peak_hour"] in (8, 9, 10, 11)
    # Three Mondays with a known state (a bay's last reading holds until its next): full
    # 08–12 on the 12th, free on the 19th and 26th.
    monday = zone["weekday_hour_rate"][0]
    assert monday[8:12] == [0.333] * 4
    assert monday[7] == 0.0 and monday[12] == 0.0
    assert zone["weekday_hour_rate"][1][9] == 0.0  # Tuesdays: free


def test_the_workbook_opens_in_openpyxl_with_every_sheet(client, seeded) -> None:
    from openpyxl import load_workbook

    response = _get(client, seeded["silkeborg"]["key"], "/month.xlsx", month="2026-01")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/vnd.openxmlformats")
    workbook = load_workbook(io.BytesIO(response.content))
    assert workbook.sheetnames == ["Lokaler", "Skoler", "Beholdere", "Tømninger", "Parkering"]
    rooms = workbook["Lokaler"]
    header = [c.value for c in rooms[1]]
    by_room = {row[2].value: row for row in rooms.iter_rows(min_row=2)}
    assert by_room["Lokale 1"][header.index("Timer over 1000 ppm CO2 (BR18)")].value == 2.0
    evil = by_room[EVIL_NAME][2]
    assert evil.data_type == "s"  # the name is text, not a formula
    assert workbook["Tømninger"].max_row == 2
    parking = workbook["Parkering"]
    assert parking["A2"].value == "P-Syd" and parking["B2"].value == "mandag"


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils not installed")
def test_the_school_board_pdf_renders_in_danish_with_charts(client, seeded, tmp_path) -> None:
    from PIL import Image

    key = seeded["silkeborg"]["key"]
    response = _get(client, key, f"/schools/{seeded['site']}.pdf", month="2026-01")
    assert response.status_code == 200, response.text
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(response.content)
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Indeklima på Balleskolen" in text
    assert "januar 2026" in text
    assert "Timer over 1.000 ppm CO₂ i undervisningstiden (BR18 §447): 2,0" in text
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(tmp_path / "page")], check=True)
    (page,) = sorted(tmp_path.glob("page*.png"))
    image = Image.open(page).convert("RGB")
    colours = image.getcolors(maxcolors=1_000_000)
    assert len(colours) > 20  # not blank
    red = sum(n for n, (r, g, b) in colours if r > 150 and g < 80 and b < 80)
    assert red > 500  # the bar of Lokale 1's hours above 1,000 ppm
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(page, ARTIFACTS / "school-board-report.png")


def test_another_municipality_sees_none_of_it(client, seeded) -> None:
    key = seeded["odense"]["key"]
    response = _get(client, key, f"/schools/{seeded['site']}.pdf", month="2026-01")
    assert response.status_code == 404
    rooms = _get(client, key, "/rooms", month="2026-01").json()["items"]
    assert [r["room"] for r in rooms] == ["Odense lokale"]
    assert _get(client, key, "/bins", month="2026-01").json()["items"] == []
    for month in ("2026-13", "0001-01"):  # the second overflowed the date arithmetic
        bad = _get(client, key, "/month.xlsx", month=month)
        assert bad.status_code == 400 and "'month'" in bad.json()["detail"]
