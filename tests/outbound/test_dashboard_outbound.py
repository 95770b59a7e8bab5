"""The dashboard's notifications panel in a real headless Chromium against a running API:
staff add a channel and a rule, send a test notice that a real receiver gets, see a dead
delivery with the receiver's answer and send it again, resend an unconfirmed e-mail after
confirming; a notice's link opens the dashboard at its alert."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.auth import create_key
from outbound.worker import DeliveryWorker
from tests.e2e.test_dashboard import CHROMIUM, _wait_until
from tests.outbound.conftest import add_channel, make_place, outbound_settings

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)


def test_staff_manage_notifications_from_the_dashboard(
    db, database_url, running_api, http_receiver
) -> None:
    from playwright.sync_api import sync_playwright

    place = make_place(db)
    broken = add_channel(db, place, "webhook", url="https://gone.example/hook", name="Gammel")
    dead = db.execute(
        "INSERT INTO deliveries (municipality_id, channel_id, event, idempotency_key, payload, "
        "status, attempts, last_error) VALUES (%s, %s, 'test', 'k1', '{}', 'dead', 7, 'x') "
        "RETURNING id",
        (place.municipality, broken),
    ).fetchone()[0]
    db.execute(
        "INSERT INTO delivery_attempts (delivery_id, municipality_id, finished_at, ok, "
        "status_code, response) VALUES (%s, %s, now(), false, 410, 'webhook removed')",
        (dead, place.municipality),
    )
    # An e-mail the SMTP server never confirmed (its channel switched off since, so that
    # the worker at the end does not try to reach an SMTP server).
    mail = add_channel(db, place, "email", recipients=["vagt@aarhus.example"], name="Post")
    db.execute("UPDATE notification_channels SET enabled = false WHERE id = %s", (mail,))
    unconfirmed = db.execute(
        "INSERT INTO deliveries (municipality_id, channel_id, event, idempotency_key, payload, "
        "status, attempts, last_error) VALUES (%s, %s, 'test', 'k2', '{}', 'unconfirmed', 1, "
        "'unconfirmed: …') RETURNING id",
        (place.municipality, mail),
    ).fetchone()[0]
    db.execute(
        "INSERT INTO delivery_attempts (delivery_id, municipality_id, final_dot_at, finished_at, "
        "response) VALUES (%s, %s, now(), now(), 'unconfirmed: the worker stopped')",
        (unconfirmed, place.municipality),
    )
    alert = db.execute(
        "INSERT INTO alerts (municipality_id, sensor_id, rule, severity, subject, started_at, "
        "message) VALUES (%s, %s, 'climate.co2_limit', 'warning', 'sensor:x', %s, 'CO2 high') "
        "RETURNING id",
        (place.municipality, place.climate, datetime.now(UTC) - timedelta(minutes=30)),
    ).fetchone()[0]
    token = create_key(db, place.municipality, ["admin"]).token

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(f"{running_api}/#alert-{alert}")
        page.fill("#api-key", token)
        page.click("button[type=submit]")
        _wait_until(page, "document.getElementById('outbound').dataset.loaded === 'true'")
        # The notice's link marks its alert.
        assert page.get_attribute(f"#alert-{alert}", "class") == "focused"

        dead_row = page.inner_text("#deliveries tbody tr[data-status=dead]")
        assert "Gammel" in dead_row and "410 webhook removed" in dead_row
        # Staff read the panel in Danish by default, English one click away.
        panel = page.inner_text("#outbound")
        assert "Notifikationer og datamodtagere" in panel and "Seneste afsendelser" in panel
        assert "opgivet" in dead_row and "Prøv igen" in dead_row
        assert "Send igen" in page.inner_text("#deliveries tbody tr[data-status=unconfirmed]")
        page.click("#lang")
        _wait_until(page, "document.querySelector('#deliveries tbody').innerText.includes('Retry')")
        assert "Notifications and data targets" in page.inner_text("#outbound")
        assert "dead" in page.inner_text("#deliveries tbody tr[data-status=dead]")

        page.fill("#channel-name", "Pedel")
        page.select_option("#channel-kind", "webhook")
        page.fill("#channel-address", http_receiver.url + "/hook")
        page.click("#channel-form button[type=submit]")
        _wait_until(page, "document.querySelector('#channels').innerText.includes('Pedel')")
        assert "shown once" in page.inner_text("[data-testid=channel-secret]")

        page.select_option("#rule-channel", label="Pedel")
        page.fill("#rule-alert", "climate.")
        page.fill("#rule-quiet-from", "22:00")
        page.fill("#rule-quiet-until", "06:30")
        page.click("#rule-form button[type=submit]")
        _wait_until(page, "document.querySelector('#rules tbody').innerText.includes('climate.')")
        assert "22:00–06:30" in page.inner_text("#rules tbody")

        page.click("#channels tbody tr:has-text('Pedel') button:has-text('Test')")
        _wait_until(
            page, "document.getElementById('outbound-status').textContent.includes('queued')"
        )
        page.click("#deliveries tbody tr[data-status=dead] button:has-text('Retry')")
        _wait_until(page, "!document.querySelector('#deliveries tbody tr[data-status=dead]')")
        unconfirmed_row = "#deliveries tbody tr[data-status=unconfirmed]"
        assert "Post" in page.inner_text(unconfirmed_row)
        assert "the worker stopped" in page.inner_text(unconfirmed_row)
        # Resending asks first: the recipients may have the e-mail already.
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.click(f"{unconfirmed_row} button:has-text('Resend')")
        time.sleep(0.5)
        assert page.query_selector(unconfirmed_row) is not None
        page.once("dialog", lambda dialog: dialog.accept())
        page.click(f"{unconfirmed_row} button:has-text('Resend')")
        _wait_until(page, f"!document.querySelector('{unconfirmed_row}')")
        browser.close()

    rules = db.execute(
        "SELECT alert_rule, quiet_from::text, quiet_until::text FROM notification_rules"
    )
    assert rules.fetchall() == [("climate.", "22:00:00", "06:30:00")]
    status = db.execute("SELECT status FROM deliveries WHERE id = %s", (unconfirmed,))
    assert status.fetchone()[0] == "pending"
    DeliveryWorker(outbound_settings(database_url)).run(until_idle=True)
    assert [r.json()["event"] for r in http_receiver.requests] == ["test"]
