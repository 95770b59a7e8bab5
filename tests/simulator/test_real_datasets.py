"""Small slices of the real public datasets (../shared/datasets) through ingest and the
analytics: the data's defects treated as a real sensor's would be."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from cli.replay_dataset import findings, replay_dataset
from simulator import datasets
from simulator.dataset_replay import register, replay
from tests.conftest import empty_data_tables, migrated_database

pytestmark = pytest.mark.skipif(
    not datasets.DATASETS.exists(), reason="../shared/datasets is not beside the repository"
)


@pytest.fixture(scope="module")
def dataset_database() -> Iterator[str]:
    """A database of this module's own: the replays create partitions for 2015, 2016 and
    2022, which the session database's retention tests must not find."""
    with migrated_database("off", prefix="iot_test_datasets") as url:
        yield url


@pytest.fixture
def db(dataset_database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dataset_database, autocommit=True) as conn:
        empty_data_tables(conn)
        yield conn


def _values(db: psycopg.Connection, metric: str) -> list[float]:
    return [
        r[0]
        for r in db.execute(
            "SELECT value FROM readings r JOIN metrics m ON m.id = r.metric_id "
            "WHERE m.name = %s ORDER BY time",
            (metric,),
        )
    ]


def test_windesheim_humidity_fractions_arrive_as_percent(db) -> None:
    report = replay_dataset(db, "windesheim", "datasets", datasets.DATASETS, limit=800)
    assert report["readings"] > 800 and report["dead_letters"] == {}
    humidity = _values(db, "humidity_pct")
    assert humidity and min(humidity) > 15 and max(humidity) <= 100  # 0.494 became 49.4
    assert set(_values(db, "occupancy")) <= {0.0, 1.0}
    rooms = findings(db, "windesheim", report["municipality_id"])["rooms"]
    assert rooms and all(r["co2_samples"] >= 0 for r in rooms)


def test_uci_local_belgian_time_is_stored_in_utc(db) -> None:
    sensors, messages = datasets.uci(files=("datatest.txt",), limit=300)
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('datasets', 'datasets')")
    register(db, 1, sensors)
    result = replay(db, "datasets", messages)
    assert result.messages == 300 and result.readings == 1500
    first = db.execute("SELECT min(time) FROM readings").fetchone()[0]
    assert first == datetime(2015, 2, 2, 13, 19, tzinfo=UTC)  # 14:19 in Mons (CET)
    rooms = findings(db, "uci", 1)["rooms"]
    (room,) = rooms
    assert room["occupied_h"] > 0  # the photo-based labels mark occupied time


def test_birmingham_negative_and_overfull_counts_become_dead_letters(db) -> None:
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('datasets', 'datasets')")
    sensors, messages = datasets.birmingham(car_parks=("NIA North", "BHMBRCBRG02"))
    register(db, 1, sensors)
    result = replay(db, "datasets", messages)
    # NIA North's 12 negative counts and BHMBRCBRG02's 30 counts above capacity.
    assert result.dead_letters == {"out_of_range": 42}
    letters = db.execute(
        "SELECT count(*) FROM dead_letters WHERE reason = 'out_of_range' AND municipality_id = 1"
    ).fetchone()[0]
    # Ingest keeps 20 letters per device, reason and hour and counts the rest (all 30 of
    # BHMBRCBRG02's arrive within the replay's hour, on its first bay).
    repeats = db.execute("SELECT coalesce(sum(repeats), 0) FROM dead_letter_repeats").fetchone()[0]
    assert (letters, repeats) == (32, 10)
    car_parks = findings(db, "birmingham", 1)["car_parks"]
    assert {c["zone"] for c in car_parks} == {"NIA North", "BHMBRCBRG02"}
    for park in car_parks:
        assert 8 <= park["peak_hour"] <= 16  # the data covers about 08:00–16:30
        assert all(
            rate is None or 0.0 <= rate <= 1.0 for day in park["weekday_hour_rate"] for rate in day
        )


def test_edinburgh_fill_levels_are_rescaled_and_the_forecast_is_scored(db) -> None:
    report = replay_dataset(db, "edinburgh", "datasets", datasets.DATASETS, limit=1500)
    assert report["dead_letters"] == {}
    fills = _values(db, "fill_pct")
    assert max(fills) <= 80.0  # the sensor's 100 % is a bin 80 % full
    forecast = findings(db, "edinburgh", report["municipality_id"])["forecast"]
    assert forecast["forecasts"] > 0
    assert 0 <= forecast["mean_absolute_error_pct"] <= 100
