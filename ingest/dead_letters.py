"""How dead letters are written, and how many: text made safe, payloads capped, repeats
sampled.

A broken device repeats its mistake with every uplink, and a flood of one (device, reason)
would otherwise fill ``dead_letters`` without end. Of each (device, reason) per clock hour
the first `samples_per_hour` letters are stored whole (bytes, detail); the rest are
counted in ``dead_letter_repeats`` (key, reason, hour: how many, the last arrival), in
the same transaction as the batch. Letters that name no device are keyed by their topic.
The count is per ingest process: with K processes up to K × `samples_per_hour` letters of
a key may be stored in an hour.

A message is one letter, however often the broker delivers it: each letter carries the
SHA-256 of its topic, a NUL byte and its whole payload (``fingerprint``, unique), and a
letter whose fingerprint is stored already is dropped in the database. So a redelivery
after a lost acknowledgement (the broker or ingest killed) adds nothing, and the same bytes
published twice on one topic are taken as one message, as their readings would be.

Payloads longer than `max_payload_bytes` are stored cut, with their size in
``payload_truncated_from``. With the default (IOT_MAX_MESSAGE_BYTES) only messages that
are refused as ``oversized`` anyway are cut, so every replayable letter is kept whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from ingest.dbtext import db_text, db_text_or_none


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    topic: str
    payload: bytes
    reason: str
    detail: str
    municipality_id: int | None
    device_id: str | None
    received_at: datetime


_LETTER_COLUMNS = (
    "topic, payload, reason, detail, municipality_id, device_id, received_at, "
    "payload_truncated_from, fingerprint"
)
# Letters are copied here, then inserted in arrival order, skipping fingerprints stored
# already (COPY itself would fail the whole batch on the unique index).
_CREATE_INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS dead_letters_incoming (
    n bigint GENERATED ALWAYS AS IDENTITY,
    topic text, payload bytea, reason text, detail text, municipality_id integer,
    device_id text, received_at timestamptz, payload_truncated_from integer,
    fingerprint bytea
) ON COMMIT DELETE ROWS
"""
_COPY_LETTERS = f"COPY dead_letters_incoming ({_LETTER_COLUMNS}) FROM STDIN"
_INSERT_LETTERS = f"""
INSERT INTO dead_letters ({_LETTER_COLUMNS})
SELECT {_LETTER_COLUMNS} FROM dead_letters_incoming ORDER BY n
ON CONFLICT (fingerprint) DO NOTHING
"""  # noqa: S608 (module constants, no input)
_UPSERT_REPEATS = """
INSERT INTO dead_letter_repeats
    (key, reason, hour, municipality_id, device_id, repeats, last_received_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (key, reason, hour) DO UPDATE
SET repeats = dead_letter_repeats.repeats + EXCLUDED.repeats,
    last_received_at = greatest(dead_letter_repeats.last_received_at, EXCLUDED.last_received_at),
    municipality_id = coalesce(dead_letter_repeats.municipality_id, EXCLUDED.municipality_id)
"""


def fingerprint(topic: str, payload: bytes) -> bytes:
    """What makes a letter the same message: SHA-256 of the topic, NUL, the whole payload."""
    return hashlib.sha256(topic.encode("utf-8", "surrogatepass") + b"\0" + payload).digest()


Key = tuple[str, str, datetime]  # (device id or topic, reason, hour)


@dataclass(slots=True)
class Repeat:
    municipality_id: int | None
    device_id: str | None
    count: int = 0
    last_received_at: datetime | None = None


@dataclass(slots=True)
class LetterPlan:
    """Which of a write's letters are stored and which only counted."""

    stored: list[DeadLetterRow] = field(default_factory=list)
    repeats: dict[Key, Repeat] = field(default_factory=dict)
    stored_per_key: dict[Key, int] = field(default_factory=dict)


def _key(letter: DeadLetterRow) -> Key:
    hour = letter.received_at.replace(minute=0, second=0, microsecond=0)
    return (db_text(letter.device_id or letter.topic, 200), letter.reason, hour)


class DeadLetterPolicy:
    """Sampling state and limits of one writer (one ingest process)."""

    def __init__(self, samples_per_hour: int = 20, max_payload_bytes: int = 64 * 1024) -> None:
        self.samples_per_hour = samples_per_hour
        self.max_payload_bytes = max_payload_bytes
        self._stored: dict[Key, int] = {}  # letters stored per key in its hour
        self._hour: datetime | None = None

    def plan(self, letters: Sequence[DeadLetterRow]) -> LetterPlan:
        """Decide, without changing state, which letters to store (see `committed`)."""
        plan = LetterPlan()
        for letter in letters:
            key = _key(letter)
            stored = self._stored.get(key, 0) + plan.stored_per_key.get(key, 0)
            if stored < self.samples_per_hour:
                plan.stored.append(letter)
                plan.stored_per_key[key] = plan.stored_per_key.get(key, 0) + 1
                continue
            repeat = plan.repeats.get(key)
            if repeat is None:
                repeat = plan.repeats[key] = Repeat(letter.municipality_id, letter.device_id)
            repeat.count += 1
            if repeat.last_received_at is None or letter.received_at > repeat.last_received_at:
                repeat.last_received_at = letter.received_at
        return plan

    def committed(self, plan: LetterPlan) -> None:
        """Count the plan's stored letters, once its transaction has committed."""
        for key, n in plan.stored_per_key.items():
            hour = key[2]
            if self._hour is None or hour > self._hour:
                # A new hour: forget the counts of hours before the previous one.
                self._stored = {k: v for k, v in self._stored.items() if k[2] >= hour}
                self._hour = hour
            self._stored[key] = self._stored.get(key, 0) + n

    def write(self, cur: psycopg.Cursor, plan: LetterPlan) -> None:
        """Store the plan's letters and add its repeats, in the caller's transaction."""
        if plan.stored:
            cap = self.max_payload_bytes
            cur.execute(_CREATE_INCOMING)
            with cur.copy(_COPY_LETTERS) as copy:
                for d in plan.stored:
                    truncated_from = len(d.payload) if len(d.payload) > cap else None
                    copy.write_row(
                        (
                            db_text(d.topic, 1000),
                            d.payload[:cap] if truncated_from else d.payload,
                            db_text(d.reason, 100),
                            db_text(d.detail),
                            d.municipality_id,
                            db_text_or_none(d.device_id, 200),
                            d.received_at,
                            truncated_from,
                            fingerprint(d.topic, d.payload),
                        )
                    )
            cur.execute(_INSERT_LETTERS)
        if plan.repeats:
            cur.executemany(
                _UPSERT_REPEATS,
                [
                    (
                        key,
                        reason,
                        hour,
                        r.municipality_id,
                        db_text_or_none(r.device_id, 200),
                        r.count,
                        r.last_received_at,
                    )
                    for (key, reason, hour), r in plan.repeats.items()
                ],
            )
