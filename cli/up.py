"""``up``: run the whole system on one machine with a simulated fleet.

Prepares the database, then starts each component as a child process and stops them all
on Ctrl-C or SIGTERM. Components whose command does not exist yet are skipped.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from cli.db import prepare_database
from models.db_roles import API, INGEST, MAINTENANCE, STAFF, role_url
from models.logging import configure_logging, log
from models.settings import get_settings

# (name, command-line arguments after ``python -m cli``)
COMPONENTS: tuple[tuple[str, list[str]], ...] = (
    ("ingest", ["ingest"]),
    ("api", ["api"]),
    ("maintenance", ["maintenance", "--every", "60"]),
    ("evaluate", ["evaluate", "--every", "60"]),
    ("deliver", ["deliver"]),
    ("simulator", ["simulate"]),
)

# The database role each component connects as (models/db_roles.py), like in production.
# The simulator is a development tool that creates municipalities: it keeps the given URL.
COMPONENT_ROLES: dict[str, dict[str, str]] = {
    "ingest": {"IOT_DATABASE_URL": INGEST},
    "api": {"IOT_DATABASE_URL": API, "IOT_STAFF_DATABASE_URL": STAFF},
    "maintenance": {"IOT_DATABASE_URL": MAINTENANCE},
    "evaluate": {"IOT_DATABASE_URL": MAINTENANCE},
    "deliver": {"IOT_DATABASE_URL": MAINTENANCE},
}


def component_env(name: str, url: str, passwords: dict[str, str]) -> dict[str, str]:
    """The environment of component `name`: this one, with its roles' database URLs."""
    env = dict(os.environ)
    for variable, role in COMPONENT_ROLES.get(name, {}).items():
        env[variable] = role_url(url, role, passwords.get(role))
    return env


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("up", help="run database, ingest, API and a simulated fleet")
    p.set_defaults(handler=run_up)


def _available_commands() -> set[str]:
    from cli.__main__ import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def run_up(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings)
    prepare_database(settings.psycopg_url, settings.db_role_passwords)
    available = _available_commands()
    children: dict[str, subprocess.Popen] = {}
    for name, argv in COMPONENTS:
        if argv[0] not in available:
            log.warning("component_skipped", component=name, reason="command not available")
            continue
        env = component_env(name, settings.psycopg_url, settings.db_role_passwords)
        children[name] = subprocess.Popen([sys.executable, "-m", "cli", *argv], env=env)
        log.info("component_started", component=name, pid=children[name].pid)

    base = settings.public_base_url
    print(
        "\nkommune-iot is running:\n"
        f"  dashboard      {base}/\n"
        f"  API docs       {base}/api/v1/docs\n"
        f"  open data      {base}/api/v1/sensors\n"
        f"  health         {base}/health\n"
        f"  API metrics    {base}/metrics\n"
        f"  ingest metrics http://{settings.ingest_metrics_host}:"
        f"{settings.ingest_metrics_port}/metrics\n"
        "  staff key      .venv/bin/python -m cli admin create-key --municipality aarhus "
        "--scopes read-private --owner 'your name'\n"
        f"  MQTT broker    {settings.mqtt_host}:{settings.mqtt_port}\n"
        f"  database       {settings.psycopg_url}\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )

    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                log.error("component_exited", component=name, returncode=child.returncode)
                stopping, exit_code = True, 1
        time.sleep(0.5)
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    for child in children.values():
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
    return exit_code
