"""``tenant``: a municipality's whole data: export it, import it elsewhere, delete it.

kommune-iot tenant export --municipality aarhus --out aarhus.zip
kommune-iot tenant import aarhus.zip
kommune-iot tenant delete --municipality aarhus --export aarhus.zip
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import psycopg

from models.settings import get_settings
from tenancy.archive import ArchiveError, ArchiveReader
from tenancy.delete import DeleteError, delete_municipality
from tenancy.export import ExportError, export_municipality
from tenancy.importer import ImportConflictError, import_archive


def register(subparsers: argparse._SubParsersAction) -> None:
    tenant = subparsers.add_parser("tenant", help="export, import or delete a municipality")
    commands = tenant.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")

    p = commands.add_parser("export", help="write a municipality's data to one archive")
    p.add_argument("--municipality", required=True, help="municipality slug")
    p.add_argument("--out", required=True, type=Path, help="archive file to write (.zip)")
    p.set_defaults(handler=_export)

    p = commands.add_parser("import", help="import an archive as a new municipality")
    p.add_argument("archive", type=Path)
    p.set_defaults(handler=_import)

    p = commands.add_parser(
        "delete", help="delete a municipality and all its data, after an export"
    )
    p.add_argument("--municipality", required=True, help="municipality slug")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--export",
        type=Path,
        help="its archive: checked (checksums, municipality, counts) before deleting",
    )
    group.add_argument(
        "--without-export", action="store_true", help="delete without checking an archive"
    )
    p.set_defaults(handler=_delete)


def _connect() -> psycopg.Connection:
    return psycopg.connect(get_settings().psycopg_url, autocommit=True)


def _export(args: argparse.Namespace) -> int:
    with _connect() as conn:
        try:
            result = export_municipality(conn, args.municipality, args.out)
        except ExportError as exc:
            sys.exit(f"error: {exc}")
    print(f"exported {args.municipality} to {result.path}")
    _print_counts(result.counts)
    return 0


def _import(args: argparse.Namespace) -> int:
    with _connect() as conn:
        try:
            result = import_archive(conn, args.archive)
        except ArchiveError as exc:
            sys.exit(f"error: {exc}")
        except ImportConflictError as exc:
            for conflict in exc.conflicts:
                print(f"conflict: {conflict}", file=sys.stderr)
            sys.exit(f"error: {exc}")
    print(f"imported {result.slug} as municipality id {result.municipality_id}")
    _print_counts(result.counts)
    print("API keys are never exported: create new ones with `admin create-key`")
    return 0


def _delete(args: argparse.Namespace) -> int:
    with _connect() as conn:
        if args.export is not None:
            problem = _export_problem(conn, args.export, args.municipality)
            if problem:
                sys.exit(f"error: {problem}; nothing deleted")
        try:
            counts = delete_municipality(conn, args.municipality)
        except DeleteError as exc:
            sys.exit(f"error: {exc}")
    print(f"deleted {args.municipality}")
    _print_counts(counts)
    return 0


def _export_problem(conn: psycopg.Connection, path: Path, slug: str) -> str | None:
    """Why `path` is not a complete, current export of `slug` (None when it is)."""
    try:
        reader = ArchiveReader(path)
        try:
            reader.verify()
        finally:
            reader.close()
    except ArchiveError as exc:
        return str(exc)
    manifest = reader.manifest
    if manifest.get("municipality") != slug:
        return f"{path} is an export of {manifest.get('municipality')!r}, not {slug!r}"
    counts = manifest.get("counts") or {}
    current = conn.execute(
        "SELECT (SELECT count(*) FROM sensors s WHERE s.municipality_id = m.id),"
        " (SELECT count(*) FROM readings r WHERE r.sensor_id IN "
        "   (SELECT id FROM sensors s WHERE s.municipality_id = m.id)) "
        "FROM municipalities m WHERE m.slug = %s",
        (slug,),
    ).fetchone()
    if current is None:
        return f"no municipality with slug {slug!r}"
    if (counts.get("sensors"), counts.get("readings")) != tuple(current):
        return (
            f"data changed since {path} was exported (sensors {counts.get('sensors')} → "
            f"{current[0]}, readings {counts.get('readings')} → {current[1]}); export again"
        )
    return None


def _print_counts(counts: dict[str, int]) -> None:
    print(json.dumps(counts, indent=1, sort_keys=True))
