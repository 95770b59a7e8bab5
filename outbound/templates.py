"""Alert notices as people read them, in Danish or English, with a link to the dashboard.

`render` turns a delivery's event and payload (models/outbox.py) into a subject line, a
plain-text body and the link; the channels (outbound/channels.py) wrap these in e-mail,
webhook JSON or a Teams / Slack card. Pure functions: no database, no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

LOCAL = ZoneInfo("Europe/Copenhagen")
LANGUAGES = ("da", "en")

# What each alert rule means, per language; unknown rules are shown by their name.
RULE_NAMES: dict[str, dict[str, str]] = {
    "climate.co2_limit": {"da": "CO₂ over grænsen", "en": "CO₂ above the limit"},
    "climate.co2_critical": {"da": "CO₂ kritisk højt", "en": "CO₂ critically high"},
    "climate.temperature": {"da": "Temperatur uden for komfortområdet",
                            "en": "Temperature outside the comfort band"},
    "climate.humidity": {"da": "Luftfugtighed uden for komfortområdet",
                         "en": "Humidity outside the comfort band"},
    "bin.full": {"da": "Affaldsbeholder fuld", "en": "Waste bin full"},
    "bin.soon_full": {"da": "Affaldsbeholder snart fuld", "en": "Waste bin full soon"},
    "bin.sudden_rise": {"da": "Fyldniveau steg pludseligt", "en": "Fill level jumped"},
    "bin.fault": {"da": "Fejl på fyldmåler", "en": "Fill sensor fault"},
    "parking.long_stay": {"da": "Parkering ud over tilladt tid",
                          "en": "Parking beyond the allowed time"},
    "health.stale": {"da": "Sensor sender ikke data", "en": "Sensor sends no data"},
    "health.low_battery": {"da": "Lavt batteri", "en": "Low battery"},
    "health.stuck": {"da": "Sensorværdi står stille", "en": "Sensor value stuck"},
    "health.spike": {"da": "Usandsynlig måling (spids)", "en": "Implausible reading (spike)"},
}  # fmt: skip

SEVERITY_NAMES = {
    "info": {"da": "info", "en": "info"},
    "warning": {"da": "advarsel", "en": "warning"},
    "critical": {"da": "kritisk", "en": "critical"},
}

_TEXT = {
    "alert.opened": {"da": "Alarm", "en": "Alert"},
    "alert.escalated": {"da": "Ikke kvitteret", "en": "Not acknowledged"},
    "alert.resolved": {"da": "Afsluttet", "en": "Resolved"},
    "digest": {"da": "Samlet overblik", "en": "Digest"},
    "test": {"da": "Testbesked", "en": "Test message"},
    "since": {"da": "siden", "en": "since"},
    "value": {"da": "seneste værdi", "en": "last value"},
    "open": {"da": "Åbn i dashboardet", "en": "Open in the dashboard"},
    "escalated_body": {
        "da": "Alarmen er ikke kvitteret i dashboardet inden for den aftalte tid.",
        "en": "The alert has not been acknowledged in the dashboard within the agreed time.",
    },
    "resolved_body": {"da": "Forholdet er ophørt.", "en": "The condition has cleared."},
    "digest_body": {
        "da": "Disse meddelelser kom i stilletiden:",
        "en": "These notices came during quiet hours:",
    },
    "test_body": {
        "da": "Denne kanal er sat op rigtigt: kommune-iot kan nå den.",
        "en": "This channel is set up right: kommune-iot can reach it.",
    },
}


@dataclass(frozen=True)
class Notice:
    subject: str
    text: str
    link: str
    severity: str


def _t(key: str, language: str) -> str:
    return _TEXT[key][language]


def alert_link(base_url: str, alert_id: int | None) -> str:
    """The dashboard, opened at the alert (api/static/dashboard.js reads `#alert-<id>`)."""
    base = base_url.rstrip("/") + "/"
    return f"{base}#alert-{alert_id}" if alert_id else base


def _local(iso: str | None) -> str:
    if not iso:
        return "?"
    return datetime.fromisoformat(iso).astimezone(LOCAL).strftime("%d.%m.%Y %H:%M")


def _place(payload: dict[str, Any]) -> str:
    sensor = payload.get("sensor") or {}
    parts = [
        payload.get("site"),
        payload.get("zone"),
        sensor.get("name") or sensor.get("external_id"),
    ]
    return " · ".join(str(p) for p in parts if p) or str(payload["alert"].get("subject", ""))


def _headline(payload: dict[str, Any], language: str) -> str:
    alert = payload["alert"]
    name = RULE_NAMES.get(alert["rule"], {}).get(language, alert["rule"])
    return f"{name} – {_place(payload)}"


def render(event: str, payload: dict[str, Any], language: str, base_url: str) -> Notice:
    """The notice of one delivery. `language` is "da" or "en"."""
    if language not in LANGUAGES:
        language = "da"
    if event == "digest":
        return _render_digest(payload, language, base_url)
    if event == "test":
        return Notice(
            f"kommune-iot: {_t('test', language)}",
            _t("test_body", language),
            alert_link(base_url, None),
            "info",
        )
    alert = payload["alert"]
    severity = SEVERITY_NAMES.get(alert["severity"], {}).get(language, alert["severity"])
    subject = f"{_t(event, language)} ({severity}): {_headline(payload, language)}"
    lines = [_headline(payload, language)]
    if alert.get("message"):
        lines.append(str(alert["message"]))
    lines.append(f"{_t('since', language)} {_local(alert.get('started_at'))}")
    if alert.get("last_value") is not None:
        lines.append(f"{_t('value', language)}: {alert['last_value']:g}")
    if event == "alert.escalated":
        lines.append(_t("escalated_body", language))
    elif event == "alert.resolved":
        lines.append(_t("resolved_body", language))
    link = alert_link(base_url, alert["id"])
    lines.append(f"{_t('open', language)}: {link}")
    return Notice(subject, "\n".join(lines), link, alert["severity"])


def _render_digest(payload: dict[str, Any], language: str, base_url: str) -> Notice:
    items = payload["items"]
    lines = [_t("digest_body", language), ""]
    for item in items:
        lines.append(f"- {_t(item['event'], language)}: {_headline(item['payload'], language)}")
        lines.append(f"  {alert_link(base_url, item['payload']['alert']['id'])}")
    subject = f"kommune-iot: {_t('digest', language)} ({len(items)})"
    severities = [i["payload"]["alert"]["severity"] for i in items]
    worst = max(severities, key=("info", "warning", "critical").index, default="info")
    return Notice(subject, "\n".join(lines), alert_link(base_url, None), worst)
