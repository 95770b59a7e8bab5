"""``broker-acl``: write Mosquitto's password and ACL files from the municipalities table
and the application mapping (``admin map-application``).

python -m cli broker-acl --out deploy/mosquitto/generated --config deploy/mosquitto/gateways.toml

Then make the running broker re-read them: ``docker compose kill -s HUP mosquitto``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

from ingest.broker_acl import (
    BrokerAclError,
    application_owners,
    broker_users,
    load_config,
    municipality_slugs,
    write_broker_files,
)
from models.logging import configure_logging, log
from models.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "broker-acl",
        help="generate Mosquitto password and ACL files (one gateway user per municipality)",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for passwd, acl, credentials")
    p.add_argument(
        "--config",
        type=Path,
        help="gateways TOML: extra gateways, network servers, service users "
        "(see deploy/mosquitto/gateways.example.toml)",
    )
    p.set_defaults(handler=run_broker_acl)


def run_broker_acl(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings)
    try:
        config = load_config(args.config)
        with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
            slugs = municipality_slugs(conn)
            owners = application_owners(conn)
        users = broker_users(slugs, config, settings.mqtt_topics, owners)
        files = write_broker_files(args.out, users)
    except BrokerAclError as exc:
        sys.exit(f"error: {exc}")
    log.info(
        "broker_acl_written",
        out=str(args.out),
        users=len(users),
        new_users=",".join(files.new_users) or "-",
    )
    if files.new_users:
        print(
            f"new passwords for {', '.join(files.new_users)} are in {files.credentials_file}; "
            "reload the broker with SIGHUP (docker compose kill -s HUP mosquitto)"
        )
    return 0
