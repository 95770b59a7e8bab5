"""Replay dead letters through the live pipeline, e.g. after registering the device.

A replayed message is judged exactly as a live one (ingest.pipeline). When it now yields
rows, they are stored (idempotently) and the dead letter is marked ``replayed_at``; when
it is still refused, the dead letter keeps its bytes and gets the new reason and detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from domain.metrics import sync_metrics
from ingest.dbtext import db_text
from ingest.pipeline import Pipeline
from ingest.writer import BatchWriter
from models.settings import Settings


@dataclass(frozen=True, slots=True)
class ReplayResult:
    dead_letter_id: int
    stored: bool
    readings: int
    reason: str | None  # the reason it is still a dead letter, when it is
    detail: str


def replay(
    conn: psycopg.Connection, dead_letter_ids: list[int], settings: Settings
) -> list[ReplayResult]:
    """Replay the given dead letters (not yet replayed ones only), in one transaction each.

    `conn` must be an autocommit connection. Callers check ownership before calling.
    """
    pipeline = Pipeline(settings, sync_metrics(conn))
    writer = BatchWriter()
    results = []
    for dead_letter_id in dead_letter_ids:
        with conn.transaction():
            row = conn.execute(
                "SELECT topic, payload, received_at FROM dead_letters "
                "WHERE id = %s AND replayed_at IS NULL FOR UPDATE",
                (dead_letter_id,),
            ).fetchone()
            if row is None:
                continue
            topic, payload, received_at = row
            outcome = pipeline.handle(lambda op: op(conn), topic, bytes(payload), received_at)
            inserted = 0
            if outcome.rows:
                inserted = writer.write(conn, outcome.rows, []).inserted
            if outcome.rejection is None:
                conn.execute(
                    "UPDATE dead_letters SET replayed_at = now() WHERE id = %s", (dead_letter_id,)
                )
                results.append(ReplayResult(dead_letter_id, True, inserted, None, "stored"))
            else:
                rejection = outcome.rejection
                pipeline.attribute(lambda op: op(conn), topic, rejection)
                conn.execute(
                    "UPDATE dead_letters SET reason = %s, detail = %s, "
                    "municipality_id = coalesce(%s, municipality_id) WHERE id = %s",
                    (
                        rejection.reason,
                        db_text(rejection.detail),
                        rejection.municipality_id,
                        dead_letter_id,
                    ),
                )
                results.append(
                    ReplayResult(
                        dead_letter_id, False, inserted, rejection.reason, rejection.detail
                    )
                )
    return results


def dead_letters_of_sensor(conn: psycopg.Connection, sensor_id: int) -> list[int]:
    """Ids of unreplayed dead letters that name this sensor's device (by DevEUI, or by
    municipality/external id for native gateways), oldest first."""
    rows = conn.execute(
        "SELECT d.id FROM dead_letters d JOIN sensors s ON s.id = %s "
        "JOIN municipalities m ON m.id = s.municipality_id "
        "WHERE d.replayed_at IS NULL AND (d.device_id = s.dev_eui "
        "    OR d.device_id = m.slug || '/' || s.external_id) "
        "ORDER BY d.id",
        (sensor_id,),
    ).fetchall()
    return [r[0] for r in rows]
