"""``import-history``: historic readings from a CSV/XLSX export, with a column mapping.

kommune-iot import-history --municipality aarhus --mapping mapping.json --dry-run old.csv
kommune-iot import-history --municipality aarhus --mapping mapping.json old.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import psycopg
from pydantic import ValidationError

from ingest.historic import HistoricMapping, MappingError, import_history
from models.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-history", help="import historic readings from a CSV/XLSX export"
    )
    p.add_argument("--municipality", required=True, help="municipality slug")
    p.add_argument(
        "--mapping", required=True, type=Path, help="JSON column mapping (docs/staff.md)"
    )
    p.add_argument("--dry-run", action="store_true", help="report only, store nothing")
    p.add_argument("file", type=Path, help="CSV or XLSX file")
    p.set_defaults(handler=_import)


def _import(args: argparse.Namespace) -> int:
    try:
        mapping = HistoricMapping.model_validate_json(args.mapping.read_text(encoding="utf-8"))
        data = args.file.read_bytes()
    except OSError as exc:
        sys.exit(f"error: {exc}")
    except ValidationError as exc:
        sys.exit(f"error: {args.mapping}: {exc}")
    with psycopg.connect(get_settings().psycopg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT id FROM municipalities WHERE slug = %s", (args.municipality,)
        ).fetchone()
        if row is None:
            sys.exit(f"error: no municipality with slug {args.municipality!r}")
        try:
            report = import_history(conn, row[0], data, args.file.name, mapping, args.dry_run)
        except MappingError as exc:
            sys.exit(f"error: {exc.part}: {exc}")
    print(json.dumps(report.as_dict(), indent=1, default=str, ensure_ascii=False))
    return 0
