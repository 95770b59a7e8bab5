"""From a parsed uplink and its sensor to validated rows, or the reason there are none.

Steps: decode (network server's object first, the device model's decoder otherwise),
derive fill level for bins, check every value against its metric's physical range and
the sample time against the clock. Values that pass become rows; values that fail are
reported so that the message is dead-lettered with them (the good values are kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.decoders import DecodeError, Decoder, get_decoder
from domain.decoders.generic import normalise_object
from domain.metrics import METRICS, Metric
from ingest.devices import SensorInfo
from ingest.uplink import Rejected, Sample, Uplink

Row = tuple[datetime, int, int, float]  # time, sensor_id, metric_id, value
# Metric name → (metric id, lowest and highest value accepted, metric) for the metrics
# this database knows; the bounds are unpacked with the id, as every value is checked.
MetricTable = dict[str, tuple[int, float, float, Metric]]


def metric_table(metric_ids: dict[str, int]) -> MetricTable:
    """The lookup `to_rows` uses, built once from the database's metric ids."""
    return {
        name: (metric_ids[name], metric.min_value, metric.max_value, metric)
        for name, metric in METRICS.items()
        if name in metric_ids
    }


@dataclass(slots=True)
class Normalised:
    rows: list[Row]
    refused: list[str]  # "metric=value (why)" for values kept out of readings
    refused_reason: str | None  # out_of_range | unknown_metric | ... when refused


def decode_uplink(uplink: Uplink, sensor: SensorInfo) -> list[Sample]:
    """The uplink's measurements as samples; Rejected('decode_error') when unreadable."""
    if uplink.samples:
        return uplink.samples
    errors: list[str] = []
    if uplink.decoded is not None:
        try:
            return [Sample(None, normalise_object(uplink.decoded))]
        except DecodeError as exc:
            errors.append(f"network server's decoded object: {exc}")
    if sensor.decoder and sensor.decoder != "generic" and uplink.payload is not None:
        if uplink.fport is None:
            errors.append("uplink has no fPort (a MAC-only frame?)")
        else:
            try:
                decoder = _decoders.get(sensor.decoder) or _decoder(sensor.decoder)
                return [Sample(None, decoder(uplink.payload, uplink.fport))]
            except DecodeError as exc:
                errors.append(str(exc))
    elif not sensor.decoder:
        errors.append("the sensor has no device model, so no payload decoder")
    elif uplink.decoded is None:
        errors.append("the device decodes in the network server but sent no decoded object")
    raise Rejected(
        "decode_error",
        "; ".join(errors),
        device_id=uplink.device_id,
        municipality_id=sensor.municipality_id,
    )


# Decoders by key as first asked for: one dict lookup per uplink.
_decoders: dict[str, Decoder] = {}


def _decoder(key: str) -> Decoder:
    decoder = _decoders[key] = get_decoder(key)  # DecodeError when there is none
    return decoder


def to_rows(
    uplink: Uplink,
    sensor: SensorInfo,
    samples: list[Sample],
    metrics: MetricTable,
    now: datetime,
    max_future_skew: timedelta,
    max_age: timedelta,
) -> Normalised:
    """Validated rows for `samples`; raises Rejected when nothing at all can be stored."""
    rows: list[Row] = []
    refused: list[str] = []
    reasons: set[str] = set()
    sensor_id = sensor.sensor_id
    append = rows.append
    for sample in samples:
        at = sample.time or uplink.received_at
        if at > now + max_future_skew:
            raise _reject(
                uplink,
                sensor,
                "future_timestamp",
                f"sample time {at.isoformat()} is "
                f"more than {max_future_skew.total_seconds():.0f} s ahead of the clock",
            )
        if at < now - max_age:
            raise _reject(
                uplink,
                sensor,
                "too_old",
                f"sample time {at.isoformat()} is older than the accepted {max_age.days} days",
            )
        values = sample.values
        if sensor.kind == "bin" and sensor.bin_depth_mm and "distance_mm" in values:
            values = {
                **values,
                "fill_pct": fill_level_of(
                    float(values["distance_mm"]), sensor.bin_depth_mm, sensor.mount_offset_mm or 0
                ),
            }
        for name, raw in values.items():
            known = metrics.get(name)
            if known is None:
                refused.append(f"{name}={raw} (not a known metric)")
                reasons.add("unknown_metric")
                continue
            metric_id, lowest, highest, metric = known
            value = float(raw)
            # Comparisons with NaN are false and the bounds are finite, so this refuses
            # NaN and infinities too.
            if not lowest <= value <= highest:
                refused.append(
                    f"{name}={raw} (outside {metric.min_value:g}..{metric.max_value:g} "
                    f"{metric.unit})"
                )
                reasons.add("out_of_range")
                continue
            append((at, sensor_id, metric_id, value))
    measured = bool(rows)
    if uplink.rssi_dbm is not None:
        # Radio quality is stored even for frames that carry no measurement (status frames).
        for name, value in (("rssi_dbm", uplink.rssi_dbm), ("snr_db", uplink.snr_db)):
            known = metrics.get(name)
            if value is not None and known is not None and known[1] <= value <= known[2]:
                append((uplink.received_at, sensor_id, known[0], value))
    if not rows and not refused:
        if samples:
            # The decoder read a valid frame that carries device information only (a
            # settings or status frame): nothing to store, and nothing wrong either.
            return Normalised(rows=[], refused=[], refused_reason=None)
        raise _reject(uplink, sensor, "no_measurements", "the message carried no measurements")
    if not measured and refused:
        reason = "out_of_range" if "out_of_range" in reasons else "unknown_metric"
        raise _reject(uplink, sensor, reason, "; ".join(refused))
    reason = None
    if refused and rows:
        reason = "out_of_range" if "out_of_range" in reasons else "unknown_metric"
    return Normalised(rows=rows, refused=refused, refused_reason=reason)


def fill_level_of(distance_mm: float, bin_depth_mm: float, mount_offset_mm: float) -> float:
    """`analytics.bins.fill_level_pct` for one reading, in plain floats: NumPy's per-call
    overhead on a scalar is several times the arithmetic, once per bin uplink."""
    if not bin_depth_mm > 0:
        return math.nan
    pct = 100.0 * (1.0 - (distance_mm - mount_offset_mm) / bin_depth_mm)
    return math.nan if math.isnan(pct) else min(max(pct, 0.0), 100.0)


def _reject(uplink: Uplink, sensor: SensorInfo, reason: str, detail: str) -> Rejected:
    return Rejected(
        reason, detail, device_id=uplink.device_id, municipality_id=sensor.municipality_id
    )
