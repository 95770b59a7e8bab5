"""`python -m cli evaluate` when the database cannot be reached."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere"
    # Settings other tests of the session may have put into the environment stay out.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    return {**clean, "IOT_DATABASE_URL": url}


def _scheduler(every_s: float) -> subprocess.Popen:
    """`python -m cli evaluate --every` against an unreachable database, output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "evaluate", "--every", str(every_s)],
        env=_env(),
        # Ctrl-C as in a terminal: a test before may have left SIGINT ignored in this
        # process, which a child inherits (Python then installs no KeyboardInterrupt).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_single_run_without_database_exits_1_with_one_log_line_not_a_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "cli", "evaluate"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert "event=evaluate.database_unavailable" in output
    assert "Traceback" not in output


def test_scheduler_keeps_running_through_a_database_outage():
    """Round after round fails to reach the database, and the scheduler lives on. Waits
    for the rounds themselves, not a fixed time: the CLI takes seconds to start on a
    loaded machine."""
    proc = _scheduler(every_s=0.5)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break  # the process ended
            lines.append(line)
            if sum("event=evaluate.database_unavailable" in x for x in lines) >= 3:
                break
        still_running = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    output = "".join(lines) + output
    assert still_running, output
    assert output.count("event=evaluate.database_unavailable") >= 3, output


def test_ctrl_c_stops_the_scheduler_quietly_with_status_130():
    """`make up` passes Ctrl-C to every process of the terminal: the loops stop without a
    traceback, exiting as shells expect of a process stopped by SIGINT."""
    proc = _scheduler(every_s=30)
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "evaluate.database_unavailable" in line:
                break  # the first round is done: now it sleeps until the next one
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines) + output
    assert proc.returncode == 130, output
    assert "Traceback" not in output
