"""Register the simulated fleet in the database: municipalities, their network-server
applications, sites, zones, sensors.

Idempotent: seeding the same fleet twice changes nothing; seeding a larger fleet adds
the new devices. Sites and zones are created with their kind, position and capacity;
sensors are registered through the device registry (domain/registry.py) like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from domain.applications import map_application
from domain.registry import register_sensor, sync_device_models
from models.schemas import SensorCreate
from simulator.envelopes import network_identities, topic_applications
from simulator.fleet import Fleet


@dataclass(frozen=True)
class SeedResult:
    municipalities: int
    sites: int
    zones: int
    sensors: int


def seed_fleet(conn: psycopg.Connection, fleet: Fleet) -> SeedResult:
    """Create or update every municipality, site, zone and sensor of `fleet` in one
    transaction; returns how many of each the fleet has."""
    with conn.transaction():
        model_ids = sync_device_models(conn)
        missing = {(d.vendor, d.model) for d in fleet.devices} - set(model_ids)
        if missing:
            raise LookupError(
                "no payload decoder is registered for device models "
                + ", ".join(f"{v} {m}" for v, m in sorted(missing))
            )
        municipality_ids: dict[str, int] = {}
        for m in fleet.municipalities:
            municipality_ids[m.slug] = conn.execute(
                """
                INSERT INTO municipalities (slug, name, kommune_code) VALUES (%s, %s, %s)
                ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name,
                    kommune_code = EXCLUDED.kommune_code
                RETURNING id
                """,
                (m.slug, m.name, m.kommune_code),
            ).fetchone()[0]
        # Ingest takes uplinks only from applications mapped to the sensor's municipality.
        identities = network_identities(fleet)
        for m in fleet.municipalities:
            for network, application in topic_applications(m.network, identities[m.slug]):
                map_application(conn, municipality_ids[m.slug], network, application)
        site_ids: dict[tuple[str, str], int] = {}
        for s in fleet.sites:
            site_ids[(s.municipality, s.name)] = conn.execute(
                """
                INSERT INTO sites (municipality_id, name, kind, lat, lon)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (municipality_id, name) DO UPDATE SET kind = EXCLUDED.kind,
                    lat = EXCLUDED.lat, lon = EXCLUDED.lon
                RETURNING id
                """,
                (municipality_ids[s.municipality], s.name, s.kind, s.lat, s.lon),
            ).fetchone()[0]
        zone_ids: dict[tuple[str, str, str], int] = {}
        for z in fleet.zones:
            zone_ids[(z.municipality, z.site, z.name)] = conn.execute(
                """
                INSERT INTO zones (municipality_id, site_id, name, kind, floor, capacity)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (site_id, name) DO UPDATE SET kind = EXCLUDED.kind,
                    floor = EXCLUDED.floor, capacity = EXCLUDED.capacity
                RETURNING id
                """,
                (
                    municipality_ids[z.municipality],
                    site_ids[(z.municipality, z.site)],
                    z.name,
                    z.kind,
                    z.floor,
                    z.capacity,
                ),
            ).fetchone()[0]
        for d in fleet.devices:
            register_sensor(
                conn,
                municipality_ids[d.municipality],
                SensorCreate(
                    external_id=d.external_id,
                    dev_eui=d.dev_eui,
                    name=d.name,
                    kind=d.kind,
                    vendor=d.vendor,
                    model=d.model,
                    lat=d.lat,
                    lon=d.lon,
                    bin_depth_mm=d.bin_depth_mm,
                    mount_offset_mm=d.mount_offset_mm,
                    expected_interval_s=d.interval_s,
                    site=d.site,
                    zone=d.zone,
                    # The simulated fleet is demo data: published, like a municipality
                    # whose default for new sensors is public.
                    is_public=True,
                ),
            )
    return SeedResult(
        len(fleet.municipalities), len(fleet.sites), len(fleet.zones), len(fleet.devices)
    )


def fleet_is_seeded(conn: psycopg.Connection, fleet: Fleet) -> bool:
    """True when every device of `fleet` is already registered and every application of
    its network servers mapped."""
    euis = [d.dev_eui for d in fleet.devices]
    row = conn.execute("SELECT count(*) FROM sensors WHERE dev_eui = ANY(%s)", (euis,)).fetchone()
    identities = network_identities(fleet)
    applications = [
        application
        for m in fleet.municipalities
        for _network, application in topic_applications(m.network, identities[m.slug])
    ]
    mapped = conn.execute(
        "SELECT count(*) FROM network_applications WHERE application_id = ANY(%s)",
        (applications,),
    ).fetchone()
    return row[0] == len(euis) and mapped[0] == len(applications)
