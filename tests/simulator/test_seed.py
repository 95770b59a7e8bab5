"""Seeding registers the simulated fleet once, with its places and device models."""

from __future__ import annotations

from simulator.envelopes import network_identities, uplink_topic
from simulator.fleet import build_fleet
from simulator.seed import fleet_is_seeded, seed_fleet


def test_seeding_registers_every_device_with_its_model_site_and_zone(db):
    fleet = build_fleet(classrooms=19, bins=19, parking_bays=19, seed=11)
    assert not fleet_is_seeded(db, fleet)

    result = seed_fleet(db, fleet)

    assert result.sensors == 57 and fleet_is_seeded(db, fleet)
    assert db.execute("SELECT count(*) FROM municipalities").fetchone()[0] == 19
    codes = {r[0] for r in db.execute("SELECT kommune_code FROM municipalities")}
    assert {"0751", "0741", "0791"} <= codes  # Aarhus, Samsø, Viborg
    rows = db.execute(
        """
        SELECT s.dev_eui, dm.vendor, dm.model, si.name, z.name, z.capacity, s.kind
        FROM sensors s
        JOIN device_models dm ON dm.id = s.device_model_id
        JOIN sites si ON si.id = s.site_id
        LEFT JOIN zones z ON z.id = s.zone_id
        """
    ).fetchall()
    by_eui = {r[0]: r[1:] for r in rows}
    for device in fleet.devices:
        vendor, model, site, zone, capacity, kind = by_eui[device.dev_eui]
        assert (vendor, model, site, zone, kind) == (
            device.vendor, device.model, device.site, device.zone, device.kind
        )  # fmt: skip
        if device.kind == "climate":
            assert capacity == device.capacity_persons


def test_seeding_the_same_fleet_twice_changes_nothing(db):
    fleet = build_fleet(classrooms=10, bins=5, parking_bays=5, seed=12)
    seed_fleet(db, fleet)
    before = db.execute("SELECT count(*), max(id) FROM sensors").fetchone()
    zones_before = db.execute("SELECT count(*) FROM zones").fetchone()

    seed_fleet(db, fleet)

    assert db.execute("SELECT count(*), max(id) FROM sensors").fetchone() == before
    assert db.execute("SELECT count(*) FROM zones").fetchone() == zones_before


def test_seeding_maps_each_municipalitys_applications_as_its_topics_name_them(db):
    fleet = build_fleet(classrooms=4, bins=4, parking_bays=4, seed=13, municipalities=4)
    seed_fleet(db, fleet)
    identities = network_identities(fleet)
    mapped = {
        (network, application): slug
        for network, application, slug in db.execute(
            "SELECT a.network, a.application_id, m.slug FROM network_applications a "
            "JOIN municipalities m ON m.id = a.municipality_id"
        )
    }
    for device in fleet.devices:
        topic = uplink_topic(device, identities[device.municipality])
        network = "chirpstack" if topic.startswith("application/") else "thethings"
        assert mapped[(network, topic.split("/")[1])] == device.municipality
    # A database seeded before applications were mapped is seeded again.
    db.execute("DELETE FROM network_applications")
    assert not fleet_is_seeded(db, fleet)
