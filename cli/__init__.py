"""Command line of the system: ``python -m cli <command>`` (also installed as ``kommune-iot``).

Each command lives in its own module exposing ``register(subparsers)``; list it in
``COMMAND_MODULES`` to make it available.
"""
