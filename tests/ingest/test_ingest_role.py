"""Ingest does its whole job connected as its database role (models/db_roles.py): start-up,
readings, latest values and dead letters, with no more than the role's grants."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.subscriber import IngestService
from models.db_roles import INGEST, enable_logins, role_url
from models.settings import Settings
from tests.ingest.conftest import ELSYS_ERS_CO2_HEX, ELSYS_EUI, count, wait_for
from tests.ingest.test_end_to_end import chirpstack_up


@pytest.fixture
def ingest_as_role(settings: Settings, db: psycopg.Connection) -> Iterator[IngestService]:
    enable_logins(db, {})
    service = IngestService(
        settings.model_copy(
            update={
                "database_url": role_url(settings.database_url, INGEST),
                "latest_flush_interval_s": 0.0,
            }
        )
    )
    service.start()
    assert service.wait_connected(10), "ingest did not connect to the broker"
    wait_for(lambda: service.ready() if hasattr(service, "ready") else True, what="start-up")
    yield service
    service.stop()


def test_ingest_stores_readings_latest_values_and_dead_letters_as_its_role(
    db, fleet, ingest_as_role, publisher
) -> None:
    sent_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    publisher.publish(
        fleet.chirpstack_topic(ELSYS_EUI), chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX, time=sent_at)
    )
    publisher.publish(fleet.chirpstack_topic("ffffffffffffffff"), b"not json")
    wait_for(lambda: count(db, "SELECT count(*) FROM readings") >= 7, what="7 readings")
    wait_for(lambda: count(db, "SELECT count(*) FROM latest_readings") >= 7, what="latest")
    wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") >= 1, what="dead letter")
