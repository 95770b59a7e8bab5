"""What the benchmark scripts share: the machine's CPU model and writing their section of
BENCHMARKS.md."""

from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
# Where a section ends: the next heading, or the marker opening another script's block
# (bench_api.py writes between <!-- bench_api:start/end --> markers).
_NEXT_SECTION = re.compile(r"^(## |<!-- )", re.MULTILINE)


def cpu_model() -> str:
    """The CPU's model name as lscpu reports it."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def write_section(heading: str, report: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the section starting at `heading` (up to the next '## ' heading or block
    marker) with `report`, or append it; a blank line stays before the next section."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + report
    else:
        following = _NEXT_SECTION.search(text, start + len(heading))
        rest = text[following.start() :] if following else ""
        text = text[:start] + report.rstrip("\n") + ("\n\n" + rest if rest else "\n")
    path.write_text(text.rstrip("\n") + "\n")
