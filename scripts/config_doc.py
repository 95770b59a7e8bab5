"""Write docs/configuration.md from models/settings.py (tests check it is up to date).

.venv/bin/python scripts/config_doc.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.settings import Settings  # noqa: E402

HEADER = """# Configuration

Every process (ingest, API, jobs, CLI) reads its settings from the environment, each
variable prefixed `IOT_` (or from a `.env` file in the working directory). Lists and
mappings are JSON, e.g. `IOT_MQTT_TOPICS='["application/+/device/+/event/up"]'`.
Defaults run the whole system on one machine. A wrong value stops the process at start-up
with a message naming the variable.

This page is generated from `models/settings.py` by `scripts/config_doc.py`.

| variable | default | meaning |
|---|---|---|
"""


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = json.dumps(default, ensure_ascii=False) if not isinstance(default, str) else default
        meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `IOT_{name.upper()}` | `{shown}` | {meaning} |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    (ROOT / "docs" / "configuration.md").write_text(render())
