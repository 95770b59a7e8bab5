"""A device model added through the dashboard's form in a real headless Chromium: a codec
failing an example is shown per example and not stored; the corrected one is saved and
listed, with no code change."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.auth import create_key
from domain.registry import sync_device_models
from tests.e2e.test_dashboard import CHROMIUM, _wait_until, running_api  # noqa: F401

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)

JS = Path(__file__).resolve().parents[1] / "codecs" / "js"
MAPPING = (
    '{"fields": {"battery": "battery_v", "distance": {"metric": "distance_mm", "unit": "cm"},'
    ' "temperature": "temperature_c", "relativeHumidity": "humidity_pct"}}'
)


def test_staff_add_a_device_model_with_its_codec_in_the_dashboard(db, running_api) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    sync_device_models(db)
    municipality = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('vejle', 'Vejle Kommune') RETURNING id"
    ).fetchone()[0]
    token = create_key(db, municipality, ["read-private", "write-sensors"]).token
    examples = (JS / "teneo_filling.yaml").read_text()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(running_api + "/")
        page.fill("#api-key", token)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-loaded=true]", timeout=20000)
        _wait_until(page, "document.getElementById('models').dataset.own === '0'")

        page.fill("#codec-vendor", "Teneo IoT")
        page.fill("#codec-model", "Fyldningssensor (JS)")
        page.select_option("#codec-kind", "bin")
        page.fill("#codec-script", (JS / "teneo_filling.js").read_text())
        page.fill("#codec-examples", examples.replace("battery: 3.3", "battery: 3.0"))
        page.fill("#codec-mapping", MAPPING)
        page.click("#codec-save")
        _wait_until(page, "document.getElementById('models').dataset.result === 'failed'")
        report = page.inner_text("[data-testid=codec-report]")
        assert "example 1" in report and "OK" in report
        assert "example 2" in report and "battery: expected 3.0, codec gave 3.3" in report
        assert db.execute("SELECT count(*) FROM device_codecs").fetchone()[0] == 0

        page.fill("#codec-examples", examples)
        page.click("#codec-check")
        _wait_until(page, "document.getElementById('models').dataset.result === 'passed'")
        assert db.execute("SELECT count(*) FROM device_codecs").fetchone()[0] == 0
        page.click("#codec-save")
        _wait_until(page, "document.getElementById('models').dataset.own === '1'")
        assert "version 1" in page.inner_text("[data-testid=codec-result]")
        assert "Fyldningssensor (JS)" in page.inner_text("[data-testid=model-list]")
        browser.close()
    stored = db.execute(
        "SELECT dm.vendor, dm.model, dm.kind, c.version FROM device_codecs c "
        "JOIN device_models dm ON dm.id = c.device_model_id WHERE c.municipality_id = %s",
        (municipality,),
    ).fetchall()
    assert stored == [("Teneo IoT", "Fyldningssensor (JS)", "bin", 1)]
