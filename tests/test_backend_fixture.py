"""The backend fixture itself: storage tests run on both backends, and in CI a
TimescaleDB test that skips is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A storage test (writer) and a TimescaleDB-only test, run with no TimescaleDB reachable.
TESTS = [
    "tests/ingest/test_writer.py::test_rows_come_back_exactly_as_written",
    "tests/test_timescaledb.py::test_migrations_on_timescaledb_record_the_backend",
]


def _pytest_without_timescaledb(ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["IOT_TEST_TIMESCALE_ADMIN_URL"] = "postgresql://postgres@127.0.0.1:1/postgres"
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_outside_ci_timescaledb_tests_skip_with_the_reason() -> None:
    run = _pytest_without_timescaledb(None)
    assert run.returncode == 0, run.stdout
    assert "1 passed, 2 skipped" in run.stdout
    assert "no TimescaleDB server at IOT_TEST_TIMESCALE_ADMIN_URL" in run.stdout


def test_in_ci_a_skipped_timescaledb_test_fails_the_run() -> None:
    run = _pytest_without_timescaledb("true")
    assert run.returncode == 1, run.stdout
    assert run.stdout.count("TimescaleDB test skipped in CI") == 2
    assert "test_rows_come_back_exactly_as_written[timescaledb]" in run.stdout


@pytest.mark.storage
def test_storage_tests_get_each_backend_once(backend: str, db) -> None:
    recorded = db.execute("SELECT value FROM system_info WHERE key = 'backend'").fetchone()
    assert recorded == ({"postgres": "postgresql"}.get(backend, backend),)
