"""Seeding registers the simulated fleet once, with its places and device models."""

from __future__ import annotations

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
