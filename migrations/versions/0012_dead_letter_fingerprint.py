"""dead_letters.fingerprint: one letter per message, also when the broker delivers it again.

A message whose acknowledgement was lost (the broker killed after ingest committed, ingest
killed before acknowledging) arrives again. Its readings are absorbed by their keys; a
letter had no key, so it was stored twice. ``fingerprint`` is SHA-256 over the topic, a NUL
byte and the whole payload (before any cut, ingest/dead_letters.py), unique: the same bytes
on the same topic are the same message. Letters written before this migration have none.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations.sql import run_script

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE dead_letters ADD COLUMN fingerprint bytea;
CREATE UNIQUE INDEX ux_dead_letters_fingerprint ON dead_letters (fingerprint);
"""
DOWNGRADE = """
DROP INDEX ux_dead_letters_fingerprint;
ALTER TABLE dead_letters DROP COLUMN fingerprint;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
