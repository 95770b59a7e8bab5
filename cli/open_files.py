"""``open-data-files``: write the daily and monthly open-data files (api/open_files.py).

kommune-iot open-data-files                 # yesterday and the day before, last month
kommune-iot open-data-files --day 2026-03-01 --month 2026-02
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from api.open_files import generate
from models.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "open-data-files", help="write the daily and monthly files of the public data"
    )
    p.add_argument("--day", action="append", type=date.fromisoformat, help="YYYY-MM-DD")
    p.add_argument("--month", action="append", help="YYYY-MM")
    p.add_argument("--out", type=Path, help="directory (default IOT_OPEN_DATA_FILES_DIR)")
    p.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    settings = get_settings()
    today = datetime.now(UTC).date()
    # Late readings reach the previous day too: it is written again.
    days = args.day or [today - timedelta(days=2), today - timedelta(days=1)]
    last_month = today.replace(day=1) - timedelta(days=1)
    months = [tuple(map(int, m.split("-"))) for m in args.month] if args.month else [
        (last_month.year, last_month.month)
    ]  # fmt: skip
    with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
        written = generate(conn, args.out or Path(settings.open_data_files_dir), days, months)
    for f in written:
        print(f"{f.path}\t{f.bytes}\t{f.sha256}")
    return 0
