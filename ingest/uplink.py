"""What a wire-format parser hands to the rest of ingest, and how a message is refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Rejected(Exception):  # noqa: N818 (a verdict, not a crash)
    """A message that cannot be stored: becomes a dead letter with this reason.

    `reason` is a stable snake_case code (docs/ingest.md lists them); `detail` is a
    sentence for the operator saying what was wrong.
    """

    def __init__(
        self,
        reason: str,
        detail: str,
        device_id: str | None = None,
        municipality_id: int | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.device_id = device_id
        self.municipality_id = municipality_id


@dataclass(frozen=True, slots=True)
class Sample:
    """Measurements taken at one time (None: use the uplink's receive time)."""

    time: datetime | None
    values: Mapping[str, float | bool]


@dataclass(slots=True)
class Uplink:
    """One parsed message: which device, when, and either raw bytes or values.

    LoRaWAN formats carry `payload`/`fport` (decoded with the device's decoder) and maybe
    the network server's `decoded` object; the native format carries `samples` already in
    canonical metrics.
    """

    format: str
    received_at: datetime
    # The network whose application mapping binds it (network_applications.network),
    # when it is not the format's name (ChirpStack v3 and v4 share ChirpStack's).
    network: str | None = None
    dev_eui: str | None = None
    municipality_slug: str | None = None
    external_id: str | None = None
    application_id: str | None = None
    fport: int | None = None
    payload: bytes | None = None
    decoded: Mapping[str, Any] | None = None
    samples: list[Sample] = field(default_factory=list)
    rssi_dbm: float | None = None
    snr_db: float | None = None
    # Set when the message carries no time of its own, so that `received_at` is the
    # broker's arrival: the uplink's identity (ChirpStack deduplicationId, The Things
    # Stack correlation id, native message_id). The pipeline then keys the readings on
    # the time first given to this identity, so a redelivery is stored once.
    identity: str | None = None

    @property
    def device_id(self) -> str:
        """How the device is named in logs and dead letters."""
        if self.dev_eui:
            return self.dev_eui
        return f"{self.municipality_slug}/{self.external_id}"
