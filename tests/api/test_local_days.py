"""Daily aggregates in local time: Copenhagen days by default, 23 and 25 hours on the days
clocks change, any IANA zone by `tz`, on both storage backends."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.storage

URL = "/api/v1/readings"
CPH = ZoneInfo("Europe/Copenhagen")
STEP_S = 600


def _seed(db: psycopg.Connection, first: date, last: date) -> tuple[np.ndarray, np.ndarray]:
    """One public climate sensor (id 1) with CO2 every 10 minutes, UTC midnight of `first`
    to UTC midnight after `last`; returns (time_s, value)."""
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('aarhus', 'Aarhus Kommune')")
    db.execute(
        "INSERT INTO sensors (id, municipality_id, external_id, name, kind, is_public) "
        "VALUES (1, 1, 'room-1', 'Lokale 1', 'climate', true)"
    )
    metric = db.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
    start = datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp()
    end = datetime(last.year, last.month, last.day, tzinfo=UTC).timestamp() + 86400
    time_s = np.arange(start, end, STEP_S, dtype=float)
    value = np.round(np.random.default_rng(3).uniform(400, 1600, time_s.size), 1)
    db.execute("SELECT iot_ensure_partitions(%s, %s)", (first, last + timedelta(days=1)))
    with db.cursor().copy("COPY readings (time, sensor_id, metric_id, value) FROM STDIN") as cp:
        for t, v in zip(time_s, value, strict=True):
            cp.write_row((datetime.fromtimestamp(t, UTC), 1, metric, float(v)))
    db.execute("SELECT iot_refresh_rollups()")
    return time_s, value


def _expected(time_s, value, zone: str, days: list[date]) -> list[tuple[str, int, float]]:
    tz = ZoneInfo(zone)
    out = []
    for day in days:
        lo = datetime(day.year, day.month, day.day, tzinfo=tz)
        hi = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz)
        pick = (time_s >= lo.timestamp()) & (time_s < hi.timestamp())
        iso = lo.astimezone(UTC).isoformat().replace("+00:00", "Z")
        out.append((iso, int(pick.sum()), float(value[pick].mean())))
    return out


def _got(items: list[dict]) -> list[tuple[str, int, float]]:
    return [(i["time"], i["count"], i["avg"]) for i in items]


@pytest.mark.parametrize(
    "days",
    [
        [date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30)],  # 24, 23, 24 hours
        [date(2026, 10, 24), date(2026, 10, 25), date(2026, 10, 26)],  # 24, 25, 24 hours
    ],
    ids=["spring-23h", "autumn-25h"],
)
def test_copenhagen_days_by_default_with_23_and_25_hours(
    db: psycopg.Connection, client: TestClient, days: list[date]
) -> None:
    time_s, value = _seed(db, days[0] - timedelta(days=1), days[-1] + timedelta(days=1))
    # From local midnight of the first day to local midnight after the last, as given by
    # a Danish user; and the same range written in UTC.
    frm = datetime(days[0].year, days[0].month, days[0].day, tzinfo=CPH)
    to = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), CPH)
    params = {"sensor_id": 1, "metric": "co2_ppm", "bucket": "day", "limit": 100}
    response = client.get(URL, params={**params, "from": frm.isoformat(), "to": to.isoformat()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tz"] == "Europe/Copenhagen"
    expected = _expected(time_s, value, "Europe/Copenhagen", days)
    assert [c for _, c, _ in expected] == [144, 138, 144] or [c for _, c, _ in expected] == [
        144,
        150,
        144,
    ]
    got = _got(body["items"])
    assert [(t, c) for t, c, _ in got] == [(t, c) for t, c, _ in expected]
    np.testing.assert_allclose([a for *_, a in got], [a for *_, a in expected])

    # An unaligned range widens to whole local days: 10:00 local to 10:00 local.
    widened = client.get(
        URL,
        params={
            **params,
            "from": (frm + timedelta(hours=10)).isoformat(),
            "to": (to - timedelta(hours=14)).isoformat(),
        },
    ).json()
    assert [(t, c) for t, c, _ in _got(widened["items"])] == [(t, c) for t, c, _ in expected]

    # One day per page: the cursor walks local days (the 23/25-hour one included).
    paged, cursor = [], None
    while True:
        page = client.get(
            URL,
            params={
                **params,
                "limit": 1,
                "from": frm.isoformat(),
                "to": to.isoformat(),
                **({"cursor": cursor} if cursor else {}),
            },
        ).json()
        paged += _got(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [(t, c) for t, c, _ in paged] == [(t, c) for t, c, _ in expected]


def test_tz_utc_gives_utc_days_and_other_zones_their_own(
    db: psycopg.Connection, client: TestClient
) -> None:
    days = [date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30)]
    time_s, value = _seed(db, days[0] - timedelta(days=1), days[-1] + timedelta(days=1))
    for zone in ("UTC", "America/New_York", "Asia/Kolkata"):
        tz = ZoneInfo(zone)
        frm = datetime(days[0].year, days[0].month, days[0].day, tzinfo=tz)
        to = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), tz)
        body = client.get(
            URL,
            params={
                "sensor_id": 1,
                "metric": "co2_ppm",
                "bucket": "day",
                "tz": zone,
                "from": frm.isoformat(),
                "to": to.isoformat(),
            },
        ).json()
        assert body["tz"] == zone
        got, expected = _got(body["items"]), _expected(time_s, value, zone, days)
        assert [(t, c) for t, c, _ in got] == [(t, c) for t, c, _ in expected], zone
        np.testing.assert_allclose([a for *_, a in got], [a for *_, a in expected])


def test_an_unknown_time_zone_is_a_400_naming_tz(
    db: psycopg.Connection, client: TestClient
) -> None:
    _seed(db, date(2026, 3, 1), date(2026, 3, 1))
    # "Europe" is a directory of the zone database: it crashed zoneinfo's loader.
    for zone in ("Europe/Aarhus", "Europe", "../../etc/passwd"):
        response = client.get(
            URL, params={"sensor_id": 1, "metric": "co2_ppm", "bucket": "day", "tz": zone}
        )
        assert response.status_code == 400, zone
        assert "'tz'" in response.json()["detail"] and zone in response.json()["detail"]
