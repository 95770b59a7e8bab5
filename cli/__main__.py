"""Entry point: ``python -m cli --help`` lists the commands."""

from __future__ import annotations

import argparse
import importlib
import sys

# One module per command (or group of commands); each has register(subparsers).
COMMAND_MODULES = (
    "cli.admin",
    "cli.api",
    "cli.broker",
    "cli.db",
    "cli.deliver",
    "cli.evaluate",
    "cli.history",
    "cli.ingest",
    "cli.open_files",
    "cli.replay_dataset",
    "cli.simulate",
    "cli.tenant",
    "cli.up",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kommune-iot", description="Open-source IoT backend for Danish municipalities."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


# Exit status of a process stopped by SIGINT, as shells report it (128 + 2).
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C in `make up` reaches every process of the terminal's group: the loops
        # (maintenance, evaluate --every) stop quietly instead of printing a traceback.
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
