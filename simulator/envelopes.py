"""Uplink events as network servers publish them: ChirpStack v4 and The Things Stack v3.

Field names and shapes follow ChirpStack v4's ``integration.UplinkEvent`` (JSON
marshaler, camelCase, ``data`` base64) and The Things Stack v3's ``ApplicationUp`` with an
``uplink_message`` (snake_case, ``frm_payload`` base64, ``dev_eui`` upper-case hex).
"""

from __future__ import annotations

import base64
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from simulator.encoders import Frame
from simulator.fleet import DeviceSpec, Fleet

APPLICATIONS = {"climate": "indeklima", "bin": "affald", "parking": "parkering"}
FREQUENCIES_HZ = (868_100_000, 868_300_000, 868_500_000, 867_100_000, 867_300_000)


@dataclass(frozen=True, slots=True)
class Gateway:
    gateway_id: str  # 16 lower-case hex digits (the gateway EUI)
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Reception:
    """One gateway's reception of an uplink."""

    gateway: Gateway
    rssi_dbm: int
    snr_db: float
    uplink_id: int


@dataclass(frozen=True, slots=True)
class NetworkIdentity:
    """How a municipality's network server names things: tenant, applications, gateways."""

    tenant_id: str
    tenant_name: str
    application_ids: dict[str, str]  # sensor kind -> application id
    gateways: tuple[Gateway, ...]


def network_identities(fleet: Fleet) -> dict[str, NetworkIdentity]:
    """Tenant, applications and three gateways per municipality, fixed by the fleet seed."""
    rnd = random.Random(fleet.seed)
    identities: dict[str, NetworkIdentity] = {}
    for m in fleet.municipalities:
        if m.network == "chirpstack":
            tenant_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            apps = {k: str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for k in APPLICATIONS}
        else:
            tenant_id = f"kommune-{m.slug}"
            apps = {k: f"{m.slug}-{name}" for k, name in APPLICATIONS.items()}
        gateways = tuple(
            Gateway(
                f"{rnd.getrandbits(64):016x}",
                round(m.lat + rnd.uniform(-0.02, 0.02), 6),
                round(m.lon + rnd.uniform(-0.03, 0.03), 6),
            )
            for _ in range(3)
        )
        identities[m.slug] = NetworkIdentity(tenant_id, f"{m.name} Kommune", apps, gateways)
    return identities


