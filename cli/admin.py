"""``admin``: municipalities, API keys, network-server applications and sensor imports.

python -m cli admin create-municipality --slug aarhus --name "Aarhus Kommune" --code 0751
python -m cli admin new-sensors --municipality aarhus public
python -m cli admin create-key --municipality aarhus --scopes read-private,write-sensors \
    --owner "Jens Hansen, Teknik og Miljø" --name "BI export"
python -m cli admin add-oidc-provider --municipality aarhus --slug aarhus-entra \
    --name "Aarhus Kommune (Entra ID)" --issuer https://login.microsoftonline.com/TENANT/v2.0 \
    --client-id CLIENT --client-secret-env IOT_OIDC_SECRET_AARHUS \
    --role-scopes '{"IoT.Admin": ["admin"], "IoT.Reader": ["read-private"]}'
python -m cli admin add-saml-provider --municipality aarhus --slug aarhus-kombit \
    --name "KOMBIT medarbejderlogin" --idp-metadata kombit-idp-metadata.xml --cvr 55133018 \
    --role-scopes '{"http://kommune-iot.dk/roles/usersystemrole/admin/1": ["admin"]}'
python -m cli admin list-providers
python -m cli admin list-keys --municipality aarhus
python -m cli admin revoke-key 7
python -m cli admin map-application --municipality aarhus --network chirpstack 8d2c7e36-...
python -m cli admin list-applications --municipality aarhus
python -m cli admin unmap-application --network thethings aarhus-parking@aarhus
python -m cli admin import-sensors --municipality aarhus sensors.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from api.auth import SCOPES, create_key, revoke_key
from api.oidc import validate_config
from domain import municipalities
from domain.applications import (
    NETWORKS,
    ApplicationError,
    ApplicationTakenError,
    list_applications,
    map_application,
    unmap_application,
)
from domain.registry import import_sensors_csv
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
    p.add_argument(
        "--owner", required=True, help="the person or system answering for the key (audit)"
    )
    p.add_argument("--expires-days", type=int, help="expire after this many days")
    p.set_defaults(handler=_create_key)

    p = commands.add_parser(
        "add-oidc-provider", help="let a municipality's staff sign in with an OIDC provider"
    )
    p.add_argument("--municipality", required=True, help="municipality slug")
    p.add_argument("--slug", required=True, help="the provider's name in URLs: aarhus-entra")
    p.add_argument("--name", required=True, help="shown on the sign-in button")
    p.add_argument("--issuer", required=True, help="issuer URL (https://...)")
    p.add_argument("--client-id", required=True)
    p.add_argument(
        "--client-secret-env", help="environment variable of the API holding the client secret"
    )
    p.add_argument(
        "--role-scopes", required=True, help='JSON: role -> scopes, {"IoT.Admin": ["admin"]}'
    )
    p.add_argument("--roles-claim", default="roles", help="claim listing the person's roles")
    p.add_argument("--name-claim", default="name", help="claim with the person's name")
    p.add_argument("--scopes", default="openid profile email", help="OIDC scopes to request")
    p.add_argument(
        "--municipality-claim", help="for a provider shared by municipalities: the claim naming one"
    )
    p.add_argument(
        "--municipality-values", default="", help="comma-separated values of that claim to admit"
    )
    p.set_defaults(handler=_add_oidc_provider)

    p = commands.add_parser(
        "add-saml-provider", help="let a municipality's staff sign in with SAML 2.0 (KOMBIT)"
    )
    p.add_argument("--municipality", required=True, help="municipality slug")
    p.add_argument("--slug", required=True, help="the provider's name in URLs")
    p.add_argument("--name", required=True, help="shown on the sign-in button")
    p.add_argument("--idp-metadata", required=True, type=Path, help="the IdP's metadata XML file")
    p.add_argument(
        "--role-scopes", required=True, help='JSON: role -> scopes, {"<role URI>": ["admin"]}'
    )
    p.add_argument(
        "--roles-format",
        choices=("oiosaml-bpp", "plain"),
        default="oiosaml-bpp",
        help="oiosaml-bpp: KOMBIT's privilege profile (default); plain: attribute values",
    )
    p.add_argument(
        "--roles-attribute",
        default="dk:gov:saml:attribute:Privileges_intermediate",
        help="the attribute carrying the roles",
    )
    p.add_argument("--cvr", help="the municipality's CVR number (roles scoped to it count)")
    p.add_argument("--name-attribute", default="cn", help="attribute with the person's name")
    p.set_defaults(handler=_add_saml_provider)

    p = commands.add_parser("list-providers", help="list identity providers")
    p.set_defaults(handler=_list_providers)

    p = commands.add_parser("disable-provider", help="stop sign-ins (and sessions) of a provider")
    p.add_argument("slug")
    p.set_defaults(handler=_disable_provider)

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
    found = municipalities.municipality_id(conn, slug)
    if found is None:
        sys.exit(f"error: no municipality with slug {slug!r}; create it with create-municipality")
    return found


def _create_municipality(args: argparse.Namespace) -> int:
    with _connect() as conn:
        try:
            created = municipalities.create_municipality(
                conn,
                args.slug,
                args.name,
                args.code,
                new_sensors_public=args.new_sensors == "public",
            )
        except psycopg.errors.UniqueViolation:
            sys.exit(f"error: a municipality with slug {args.slug!r} or that code exists")
        except psycopg.errors.CheckViolation:
            sys.exit("error: slug must be lowercase letters, digits and '-', at most 63 chars")
    print(f"municipality {args.slug} created with id {created}")
    return 0


def _set_new_sensors(args: argparse.Namespace) -> int:
    with _connect() as conn:
        municipalities.set_new_sensors_public(
            conn, _municipality_id(conn, args.municipality), args.visibility == "public"
        )
    print(f"new sensors of {args.municipality} are {args.visibility} unless registered otherwise")
    return 0


def _create_key(args: argparse.Namespace) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    expires = datetime.now(UTC) + timedelta(days=args.expires_days) if args.expires_days else None
    with _connect() as conn:
        municipality_id = _municipality_id(conn, args.municipality)
        try:
            if not args.owner.strip():
                raise ValueError("--owner must name a person or system")
            key = create_key(conn, municipality_id, scopes, args.name, expires, args.owner)
        except ValueError as exc:
            sys.exit(f"error: {exc}")
    print(f"key id {key.key_id} for {args.municipality}; store it now, it is not shown again:")
    print(key.token)
    return 0


def _list_keys(args: argparse.Namespace) -> int:
    with _connect() as conn:
        rows = conn.execute(
            "SELECT k.id, m.slug, k.prefix, k.name, k.scopes, k.created_at, k.expires_at, "
            "k.revoked_at, k.last_used_at, k.owner FROM api_keys k "
            "JOIN municipalities m ON m.id = k.municipality_id "
            "WHERE %s::text IS NULL OR m.slug = %s ORDER BY k.id",
            (args.municipality, args.municipality),
        ).fetchall()
    now = datetime.now(UTC)
    for r in rows:
        state = "revoked" if r[7] else ("expired" if r[6] and r[6] < now else "active")
        print(
            f"{r[0]}\t{r[1]}\tkiot_{r[2]}_…\t{state}\t{','.join(r[4])}\t{r[3]}\t"
            f"owner {r[9]}\tlast used {r[8] or 'never'}"
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


def _add_oidc_provider(args: argparse.Namespace) -> int:
    try:
        role_scopes = json.loads(args.role_scopes)
    except json.JSONDecodeError as exc:
        sys.exit(f"error: --role-scopes is not JSON: {exc}")
    config = {
        "issuer": args.issuer.rstrip("/"),
        "client_id": args.client_id,
        "scopes": args.scopes.split(),
        "roles_claim": args.roles_claim,
        "name_claim": args.name_claim,
        "role_scopes": role_scopes,
    }
    if args.client_secret_env:
        config["client_secret_env"] = args.client_secret_env
    if args.municipality_claim:
        config["municipality_claim"] = args.municipality_claim
        config["municipality_values"] = [
            v.strip() for v in args.municipality_values.split(",") if v.strip()
        ]
    try:
        validate_config(config)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    _insert_provider(args, "oidc", config)
    print(f"provider {args.slug} added; its redirect URI is <IOT_PUBLIC_BASE_URL>/auth/callback")
    return 0


def _add_saml_provider(args: argparse.Namespace) -> int:
    try:
        role_scopes = json.loads(args.role_scopes)
        metadata = args.idp_metadata.read_text(encoding="utf-8")
    except (json.JSONDecodeError, OSError) as exc:
        sys.exit(f"error: {exc}")
    config = {
        "idp_metadata_xml": metadata,
        "roles_attribute": args.roles_attribute,
        "roles_format": args.roles_format,
        "role_scopes": role_scopes,
        "name_attribute": args.name_attribute,
    }
    if args.cvr:
        config["cvr"] = args.cvr
    # Imported here: pysaml2 loads its XML schemas on import (seconds), which every other
    # command of the CLI would pay at start-up.
    from api.saml import validate_config as validate_saml_config

    try:
        validate_saml_config(config)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    _insert_provider(args, "saml", config)
    print(
        f"provider {args.slug} added; give the identity provider this service provider's "
        "metadata: <IOT_PUBLIC_BASE_URL>/auth/saml/metadata"
    )
    return 0


def _insert_provider(args: argparse.Namespace, kind: str, config: dict) -> None:
    with _connect() as conn:
        municipality_id = _municipality_id(conn, args.municipality)
        try:
            conn.execute(
                "INSERT INTO identity_providers (municipality_id, slug, kind, display_name, "
                "config) VALUES (%s, %s, %s, %s, %s)",
                (municipality_id, args.slug, kind, args.name, Jsonb(config)),
            )
        except psycopg.errors.UniqueViolation:
            sys.exit(f"error: a provider with slug {args.slug!r} exists")
        except psycopg.errors.CheckViolation as exc:
            sys.exit(f"error: {exc}")


def _list_providers(args: argparse.Namespace) -> int:
    with _connect() as conn:
        rows = conn.execute(
            "SELECT p.slug, m.slug, p.kind, p.enabled, p.display_name, p.config->>'issuer' "
            "FROM identity_providers p JOIN municipalities m ON m.id = p.municipality_id "
            "ORDER BY m.slug, p.slug"
        ).fetchall()
    for slug, municipality, kind, enabled, name, issuer in rows:
        state = "enabled" if enabled else "disabled"
        print(f"{slug}\t{municipality}\t{kind}\t{state}\t{name}\t{issuer}")
    return 0


def _disable_provider(args: argparse.Namespace) -> int:
    with _connect() as conn:
        done = conn.execute(
            "UPDATE identity_providers SET enabled = false WHERE slug = %s", (args.slug,)
        ).rowcount
    if not done:
        sys.exit(f"error: no provider {args.slug!r}")
    print(f"provider {args.slug} disabled; its sessions end at their next request")
    return 0
