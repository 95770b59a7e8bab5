"""The dashboard in a real headless Chromium against a running API with simulated data:
what a member of staff sees after signing in. Saves test-artifacts/dashboard.png."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from api.auth import create_key
from domain.registry import sync_device_models
from tests.processes import child_env, free_port, wait_for_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)


def _seed(db: psycopg.Connection) -> str:
    sync_device_models(db)
    metric = dict(db.execute("SELECT name, id FROM metrics").fetchall())
    m = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('silkeborg', 'Silkeborg Kommune') "
        "RETURNING id"
    ).fetchone()[0]
    site = db.execute(
        "INSERT INTO sites (municipality_id, name, kind) VALUES (%s, 'Balleskolen', 'school') "
        "RETURNING id",
        (m,),
    ).fetchone()[0]
    now = datetime.now(UTC).replace(microsecond=0)
    rows = []
    latest = []
    for n, co2 in enumerate((650.0, 1180.0, 1620.0)):
        zone = db.execute(
            "INSERT INTO zones (municipality_id, site_id, name) VALUES (%s, %s, %s) RETURNING id",
            (m, site, f"Lokale {n + 1}"),
        ).fetchone()[0]
        sensor = db.execute(
            "INSERT INTO sensors (municipality_id, external_id, name, kind, site_id, zone_id, "
            "lat, lon) VALUES (%s, %s, %s, 'climate', %s, %s, %s, 9.55) RETURNING id",
            (m, f"room-{n}", f"Lokale {n + 1}", site, zone, 56.16 + n * 0.002),
        ).fetchone()[0]
        for k in range(48):
            rows.append((now - timedelta(minutes=30 * k), sensor, metric["co2_ppm"], co2 - 5 * k))
        latest.append((sensor, metric["co2_ppm"], now, co2))
        latest.append((sensor, metric["temperature_c"], now, 21.5))
    for n, fill in enumerate((95.0, 40.0)):
        sensor = db.execute(
            "INSERT INTO sensors (municipality_id, external_id, name, kind, lat, lon, "
            "bin_depth_mm) VALUES (%s, %s, %s, 'bin', %s, 9.56, 1000) RETURNING id",
            (m, f"bin-{n}", f"Container {n + 1}", 56.17 + n * 0.002),
        ).fetchone()[0]
        latest.append((sensor, metric["fill_pct"], now, fill))
    for n in range(4):
        sensor = db.execute(
            "INSERT INTO sensors (municipality_id, external_id, name, kind, zone_id, lat, lon) "
            "VALUES (%s, %s, %s, 'parking', %s, %s, 9.57) RETURNING id",
            (m, f"bay-{n}", f"Bås {n + 1}", zone, 56.18 + n * 0.0005),
        ).fetchone()[0]
        latest.append((sensor, metric["occupied"], now, 1.0 if n < 3 else 0.0))
    db.execute("SELECT iot_ensure_partitions(%s, %s)", (now.date() - timedelta(2), now.date()))
    with db.cursor().copy("COPY readings (time, sensor_id, metric_id, value) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)
    with db.cursor().copy(
        "COPY latest_readings (sensor_id, metric_id, time, value) FROM STDIN"
    ) as cp:
        for row in latest:
            cp.write_row(row)
    db.execute(
        "INSERT INTO alerts (municipality_id, rule, severity, subject, started_at, message) "
        "VALUES (%s, 'climate.co2_critical', 'critical', 'zone:3', %s, 'CO2 above 1400 ppm')",
        (m, now - timedelta(minutes=40)),
    )
    return create_key(db, m, ["read-private"]).token


def _wait_until(page, expression: str, timeout_s: float = 20.0) -> None:
    """Poll `expression` in the page. (Playwright's wait_for_function evaluates its string
    with eval, which the dashboard's Content-Security-Policy forbids, as it should.)"""
    import time

    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.1)


@pytest.fixture
def running_api(database_url: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "api", "--port", str(port)],
        env=child_env(IOT_DATABASE_URL=database_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(20)


def test_staff_see_rooms_bins_parking_alerts_and_a_history_chart(db, running_api) -> None:
    from playwright.sync_api import sync_playwright

    token = _seed(db)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(running_api + "/")
        page.fill("#api-key", token)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-loaded=true]", timeout=20000)

        assert "Silkeborg Kommune" in page.inner_text("[data-testid=who]")
        rows = page.query_selector_all("#rooms tbody tr")
        assert len(rows) == 3
        badges = [
            (b.inner_text(), b.get_attribute("class"))
            for b in page.query_selector_all("#rooms .co2")
        ]
        assert badges == [("650", "co2 good"), ("1180", "co2 warn"), ("1620", "co2 bad")]
        bins = [r.inner_text() for r in page.query_selector_all("#bins tbody tr")]
        assert "Container 1" in bins[0] and "95 %" in bins[0]  # fullest first
        parking = [c.inner_text() for c in page.query_selector_all("#parking tbody td")]
        assert parking == ["Lokale 3", "3", "4", "75"]
        assert "CO2 above 1400 ppm" in page.inner_text("#alerts")
        assert page.get_attribute("#map", "data-markers") == "9"

        page.click("#rooms tbody tr:nth-child(2)")
        _wait_until(page, "Number(document.getElementById('history').dataset.points || 0) > 0")
        assert int(page.get_attribute("#history", "data-points")) == 48
        assert "Lokale 2" in page.inner_text("[data-testid=history-title]")

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def test_a_wrong_key_shows_the_sign_in_again(db, running_api) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        page.goto(running_api + "/")
        page.fill("#api-key", "kiot_wrongwrongwr_" + "x" * 43)
        page.click("button[type=submit]")
        _wait_until(page, "document.getElementById('login-error').textContent.length > 0")
        assert "afvist" in page.inner_text("#login-error")  # Danish by default
        assert page.is_hidden("#dashboard")
        browser.close()