@cache
def _device_profile_id(vendor: str, model: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{vendor}/{model}"))


def rfc3339(t: datetime) -> str:
    """UTC timestamp with microseconds and a Z, as both network servers write them."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dev_addr(device: DeviceSpec) -> str:
    """A stable 32-bit device address inside the private NetID range."""
    return f"{(0x26000000 | (int(device.dev_eui, 16) & 0x00FFFFFF)):08x}"


def topic_applications(network: str, identity: NetworkIdentity) -> list[tuple[str, str]]:
    """(wire format, application as its topics name it) of each of a municipality's
    applications: what an operator maps to the municipality (network_applications)."""
    if network == "chirpstack":
        return [("chirpstack", app) for app in identity.application_ids.values()]
    return [
        ("thethings", f"{app}@{identity.tenant_id}") for app in identity.application_ids.values()
    ]


def uplink_topic(device: DeviceSpec, identity: NetworkIdentity, prefix: str = "") -> str:
    """The MQTT topic the device's network server publishes its uplinks on."""
    app = identity.application_ids[device.kind]
    if device.network == "chirpstack":
        return f"{prefix}application/{app}/device/{device.dev_eui}/event/up"
    return f"{prefix}v3/{app}@{identity.tenant_id}/devices/{tts_device_id(device)}/up"


def tts_device_id(device: DeviceSpec) -> str:
    """The Things Stack's default device id for a device registered by EUI."""
    return f"eui-{device.dev_eui}"


def chirpstack_uplink(
    device: DeviceSpec,
    identity: NetworkIdentity,
    time: datetime,
    fcnt: int,
    frame: Frame,
    receptions: list[Reception],
    deduplication_id: str,
    spreading_factor: int,
    frequency_hz: int,
) -> dict:
    """A ChirpStack v4 ``up`` event (application integration, JSON marshaler)."""
    ts = rfc3339(time)
    return {
        "deduplicationId": deduplication_id,
        "time": ts,
        "deviceInfo": {
            "tenantId": identity.tenant_id,
            "tenantName": identity.tenant_name,
            "applicationId": identity.application_ids[device.kind],
            "applicationName": APPLICATIONS[device.kind],
            "deviceProfileId": _device_profile_id(device.vendor, device.model),
            "deviceProfileName": f"{device.vendor} {device.model}",
            "deviceName": device.name,
            "devEui": device.dev_eui,
            "deviceClassEnabled": "CLASS_A",
            "tags": {"municipality": device.municipality},
        },
        "devAddr": dev_addr(device),
        "adr": True,
        "dr": 12 - spreading_factor,
        "fCnt": fcnt,
        "fPort": frame.fport,
        "confirmed": False,
        "data": base64.b64encode(frame.payload).decode("ascii"),
        "rxInfo": [
            {
                "gatewayId": r.gateway.gateway_id,
                "uplinkId": r.uplink_id,
                "gwTime": ts,
                "nsTime": ts,
                "rssi": r.rssi_dbm,
                "snr": r.snr_db,
                "channel": FREQUENCIES_HZ.index(frequency_hz),
                "location": {"latitude": r.gateway.lat, "longitude": r.gateway.lon},
                "context": base64.b64encode(r.uplink_id.to_bytes(4, "big")).decode("ascii"),
                "metadata": {"region_config_id": "eu868", "region_common_name": "EU868"},
                "crcStatus": "CRC_OK",
            }
            for r in receptions
        ],
        "txInfo": {
            "frequency": frequency_hz,
            "modulation": {
                "lora": {
                    "bandwidth": 125000,
                    "spreadingFactor": spreading_factor,
                    "codeRate": "CR_4_5",
                }
            },
        },
    }


def tts_uplink(
    device: DeviceSpec,
    identity: NetworkIdentity,
    time: datetime,
    fcnt: int,
    frame: Frame,
    receptions: list[Reception],
    correlation_id: str,
    spreading_factor: int,
    frequency_hz: int,
) -> dict:
    """A The Things Stack v3 ``up`` message (MQTT integration, JSON)."""
    ts = rfc3339(time)
    return {
        "end_device_ids": {
            "device_id": tts_device_id(device),
            "application_ids": {"application_id": identity.application_ids[device.kind]},
            "dev_eui": device.dev_eui.upper(),
            "join_eui": "0000000000000000",
            "dev_addr": dev_addr(device).upper(),
        },
        "correlation_ids": [f"as:up:{correlation_id}"],
        "received_at": ts,
        "uplink_message": {
            "session_key_id": base64.b64encode(bytes.fromhex(device.dev_eui)).decode("ascii"),
            "f_port": frame.fport,
            "f_cnt": fcnt,
            "frm_payload": base64.b64encode(frame.payload).decode("ascii"),
            "rx_metadata": [
                {
                    "gateway_ids": {
                        "gateway_id": f"gw-{r.gateway.gateway_id[-6:]}",
                        "eui": r.gateway.gateway_id.upper(),
                    },
                    "time": ts,
                    "timestamp": r.uplink_id,
                    "rssi": r.rssi_dbm,
                    "channel_rssi": r.rssi_dbm,
                    "snr": r.snr_db,
                    "location": {
                        "latitude": r.gateway.lat,
                        "longitude": r.gateway.lon,
                        "source": "SOURCE_REGISTRY",
                    },
                    "uplink_token": base64.b64encode(r.uplink_id.to_bytes(8, "big")).decode(),
                    "received_at": ts,
                }
                for r in receptions
            ],
            "settings": {
                "data_rate": {
                    "lora": {
                        "bandwidth": 125000,
                        "spreading_factor": spreading_factor,
                        "coding_rate": "4/5",
                    }
                },
                "frequency": str(frequency_hz),
                "time": ts,
            },
            "received_at": ts,
            "consumed_airtime": "0.061696s",
            "network_ids": {"net_id": "000013", "tenant_id": identity.tenant_id},
        },
    }
