"""The fleet's uplinks in simulated time, step by step, as MQTT topic + JSON bytes.

``FleetStream`` advances the physics of every sensor by a fixed step, finds the devices
whose report is due (climate and bins on their interval, parking bays on change and on
their heartbeat), encodes the vendor payload and wraps it in the municipality's network
server envelope. It also injects what real deployments produce: the same uplink seen by
two integrations (a duplicate that differs only in the gateway) and a small share of
malformed messages. Everything is deterministic for a given fleet, start and seed.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from simulator import physics
from simulator.encoders import ENCODERS, Frame, truncate_frame
from simulator.envelopes import (
    FREQUENCIES_HZ,
    NetworkIdentity,
    Reception,
    chirpstack_uplink,
    network_identities,
    tts_uplink,
    uplink_topic,
)
from simulator.fleet import DeviceSpec, Fleet

LOCAL_TZ = ZoneInfo("Europe/Copenhagen")

# Message kinds. Only UPLINK and DUPLICATE carry data that should be stored (once).
UPLINK = "uplink"
DUPLICATE = "duplicate"
BAD_JSON = "bad_json"
TRUNCATED_PAYLOAD = "truncated_payload"
UNKNOWN_DEVICE = "unknown_device"
MALFORMED_KINDS = (BAD_JSON, TRUNCATED_PAYLOAD, UNKNOWN_DEVICE)

# What each product puts in its periodic report (canonical metric names).
REPORTED_METRICS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Elsys", "ERS CO2"): (
        "temperature_c",
        "humidity_pct",
        "light_lux",
        "motion_count",
        "co2_ppm",
        "battery_v",
    ),
    ("Milesight", "AM107"): (
        "battery_pct",
        "temperature_c",
        "humidity_pct",
        "motion_count",
        "light_lux",
        "co2_ppm",
        "tvoc_ppb",
        "pressure_pa",
    ),
    ("Decentlab", "DL-IAM"): (
        "battery_v",
        "temperature_c",
        "humidity_pct",
        "pressure_pa",
        "light_lux",
        "co2_ppm",
        "motion_count",
        "tvoc_ppb",
    ),
    ("Decentlab", "DL-MBX"): ("distance_mm", "battery_v"),
    ("Bosch", "TPS110"): ("occupied", "temperature_c"),
    ("Nwave", "NPS-3.10-SM"): ("occupied",),
}


@dataclass(frozen=True, slots=True)
class Uplink:
    """One MQTT message the simulator publishes, with what it is for accounting."""

    topic: str
    payload: bytes
    kind: str
    dev_eui: str
    time: datetime
    frame: Frame | None


@dataclass
class _Kind:
    """Per-kind device arrays: the devices, when each reports next, its frame counter."""

    devices: list[DeviceSpec]
    next_due_s: np.ndarray
    interval_s: np.ndarray

    def __len__(self) -> int:
        return len(self.devices)


@dataclass
class StreamCounts:
    """How many messages of each kind the stream has produced."""

    by_kind: Counter = field(default_factory=Counter)

    @property
    def stored_uplinks(self) -> int:
        """Distinct uplinks that should end up as readings."""
        return self.by_kind[UPLINK]

    @property
    def malformed(self) -> int:
        return sum(self.by_kind[k] for k in MALFORMED_KINDS)


class FleetStream:
    """Uplinks of `fleet` from `start` on, one simulated step at a time."""

    def __init__(
        self,
        fleet: Fleet,
        start: datetime,
        *,
        seed: int | None = None,
        step_s: float = 60.0,
        duplicate_share: float = 0.02,
        malformed_share: float = 0.005,
        topic_prefix: str = "",
    ) -> None:
        if not 1.0 <= step_s <= 600.0:
            raise ValueError("step_s must be between 1 and 600 seconds")
        if not (0.0 <= duplicate_share <= 1.0 and 0.0 <= malformed_share <= 1.0):
            raise ValueError("duplicate_share and malformed_share are fractions in [0, 1]")
        self.fleet = fleet
        self.step_s = float(step_s)
        self.duplicate_share = duplicate_share
        self.malformed_share = malformed_share
        self.topic_prefix = topic_prefix
        self.counts = StreamCounts()
        self.now_s = start.timestamp()
        seed = fleet.seed if seed is None else seed
        self._rng = np.random.default_rng([seed, 1])
        self._envelope_rng = random.Random(seed * 1_000_003 + 7)
        self._identities: dict[str, NetworkIdentity] = network_identities(fleet)
        self._fcnt: dict[str, int] = {
            d.dev_eui: int(n)
            for d, n in zip(
                fleet.devices, self._rng.integers(0, 5000, len(fleet.devices)), strict=True
            )
        }
        self._radio = {d.dev_eui: self._radio_profile() for d in fleet.devices}
        self._setup_climate(fleet.of_kind("climate"))
        self._setup_bins(fleet.of_kind("bin"))
        self._setup_parking(fleet.of_kind("parking"))

    # --- set-up -----------------------------------------------------------------------

    def _schedule(self, devices: list[DeviceSpec]) -> _Kind:
        interval = np.array([d.interval_s for d in devices], dtype=float)
        first = self.now_s + self._rng.uniform(0, 1, len(devices)) * interval
        return _Kind(devices, first, interval)

    def _setup_climate(self, devices: list[DeviceSpec]) -> None:
        n = len(devices)
        rng = self._rng
        self.climate = self._schedule(devices)
        self.capacity = np.array([d.capacity_persons or 24 for d in devices], dtype=float)
        self.last_lesson_end_h = rng.choice([12.5833, 13.3333, 14.25], n)
        self.attendance = rng.uniform(0.8, 1.0, n)
        # Some rooms are badly ventilated: that is what the climate alerts are for.
        self.occupied_ach = rng.choice([1.2, 2.0, 3.0, 4.5], n, p=[0.2, 0.3, 0.3, 0.2])
        self.air = physics.initial_climate(n)

    def _setup_bins(self, devices: list[DeviceSpec]) -> None:
        n = len(devices)
        rng = self._rng
        self.bins = self._schedule(devices)
        self.bin_depth_mm = np.array([d.bin_depth_mm or 1000.0 for d in devices])
        self.mount_offset_mm = np.array([d.mount_offset_mm or 80.0 for d in devices])
        self.fill_rate_pct_per_day = rng.lognormal(np.log(22.0), 0.5, n)
        self.fill_pct = rng.uniform(0, 60, n)
        days = np.zeros((n, 7), dtype=bool)
        weekly = rng.integers(0, 5, n)
        days[np.arange(n), weekly] = True
        busy = self.fill_rate_pct_per_day > 35.0  # busy bins get a second round
        days[busy, (weekly[busy] + 3) % 5] = True
        self.collection_days = days
        self.collection_hour = rng.uniform(7.0, 14.0, n)

    def _setup_parking(self, devices: list[DeviceSpec]) -> None:
        self.parking = self._schedule(devices)
        self.commuter = np.array([d.area_profile == "commuter" for d in devices], dtype=bool)
        self.mean_stay_h = np.where(
            self.commuter, physics.MEAN_STAY_H["commuter"], physics.MEAN_STAY_H["shopping"]
        )
        hour, weekday = _local(self.now_s)
        target = physics.parking_target_occupancy(hour, weekday, self.commuter)
        self.occupied = self._rng.random(len(devices)) < target

    def _radio_profile(self) -> tuple[int, float, int]:
        # Spreading factor, mean RSSI (dBm) and frequency of one device's link.
        sf = int(self._rng.choice([7, 8, 9, 10], p=[0.5, 0.25, 0.15, 0.1]))
        rssi = float(self._rng.uniform(-118, -65))
        return sf, rssi, FREQUENCIES_HZ[int(self._rng.integers(0, len(FREQUENCIES_HZ)))]

    # --- stepping ---------------------------------------------------------------------

    def uplinks(self) -> Iterator[Uplink]:
        """Every message from now on, in time order; never ends."""
        while True:
            yield from self.step()

    def step(self) -> list[Uplink]:
        """Advance the fleet by one step; the messages it sent during it, in time order."""
        t0, t1 = self.now_s, self.now_s + self.step_s
        hour0, _ = _local(t0)
        hour, weekday = _local(t1)
        due: list[tuple[float, DeviceSpec, dict[str, float], bool]] = []
        due += self._step_climate(t1, hour, weekday)
        due += self._step_bins(t1, hour0, hour, weekday)
        due += self._step_parking(t0, t1, hour, weekday)
        due.sort(key=lambda item: item[0])
        self.now_s = t1
        messages: list[Uplink] = []
        for time_s, device, values, heartbeat in due:
            messages.extend(self._messages_for(time_s, device, values, heartbeat))
        return messages

    def _take_due(self, kind: _Kind, t1: float) -> np.ndarray:
        due = np.flatnonzero(kind.next_due_s <= t1)
        return due

    def _step_climate(self, t1: float, hour: float, weekday: int) -> list:
        if not len(self.climate):
            return []
        occupants = physics.school_occupants(
            hour, weekday, self.capacity, self.last_lesson_end_h, self.attendance
        )
        ach = physics.ventilation_ach(hour, weekday, occupants, self.occupied_ach)
        setpoint = physics.heating_setpoint_c(hour, weekday)
        self.air = physics.step_climate(self.air, occupants, ach, setpoint, self.step_s)
        measured = physics.measure_climate(
            self.air, occupants, hour, physics_interval(self.climate), self._rng
        )
        due = self._take_due(self.climate, t1)
        out = []
        for i in due:
            device = self.climate.devices[i]
            metrics = REPORTED_METRICS[(device.vendor, device.model)]
            values = {m: float(measured[m][i]) for m in metrics}
            out.append((float(self.climate.next_due_s[i]), device, values, False))
        self.climate.next_due_s[due] += self.climate.interval_s[due]
        return out

    def _step_bins(self, t1: float, hour0: float, hour: float, weekday: int) -> list:
        if not len(self.bins):
            return []
        emptied = physics.bins_collected(
            hour0, hour, weekday, self.collection_days, self.collection_hour
        )
        residue = self._rng.uniform(0, 3, len(self.bins))
        self.fill_pct = np.where(emptied, residue, self.fill_pct)
        self.fill_pct = physics.step_bins(
            self.fill_pct, self.fill_rate_pct_per_day, hour, weekday, self.step_s, self._rng
        )
        distance = physics.bin_distance_mm(
            self.fill_pct, self.bin_depth_mm, self.mount_offset_mm, self._rng
        )
        battery = 3.0 - self._rng.uniform(0, 0.05, len(self.bins))
        due = self._take_due(self.bins, t1)
        out = [
            (
                float(self.bins.next_due_s[i]),
                self.bins.devices[i],
                {"distance_mm": float(distance[i]), "battery_v": float(battery[i])},
                False,
            )
            for i in due
        ]
        self.bins.next_due_s[due] += self.bins.interval_s[due]
        return out

    def _step_parking(self, t0: float, t1: float, hour: float, weekday: int) -> list:
        if not len(self.parking):
            return []
        target = physics.parking_target_occupancy(hour, weekday, self.commuter)
        occupied = physics.step_parking(
            self.occupied, target, self.mean_stay_h, self.step_s, self._rng
        )
        changed = occupied != self.occupied
        self.occupied = occupied
        heartbeat = (self.parking.next_due_s <= t1) & ~changed
        # A change is reported a few seconds after the car stopped, somewhere in the step.
        event_s = t0 + self._rng.uniform(0, self.step_s, len(self.parking))
        temperature_c = np.round(8.0 + 6.0 * np.sin(np.pi * (hour - 9.0) / 12.0))
        out = []
        for i in np.flatnonzero(changed | heartbeat):
            device = self.parking.devices[i]
            values = {"occupied": float(occupied[i]), "temperature_c": float(temperature_c)}
            at = float(self.parking.next_due_s[i]) if heartbeat[i] else float(event_s[i])
            out.append((at, device, values, bool(heartbeat[i])))
        reported = changed | heartbeat
        # Both messages restart the heartbeat timer, as the devices do.
        self.parking.next_due_s[reported] = (
            np.where(heartbeat, self.parking.next_due_s, event_s)[reported]
            + self.parking.interval_s[reported]
        )
        return out

    # --- messages ---------------------------------------------------------------------

    def _messages_for(
        self, time_s: float, device: DeviceSpec, values: dict[str, float], heartbeat: bool
    ) -> list[Uplink]:
        encoder = ENCODERS[(device.vendor, device.model)]
        frame = encoder(values, heartbeat, device.serial)
        self._fcnt[device.dev_eui] += 1
        rnd = self._envelope_rng
        kind = UPLINK
        extra: str | None = None
        if rnd.random() < self.malformed_share:
            choice = rnd.choice(MALFORMED_KINDS)
            if choice == TRUNCATED_PAYLOAD:
                cut = truncate_frame(frame, device.vendor, device.model)
                if cut is not None:
                    kind, frame = TRUNCATED_PAYLOAD, cut
            else:
                extra = choice
        time = datetime.fromtimestamp(round(time_s, 3), UTC)
        receptions = self._receptions(device)
        envelope = self._envelope(device, time, frame, receptions)
        topic = uplink_topic(device, self._identities[device.municipality], self.topic_prefix)
        messages = [Uplink(topic, orjson.dumps(envelope), kind, device.dev_eui, time, frame)]
        if kind == UPLINK and rnd.random() < self.duplicate_share:
            # A second integration saw the same uplink through another gateway: same
            # time, fCnt, deduplication id and payload, only rxInfo differs.
            other = self._receptions(device, exclude=receptions[0].gateway.gateway_id)
            duplicate = _with_receptions(envelope, device, other[:1])
            messages.append(
                Uplink(topic, orjson.dumps(duplicate), DUPLICATE, device.dev_eui, time, frame)
            )
        if extra == BAD_JSON:
            body = messages[0].payload
            cut = rnd.randrange(10, len(body) - 5)
            messages.append(Uplink(topic, body[:cut], BAD_JSON, device.dev_eui, time, None))
        elif extra == UNKNOWN_DEVICE:
            ghost = replace(device, dev_eui=f"ffff{rnd.getrandbits(48):012x}")
            ghost_topic = uplink_topic(
                ghost, self._identities[device.municipality], self.topic_prefix
            )
            body = orjson.dumps(self._envelope(ghost, time, frame, receptions))
            messages.append(Uplink(ghost_topic, body, UNKNOWN_DEVICE, ghost.dev_eui, time, frame))
        for m in messages:
            self.counts.by_kind[m.kind] += 1
        return messages

    def _receptions(self, device: DeviceSpec, exclude: str | None = None) -> list[Reception]:
        rnd = self._envelope_rng
        gateways = [
            g for g in self._identities[device.municipality].gateways if g.gateway_id != exclude
        ]
        heard_by = rnd.sample(gateways, rnd.randint(1, len(gateways)))
        _, mean_rssi, _ = self._radio[device.dev_eui]
        return [
            Reception(
                g,
                int(mean_rssi + rnd.gauss(0, 4)),
                round(rnd.gauss(5.0, 3.0), 1),
                rnd.getrandbits(32),
            )
            for g in heard_by
        ]

    def _envelope(
        self, device: DeviceSpec, time: datetime, frame: Frame, receptions: list[Reception]
    ) -> dict:
        sf, _, frequency = self._radio.get(device.dev_eui, (9, -100.0, FREQUENCIES_HZ[0]))
        identity = self._identities[device.municipality]
        fcnt = self._fcnt.get(device.dev_eui, 1)
        event_id = str(uuid.UUID(int=self._envelope_rng.getrandbits(128), version=4))
        build = chirpstack_uplink if device.network == "chirpstack" else tts_uplink
        return build(device, identity, time, fcnt, frame, receptions, event_id, sf, frequency)


def _with_receptions(envelope: dict, device: DeviceSpec, receptions: list[Reception]) -> dict:
    """The same event as received by other gateways (only the radio metadata differs)."""
    copy = orjson.loads(orjson.dumps(envelope))
    if device.network == "chirpstack":
        template = copy["rxInfo"][0]
        copy["rxInfo"] = [
            template
            | {
                "gatewayId": r.gateway.gateway_id,
                "uplinkId": r.uplink_id,
                "rssi": r.rssi_dbm,
                "snr": r.snr_db,
                "location": {"latitude": r.gateway.lat, "longitude": r.gateway.lon},
            }
            for r in receptions
        ]
    else:
        meta = copy["uplink_message"]["rx_metadata"][0]
        copy["uplink_message"]["rx_metadata"] = [
            meta
            | {
                "gateway_ids": {
                    "gateway_id": f"gw-{r.gateway.gateway_id[-6:]}",
                    "eui": r.gateway.gateway_id.upper(),
                },
                "rssi": r.rssi_dbm,
                "channel_rssi": r.rssi_dbm,
                "snr": r.snr_db,
                "timestamp": r.uplink_id,
            }
            for r in receptions
        ]
    return copy


def physics_interval(kind: _Kind) -> float:
    """The (median) reporting interval of a kind, seconds; motion is counted over it."""
    return float(np.median(kind.interval_s)) if len(kind) else 600.0


def _local(epoch_s: float) -> tuple[float, int]:
    """Local hour of day (float) and weekday (0 = Monday) in Denmark."""
    t = datetime.fromtimestamp(epoch_s, LOCAL_TZ)
    return t.hour + t.minute / 60.0 + t.second / 3600.0, t.weekday()
