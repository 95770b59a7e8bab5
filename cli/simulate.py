"""``simulate``: register a simulated fleet and publish its uplinks to the MQTT broker.

With no arguments it does what ``up`` needs: a small fleet in all 19 municipalities,
registered in the database if it is not yet, replaying the last 24 hours at 60× speed
and then continuing in real time until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
from datetime import UTC, datetime, timedelta

import psycopg

from models.logging import configure_logging, log
from models.settings import get_settings
from simulator.fleet import MUNICIPALITIES, build_fleet
from simulator.publisher import MqttPublisher, run_paced
from simulator.seed import fleet_is_seeded, seed_fleet
from simulator.stream import FleetStream


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="publish a simulated fleet's LoRaWAN uplinks (ChirpStack v4 / TTS v3 JSON)",
        description="Publish realistic uplinks of simulated classrooms, bins and parking "
        "bays. Simulated time runs --speed times faster than real time but never "
        "ahead of it: a run starts --backfill-hours in the past and then goes live.",
    )
    p.add_argument("--classrooms", type=int, default=38, help="classrooms with climate sensors")
    p.add_argument("--bins", type=int, default=57, help="waste bins with fill-level sensors")
    p.add_argument("--parking", type=int, default=76, help="parking bays with sensors")
    p.add_argument(
        "--municipalities", type=int, default=len(MUNICIPALITIES), help="spread over the first N"
    )
    p.add_argument("--seed", type=int, default=1, help="same seed, same fleet and data")
    p.add_argument(
        "--speed", type=float, default=60.0, help="simulated seconds per wall second; 0 = max"
    )
    p.add_argument("--backfill-hours", type=float, default=24.0, help="start this many hours ago")
    p.add_argument("--duration", type=float, default=0.0, help="stop after N wall seconds")
    p.add_argument("--count", type=int, default=0, help="stop after N messages")
    p.add_argument("--rate", type=float, default=0.0, help="at most N messages per second")
    p.add_argument("--duplicate-share", type=float, default=0.02)
    p.add_argument("--malformed-share", type=float, default=0.005)
    p.add_argument("--topic-prefix", default="", help="prepended to every topic")
    p.add_argument(
        "--qos",
        type=int,
        choices=(0, 1),
        default=1,
        help="MQTT QoS of the uplinks (0: as ChirpStack publishes unless configured for 1)",
    )
    p.add_argument("--no-seed", action="store_true", help="do not register the fleet")
    p.set_defaults(handler=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings)
    fleet = build_fleet(args.classrooms, args.bins, args.parking, args.seed, args.municipalities)
    if not args.no_seed:
        with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
            if not fleet_is_seeded(conn, fleet):
                result = seed_fleet(conn, fleet)
                log.info("fleet_seeded", **vars(result))
    start = datetime.now(UTC) - timedelta(hours=args.backfill_hours)
    stream = FleetStream(
        fleet,
        start,
        seed=args.seed,
        duplicate_share=args.duplicate_share,
        malformed_share=args.malformed_share,
        topic_prefix=args.topic_prefix,
    )
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    publisher = MqttPublisher(
        settings, client_id=f"kommune-iot-simulator-{os.getpid()}", qos=args.qos
    )
    publisher.connect()
    log.info(
        "simulator_started",
        devices=len(fleet.devices),
        speed=args.speed,
        start=start.isoformat(timespec="seconds"),
    )
    try:
        result = run_paced(
            stream,
            publisher,
            speed=args.speed,
            rate_per_s=args.rate,
            duration_s=args.duration,
            max_messages=args.count,
            should_stop=lambda: stopping,
        )
        flushed = publisher.flush(timeout_s=30.0)
    finally:
        publisher.close()
    log.info(
        "simulator_stopped",
        published=result.published,
        acked=publisher.acked,
        flushed=flushed,
        wall_s=round(result.wall_s, 1),
        **{f"count_{k}": v for k, v in stream.counts.by_kind.items()},
    )
    return 0 if flushed else 1
