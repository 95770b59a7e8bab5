"""``admin``: municipalities, API keys, network-server applications and sensor imports.

python -m cli admin create-municipality --slug aarhus --name "Aarhus Kommune" --code 0751
python -m cli admin new-sensors --municipality aarhus public
python -m cli admin create-key --municipality aarhus --scopes read-private,write-sensors
python -m cli admin list-keys --municipality aarhus
python -m cli admin revoke-key 7
python -m cli admin map-application --municipality aarhus --network chirpstack 8d2c7e36-...
python -m cli admin list-applications --municipality aarhus
python -m cli admin unmap-application --network thethings aarhus-parking@aarhus
python -m cli admin import-sensors --municipality aarhus sensors.csv
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from api.auth import SCOPES, create_key, revoke_key
from ingest.applications import (
    NETWORKS,
    ApplicationError,
    ApplicationTakenError,
    list_applications,
    map_application,
    unmap_application,
)
from ingest.registry import import_sensors_csv
from models.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    admin = subparsers.add_parser("admin", help="municipalities and API keys")
    commands = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")

    p = commands.add_parser("create-municipality", help="add a municipality (tenant)")
    p.add_argument("--slug", required=True, help="short lowercase id used in URLs and topics")
    p.add_argument("--name", required=True)
    p.add_argument("--code", help="four-digit Danish municipality code, e.g. 0751")
    p.add_argument(
        "--new-sensors",
        choices=("public", "private"),
        default="private",
        help="visibility of sensors registered without is_public (default private)",
    )
    p.set_defaults(handler=_create_municipality)

    p = commands.add_parser(
        "new-sensors", help="set a municipality's visibility for sensors registered without one"
    )
    p.add_argument("--municipality", required=True, help="municipality slug")
    p.add_argument("visibility", choices=("public", "private"))
    p.set_defaults(handler=_set_new_sensors)

    p = commands.add_parser("create-key", help="issue an API key; prints it once")
    p.add_argument("--municipality", required=True, help="municipality slug")
    p.add_argument(
        "--scopes", required=True, help=f"comma-separated, from: {', '.join(sorted(SCOPES))}"
    )
    p.add_argument("--name", default="", help="what the key is for")
    p.add_argument("--expires-days", type=int, help="expire after this many days")
    p.set_defaults(handler=_create_key)

    p = commands.add_parser("list-keys", help="list keys (never their secrets)")
    p.add_argument("--municipality", help="municipality slug; all when omitted")
    p.set_defaults(handler=_list_keys)

    p = commands.add_parser("revoke-key", help="revoke a key by id")
    p.add_argument("key_id", type=int)
    p.set_defaults(handler=_revoke_key)

    p = commands.add_parser(
        "map-application",
        help="bind a network-server application's uplinks to a municipality",
    )
    p.add_argument("--municipality", required=True, help="municipality slug")
    p.add_argument("--network", required=True, choices=NETWORKS)
    p.add_argument(
        "application_id",
        help="as the topic names it: ChirpStack's application id, The Things Stack's "
        "<application id>@<tenant id>",
    )
    p.add_argument(
        "--reassign",
        action="store_true",
        help="move it when another municipality holds it (their uplinks stop being taken)",
    )
    p.set_defaults(handler=_map_application)

    p = commands.add_parser("unmap-application", help="remove an application's mapping")
    p.add_argument("--network", required=True, choices=NETWORKS)
    p.add_argument("application_id")
    p.set_defaults(handler=_unmap_application)

    p = commands.add_parser("list-applications", help="list mapped network-server applications")
    p.add_argument("--municipality", help="municipality slug; all when omitted")
    p.set_defaults(handler=_list_applications)

    p = commands.add_parser(
        "import-sensors", help="register or update a municipality's sensors from a CSV file"
    )
    p.add_argument("--municipality", required=True, help="municipality slug")
    p.add_argument("csv_file", type=Path, help="columns as the staff API's sensor import")
    p.set_defaults(handler=_import_sensors)


def _connect() -> psycopg.Connection:
    return psycopg.connect(get_settings().psycopg_url, autocommit=True)


def _municipality_id(conn: psycopg.Connection, slug: str) -> int:
    row = conn.execute("SELECT id FROM municipalities WHERE slug = %s", (slug,)).fetchone()
    if row is None:
        sys.exit(f"error: no municipality with slug {slug!r}; create it with create-municipality")
    return row[0]


def _create_municipality(args: argparse.Namespace) -> int:
    with _connect() as conn:
        try:
            row = conn.execute(
                "INSERT INTO municipalities (slug, name, kommune_code, settings) "
                "VALUES (%s, %s, %s, jsonb_build_object('new_sensors_public', %s)) RETURNING id",
                (args.slug, args.name, args.code, args.new_sensors == "public"),
            ).fetchone()
        except psycopg.errors.UniqueViolation:
            sys.exit(f"error: a municipality with slug {args.slug!r} or that code exists")
        except psycopg.errors.CheckViolation:
            sys.exit("error: slug must be lowercase letters, digits and '-', at most 63 chars")
    print(f"municipality {args.slug} created with id {row[0]}")
    return 0


def _set_new_sensors(args: argparse.Namespace) -> int:
    with _connect() as conn:
        municipality_id = _municipality_id(conn, args.municipality)
        conn.execute(
            "UPDATE municipalities SET settings = settings || "
            "jsonb_build_object('new_sensors_public', %s) WHERE id = %s",
            (args.visibility == "public", municipality_id),
        )
    print(f"new sensors of {args.municipality} are {args.visibility} unless registered otherwise")
    return 0


def _create_key(args: argparse.Namespace) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    expires = datetime.now(UTC) + timedelta(days=args.expires_days) if args.expires_days else None
    with _connect() as conn:
        municipality_id = _municipality_id(conn, args.municipality)
        try:
            key = create_key(conn, municipality_id, scopes, args.name, expires)
        except ValueError as exc:
            sys.exit(f"error: {exc}")
    print(f"key id {key.key_id} for {args.municipality}; store it now, it is not shown again:")
    print(key.token)
    return 0


def _list_keys(args: argparse.Namespace) -> int:
    with _connect() as conn:
        rows = conn.execute(
            "SELECT k.id, m.slug, k.prefix, k.name, k.scopes, k.created_at, k.expires_at, "
            "k.revoked_at, k.last_used_at FROM api_keys k "
            "JOIN municipalities m ON m.id = k.municipality_id "
            "WHERE %s::text IS NULL OR m.slug = %s ORDER BY k.id",
            (args.municipality, args.municipality),
        ).fetchall()
    now = datetime.now(UTC)
    for r in rows:
        state = "revoked" if r[7] else ("expired" if r[6] and r[6] < now else "active")
        print(
            f"{r[0]}\t{r[1]}\tkiot_{r[2]}_…\t{state}\t{','.join(r[4])}\t{r[3]}\t"
            f"last used {r[8] or 'never'}"
        )
    return 0


def _revoke_key(args: argparse.Namespace) -> int:
    with _connect() as conn:
        if not revoke_key(conn, args.key_id):
            sys.exit(f"error: no active key with id {args.key_id}")
    print(f"key {args.key_id} revoked")
    return 0


def _map_application(args: argparse.Namespace) -> int:
    with _connect() as conn:
        municipality_id = _municipality_id(conn, args.municipality)
        try:
            changed = map_application(
                conn, municipality_id, args.network, args.application_id, reassign=args.reassign
            )
        except ApplicationTakenError as exc:
            sys.exit(f"error: {exc}; see list-applications, and pass --reassign to move it")
        except ApplicationError as exc:
            sys.exit(f"error: {exc}")
    state = "mapped to" if changed else "already mapped to"
    print(
        f"{args.network} application {args.application_id} {state} {args.municipality}; "
        "ingest takes it up within a minute; run broker-acl if the municipality's own network "
        "server publishes it"
    )
    return 0


def _unmap_application(args: argparse.Namespace) -> int:
    with _connect() as conn:
        if not unmap_application(conn, args.network, args.application_id, None):
            sys.exit(f"error: {args.network} application {args.application_id!r} is not mapped")
    print(f"{args.network} application {args.application_id} unmapped")
    return 0


def _list_applications(args: argparse.Namespace) -> int:
    with _connect() as conn:
        municipality_id = _municipality_id(conn, args.municipality) if args.municipality else None
        applications = list_applications(conn, municipality_id)
    for a in applications:
        print(f"{a.municipality_slug}\t{a.network}\t{a.application_id}\t{a.created_at:%Y-%m-%d}")
    return 0


def _import_sensors(args: argparse.Namespace) -> int:
    try:
        text = args.csv_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        sys.exit(f"error: cannot read {args.csv_file}: {exc}")
    with _connect() as conn:
        result = import_sensors_csv(conn, _municipality_id(conn, args.municipality), text)
    if not result.committed:
        for error in result.errors:
            print(f"{args.csv_file}:{error.line}: {error.message}", file=sys.stderr)
        sys.exit(f"error: nothing imported ({len(result.errors)} problem(s))")
    print(f"imported {args.csv_file}: {result.created} created, {result.updated} updated")
    return 0
