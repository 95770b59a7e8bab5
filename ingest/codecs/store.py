"""A municipality's own device models and their codec versions (``device_models`` with a
``municipality_id``, ``device_codecs``): added by staff, read by ingest.

Models and codecs are per municipality: a municipality's model, its codec and the
sensors registered with it are its own, invisible to the others (a codec keeps state
between uplinks in its runtime, and runs on the owner's data only). The built-in models
(Python decoders) are shared and cannot be shadowed: a municipality's model may not
have the (vendor, model) of a shared one, compared case-insensitively.

`add_codec_version` is the one write: it checks the upload (mapping, examples, codec run
on its examples) and stores it as the model's next version only when everything
passed; the earlier versions are kept, and ingest takes the new one when it next
reloads its registry (every 60 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ingest.codecs.check import CheckReport, ExamplesError, check_codec, parse_examples
from ingest.codecs.mapping import MappingError, parse_mapping
from ingest.codecs.sandbox import Limits

DECODER = "codec"
KINDS = ("climate", "bin", "parking", "other")


class CodecUploadError(ValueError):
    """The upload cannot be checked at all; `problems` says each thing wrong (4xx)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class CodecCheckError(ValueError):
    """The codec or mapping failed its examples; `report` has one entry per example."""

    def __init__(self, report: CheckReport) -> None:
        super().__init__("the codec failed its examples")
        self.report = report


@dataclass(frozen=True, slots=True)
class CodecUpload:
    vendor: str
    model: str
    kind: str
    mapping: Any  # the mapping's JSON (ingest/codecs/mapping.py)
    examples: Any  # YAML/JSON text or the parsed list (ingest/codecs/check.py)
    script: str | None = None  # None: the network server decodes this model


@dataclass(frozen=True, slots=True)
class StoredVersion:
    device_model_id: int
    version: int
    codec_id: int
    created_model: bool
    report: CheckReport


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _model_for(
    conn: psycopg.Connection, municipality_id: int, upload: CodecUpload
) -> tuple[int, bool]:
    """The municipality's model named by the upload, created when new; locked."""
    vendor, model = " ".join(upload.vendor.split()), " ".join(upload.model.split())
    rows = conn.execute(
        "SELECT id, vendor, model, municipality_id, kind FROM device_models "
        "WHERE municipality_id IS NULL OR municipality_id = %s",
        (municipality_id,),
    ).fetchall()
    for model_id, row_vendor, row_model, owner, kind in rows:
        if (_key(row_vendor), _key(row_model)) != (_key(vendor), _key(model)):
            continue
        if owner is None:
            raise CodecUploadError(
                [
                    f"{row_vendor} {row_model} is a built-in model with its own decoder; "
                    "name yours differently (e.g. with its firmware version)"
                ]
            )
        if kind != upload.kind:
            raise CodecUploadError(
                [f"kind: {row_vendor} {row_model} is a {kind} model, not {upload.kind}"]
            )
        conn.execute("SELECT 1 FROM device_models WHERE id = %s FOR UPDATE", (model_id,))
        return model_id, False
    row = conn.execute(
        "INSERT INTO device_models (vendor, model, decoder, kind, meta, municipality_id) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (vendor, model, DECODER, upload.kind, Jsonb({"source": "uploaded codec"}), municipality_id),
    ).fetchone()
    assert row is not None
    return row[0], True


def _check_fields(upload: CodecUpload) -> list[str]:
    problems = []
    for name in ("vendor", "model"):
        value = getattr(upload, name)
        if not isinstance(value, str) or not value.strip() or len(value) > 100:
            problems.append(f"{name} must be 1-100 characters")
    if upload.kind not in KINDS:
        problems.append(f"kind must be one of {', '.join(KINDS)}, not {upload.kind!r}")
    if upload.script is not None and not upload.script.strip():
        problems.append("script is empty (leave it out for a model the network server decodes)")
    return problems


def add_codec_version(
    conn: psycopg.Connection,
    municipality_id: int,
    upload: CodecUpload,
    limits: Limits | None = None,
) -> StoredVersion:
    """Check `upload` and store it as the next version of the municipality's model (the
    model is created on its first upload). CodecUploadError when it cannot be checked
    (bad mapping, unreadable examples, a built-in model's name); CodecCheckError, with
    the per-example report, when its examples fail. Nothing is stored then."""
    problems = _check_fields(upload)
    mapping = None
    try:
        mapping = parse_mapping(upload.mapping)
    except MappingError as exc:
        problems.extend(f"mapping: {p}" for p in exc.problems)
    examples = []
    try:
        examples = parse_examples(upload.examples)
    except ExamplesError as exc:
        problems.append(f"examples: {exc}")
    if problems or mapping is None:
        raise CodecUploadError(problems)
    report = check_codec(upload.script, examples, mapping, limits)
    if not report.passed:
        raise CodecCheckError(report)
    with conn.transaction():
        model_id, created = _model_for(conn, municipality_id, upload)
        version = conn.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM device_codecs WHERE device_model_id = %s",
            (model_id,),
        ).fetchone()[0]
        codec_id = conn.execute(
            "INSERT INTO device_codecs (municipality_id, device_model_id, version, script, "
            "examples, mapping, report) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                municipality_id,
                model_id,
                version,
                upload.script,
                Jsonb([_example_json(e) for e in examples]),
                Jsonb(mapping.as_json()),
                Jsonb(report.as_json()),
            ),
        ).fetchone()[0]
    return StoredVersion(model_id, version, codec_id, created, report)


def _example_json(example: Any) -> dict[str, Any]:
    output: dict[str, Any] = {"data": example.data}
    if example.errors:
        output["errors"] = example.errors
    return {
        "description": example.description,
        "input": {"fPort": example.fport, "bytes": list(example.payload)},
        "output": output,
    }


def list_models(conn: psycopg.Connection, municipality_id: int) -> list[dict[str, Any]]:
    """The shared models and the municipality's own, with each own model's newest version."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """
            SELECT dm.id, dm.vendor, dm.model, dm.kind, dm.decoder,
                   dm.municipality_id IS NOT NULL AS own,
                   (SELECT max(c.version) FROM device_codecs c
                    WHERE c.device_model_id = dm.id) AS latest_version
            FROM device_models dm
            WHERE dm.municipality_id IS NULL OR dm.municipality_id = %s
            ORDER BY dm.municipality_id IS NULL, dm.vendor, dm.model
            """,
            (municipality_id,),
        ).fetchall()


def list_versions(
    conn: psycopg.Connection, municipality_id: int, model_id: int
) -> list[dict[str, Any]] | None:
    """Every version of one of the municipality's own models, newest first; None when it
    has no such model."""
    with conn.cursor(row_factory=dict_row) as cur:
        owned = cur.execute(
            "SELECT 1 FROM device_models WHERE id = %s AND municipality_id = %s",
            (model_id, municipality_id),
        ).fetchone()
        if owned is None:
            return None
        return cur.execute(
            "SELECT version, script IS NOT NULL AS has_script, script, examples, mapping, "
            "report, created_at FROM device_codecs WHERE device_model_id = %s "
            "AND municipality_id = %s ORDER BY version DESC",
            (model_id, municipality_id),
        ).fetchall()