XSS_NAME = '<img src=x onerror="document.body.dataset.pwned=1">Lokale 1'


def test_a_sensor_name_is_shown_as_text_in_map_popups(db, running_api) -> None:
    """A key with write-sensors can name a sensor anything; the name must never become
    markup in another user's dashboard (stored XSS through Leaflet's HTML popups)."""
    from playwright.sync_api import sync_playwright

    token = _seed(db)
    db.execute("UPDATE sensors SET name = %s WHERE external_id = 'room-0'", (XSS_NAME,))
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        page.goto(running_api + "/")
        page.fill("#api-key", token)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-loaded=true]", timeout=20000)
        # Open each marker's popup in turn (Leaflet shows one at a time) and read it.
        popups = page.evaluate(
            """() => {
                const seen = [];
                markerLayer.eachLayer((marker) => {
                    marker.openPopup();
                    const popup = marker.getPopup().getElement();
                    const content = popup.querySelector(".leaflet-popup-content");
                    seen.push([content.textContent, content.querySelectorAll("img").length]);
                });
                return seen;
            }"""
        )
        pwned = page.evaluate("document.body.dataset.pwned")
        browser.close()
    assert len(popups) == 9
    assert f"{XSS_NAME} (climate)" in [text for text, _ in popups]
    assert all(images == 0 for _, images in popups), popups  # text, not markup
    assert pwned is None


_TICKS = """() => historyChart.scales.x.ticks.map((tick) => [tick.value, tick.label])"""


def test_danish_by_default_with_24_hour_clock_and_decimal_comma_in_copenhagen_time(
    db, running_api
) -> None:
    """A browser set to American English in Los Angeles still sees Danish text, Danish
    numbers (21,5) and Copenhagen times on a 24-hour clock (ons. 11.13, not Wed 11:13 AM);
    one click gives English with a 24-hour clock."""
    from zoneinfo import ZoneInfo

    from playwright.sync_api import sync_playwright

    copenhagen = ZoneInfo("Europe/Copenhagen")
    token = _seed(db)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(locale="en-US", timezone_id="America/Los_Angeles")
        page = context.new_page()
        page.goto(running_api + "/")
        assert page.inner_text("#login h2") == "Log ind for medarbejdere"
        page.fill("#api-key", token)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-loaded=true]", timeout=20000)

        assert "Klasselokaler" in page.inner_text("#rooms").split("\n")[0] or (
            "Klasselokaler" in page.inner_text("main")
        )
        temperatures = [
            r.inner_text() for r in page.query_selector_all("#rooms tbody td:nth-child(4)")
        ]
        assert temperatures == ["21,5", "21,5", "21,5"]
        page.click("#rooms tbody tr:nth-child(2)")
        _wait_until(page, "Number(document.getElementById('history').dataset.points || 0) > 0")
        assert "seneste 48 timer" in page.inner_text("[data-testid=history-title]")
        ticks = page.evaluate(_TICKS)
        assert len(ticks) >= 3
        danish_days = ("man.", "tirs.", "ons.", "tors.", "fre.", "lør.", "søn.")
        for value, label in ticks:
            local = datetime.fromtimestamp(value / 1000, copenhagen)
            assert "AM" not in label and "PM" not in label, label
            assert label.startswith(danish_days), label
            assert label.endswith(f"{local:%H}.{local:%M}"), (label, local)

        page.click("#lang")
        assert page.inner_text("#login h2") == "Staff sign-in"
        assert "Classrooms" in page.inner_text("main")
        temperatures = [
            r.inner_text() for r in page.query_selector_all("#rooms tbody td:nth-child(4)")
        ]
        assert temperatures == ["21.5", "21.5", "21.5"]
        _wait_until(
            page, "document.getElementById('history-title').textContent.includes('last 48 h')"
        )
        for value, label in page.evaluate(_TICKS):
            local = datetime.fromtimestamp(value / 1000, copenhagen)
            assert "AM" not in label and "PM" not in label, label
            assert label == f"{local:%a} {local:%H}:{local:%M}", label
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-en.png"), full_page=True)
        browser.close()
