"""Ingest's side of the codecs: the newest checked version of a sensor's model, compiled
once and reused, run on each uplink and its result mapped to canonical metrics.

A sensor whose device model is a municipality's own (decoder ``codec``) is decoded here
instead of by ``ingest.normalise.decode_uplink``:

* with a codec source and the uplink's bytes, the codec decodes them (in the sandbox,
  ingest/codecs/sandbox.py) and the mapping reads its ``data``;
* without a codec source (the network server decodes that model), the network server's
  object is read by the mapping.

Either way nothing is guessed: fields the mapping neither maps nor ignores are left out
and logged (``codec_unmapped_fields``, at most once per codec version every
`UNMAPPED_LOG_INTERVAL_S`), and values it cannot read make the message a
``decode_error`` dead letter, with the readable values stored.

A codec that hits its time or memory limit `PAUSE_AFTER` times in a row is paused for
`PAUSE_S`: its uplinks become dead letters at once (replayable once it is fixed) instead of
each costing the time limit, so one broken codec cannot slow ingest for everyone else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

from ingest.codecs.mapping import FieldMapping, apply_mapping, parse_mapping
from ingest.codecs.sandbox import CodecError, CompiledCodec, Decoded, Limits, UplinkInput
from ingest.uplink import Rejected, Sample, Uplink
from models.logging import log

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from ingest.devices import SensorInfo

    WithDb = Callable[[Callable[[psycopg.Connection], Any]], Any]

PAUSE_AFTER = 3
PAUSE_S = 60.0
UNMAPPED_LOG_INTERVAL_S = 600.0
MAX_CACHED = 1000
# Uplinks of one codec per sandbox call in `CodecRunner.decode_many`: at a typical 10-50 µs
# each, a full batch takes a few ms of the one-uplink time limit that the call has.
BATCH_MAX = 64

_SELECT_CODEC = """
SELECT c.version, c.script, c.mapping, dm.vendor, dm.model
FROM device_codecs c JOIN device_models dm ON dm.id = c.device_model_id
WHERE c.id = %s
"""


@dataclass(slots=True)
class LoadedCodec:
    name: str  # "<vendor> <model> v<version>", for dead letters and logs
    mapping: FieldMapping
    codec: CompiledCodec | None  # None: the network server decodes this model
    load_error: str | None = None  # the source no longer loads (e.g. tighter limits)
    failures_in_a_row: int = 0
    paused_until: float = 0.0
    unmapped_logged_at: float = field(default=float("-inf"))


@dataclass(slots=True)
class CodecResult:
    samples: list[Sample]
    problems: list[str]  # mapped fields whose values could not be read


class CodecRunner:
    """Compiled codecs by codec version id; used by the pipeline's (single) worker."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._codecs: dict[int, LoadedCodec] = {}

    def _load(self, conn: psycopg.Connection, codec_id: int) -> LoadedCodec:
        row = conn.execute(_SELECT_CODEC, (codec_id,)).fetchone()
        if row is None:
            raise Rejected("decode_error", f"codec version {codec_id} no longer exists")
        version, script, mapping, vendor, model = row
        name = f"{vendor} {model} v{version}"
        loaded = LoadedCodec(name=name, mapping=parse_mapping(mapping), codec=None)
        if script is not None:
            try:
                loaded.codec = CompiledCodec(script, self.limits)
            except CodecError as exc:
                loaded.load_error = str(exc)
        return loaded

    def decode(
        self,
        with_db: WithDb,
        uplink: Uplink,
        sensor: SensorInfo,
    ) -> CodecResult:
        """The uplink's measurements by its model's codec and mapping; Rejected
        ('decode_error') when neither can read it."""
        return self._decode(self._loaded(with_db, sensor), uplink, sensor, None)

    def decode_many(
        self, with_db: WithDb, items: Sequence[tuple[Uplink, SensorInfo]]
    ) -> list[CodecResult | Rejected]:
        """`decode` of each (uplink, sensor), in order, with the JavaScript of one codec
        version run for up to `BATCH_MAX` uplinks of one municipality in one sandbox call
        (CompiledCodec.decode_many); the result or refusal of each is what `decode` would
        give it alone. Database errors propagate."""
        loaded_of: list[LoadedCodec | Rejected] = []
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (uplink, sensor) in enumerate(items):
            try:
                loaded = self._loaded(with_db, sensor)
            except Rejected as rejected:
                loaded_of.append(rejected)
                continue
            loaded_of.append(loaded)
            if loaded.codec is not None and uplink.payload is not None and uplink.fport is not None:
                assert sensor.codec_id is not None
                groups.setdefault((sensor.codec_id, sensor.municipality_id), []).append(index)
        decoded: dict[int, Decoded | CodecError] = {}
        for indices in groups.values():
            codec = loaded_of[indices[0]]
            assert isinstance(codec, LoadedCodec) and codec.codec is not None
            if len(indices) < 2 or codec.paused_until > time.monotonic():
                continue
            for start in range(0, len(indices), BATCH_MAX):
                chunk = indices[start : start + BATCH_MAX]
                inputs = [_codec_input(items[i][0]) for i in chunk]
                results = codec.codec.decode_many(inputs)
                if results is not None:  # None: each is decoded alone below
                    decoded.update(zip(chunk, results, strict=True))
        outcomes: list[CodecResult | Rejected] = []
        for index, (uplink, sensor) in enumerate(items):
            loaded_or_refusal = loaded_of[index]
            if isinstance(loaded_or_refusal, Rejected):
                outcomes.append(loaded_or_refusal)
                continue
            try:
                outcomes.append(self._decode(loaded_or_refusal, uplink, sensor, decoded.get(index)))
            except Rejected as rejected:
                outcomes.append(rejected)
        return outcomes

    def _loaded(self, with_db: WithDb, sensor: SensorInfo) -> LoadedCodec:
        codec_id = sensor.codec_id
        assert codec_id is not None
        loaded = self._codecs.get(codec_id)
        if loaded is None:
            if len(self._codecs) >= MAX_CACHED:
                self._codecs.clear()  # versions replaced long ago; the live ones reload
            loaded = with_db(lambda conn: self._load(conn, codec_id))
            self._codecs[codec_id] = loaded
        return loaded

    def _decode(
        self,
        loaded: LoadedCodec,
        uplink: Uplink,
        sensor: SensorInfo,
        decoded: Decoded | CodecError | None,
    ) -> CodecResult:
        data = self._data(loaded, uplink, sensor, decoded)
        mapped = apply_mapping(loaded.mapping, data)
        if mapped.unmapped:
            now = time.monotonic()
            if now - loaded.unmapped_logged_at >= UNMAPPED_LOG_INTERVAL_S:
                loaded.unmapped_logged_at = now
                log.warning(
                    "codec_unmapped_fields",
                    codec=loaded.name,
                    fields=",".join(mapped.unmapped)[:300],
                    dev_eui=uplink.dev_eui,
                )
        problems = [f"{loaded.name}: {p}" for p in mapped.problems]
        if problems and not mapped.values:
            raise _refuse(uplink, sensor, "; ".join(problems))
        return CodecResult([Sample(None, mapped.values)], problems)

    def _data(
        self,
        loaded: LoadedCodec,
        uplink: Uplink,
        sensor: SensorInfo,
        decoded: Decoded | CodecError | None,
    ) -> dict:
        """The codec's data for the uplink; `decoded` is the codec's result when a batch
        call made it already (None: run the codec now)."""
        if loaded.codec is None and loaded.load_error is None:
            if uplink.decoded is None:
                raise _refuse(
                    uplink,
                    sensor,
                    f"{loaded.name} is decoded by the network server, which sent no decoded object",
                )
            return dict(uplink.decoded)
        if loaded.load_error is not None:
            raise _refuse(uplink, sensor, f"{loaded.name}: {loaded.load_error}")
        if uplink.payload is None or uplink.fport is None:
            raise _refuse(uplink, sensor, f"{loaded.name}: the uplink has no payload and fPort")
        now = time.monotonic()
        if loaded.paused_until > now:
            raise _refuse(
                uplink,
                sensor,
                f"{loaded.name} is paused for {loaded.paused_until - now:.0f} s after "
                f"{PAUSE_AFTER} runs in a row stopped at its limits; fix the codec, then replay",
            )
        assert loaded.codec is not None
        try:
            if decoded is None:
                decoded = loaded.codec.decode(*_codec_input(uplink))
            elif isinstance(decoded, CodecError):
                raise decoded
        except CodecError as exc:
            if exc.at_limit:
                loaded.failures_in_a_row += 1
                if loaded.failures_in_a_row >= PAUSE_AFTER:
                    loaded.paused_until = now + PAUSE_S
                    loaded.failures_in_a_row = 0
                    log.error("codec_paused", codec=loaded.name, seconds=PAUSE_S, error=str(exc))
            raise _refuse(uplink, sensor, f"{loaded.name}: {exc}") from None
        loaded.failures_in_a_row = 0
        return decoded.data


def _codec_input(uplink: Uplink) -> UplinkInput:
    assert uplink.payload is not None and uplink.fport is not None
    return (uplink.payload, uplink.fport, uplink.received_at.isoformat(), None)


def _refuse(uplink: Uplink, sensor: SensorInfo, detail: str) -> Rejected:
    return Rejected(
        "decode_error", detail, device_id=uplink.device_id, municipality_id=sensor.municipality_id
    )
