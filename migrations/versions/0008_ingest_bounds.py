"""Dead letters bounded, uplink identities for redelivery without a device time.

* ``dead_letters.payload_truncated_from``: the size of a payload stored cut to
  IOT_DEAD_LETTER_MAX_PAYLOAD_BYTES (NULL: stored whole).
* ``ix_dead_letters_municipality_id_id`` serves a municipality's newest letters
  (``WHERE municipality_id = ? ORDER BY id DESC LIMIT n``) without sorting, and replaces
  the single-column index; ``ix_dead_letters_unattributed_device_id`` finds the letters no
  municipality was resolved for by the device they name.
* ``dead_letter_repeats``: letters of a (device or topic, reason) beyond the sample kept
  per hour, counted instead of stored.
* ``uplink_identities``: the time first given to an uplink that carries no time of its
  own, by its identity (ChirpStack deduplicationId, The Things Stack correlation id,
  native message_id), so that a redelivery gets the same reading keys.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations.sql import run_script

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE dead_letters ADD COLUMN payload_truncated_from integer;
DROP INDEX ix_dead_letters_municipality_id;
CREATE INDEX ix_dead_letters_municipality_id_id ON dead_letters (municipality_id, id);
CREATE INDEX ix_dead_letters_unattributed_device_id ON dead_letters (device_id)
    WHERE municipality_id IS NULL;

CREATE TABLE dead_letter_repeats (
    key text NOT NULL,
    reason text NOT NULL,
    hour timestamptz NOT NULL,
    municipality_id integer,
    device_id text,
    repeats bigint NOT NULL,
    last_received_at timestamptz NOT NULL,
    CONSTRAINT pk_dead_letter_repeats PRIMARY KEY (key, reason, hour),
    CONSTRAINT fk_dead_letter_repeats_municipality_id_municipalities
        FOREIGN KEY (municipality_id) REFERENCES municipalities (id) ON DELETE SET NULL
);
CREATE INDEX ix_dead_letter_repeats_hour ON dead_letter_repeats (hour);
CREATE INDEX ix_dead_letter_repeats_municipality_id ON dead_letter_repeats (municipality_id);

CREATE TABLE uplink_identities (
    identity text NOT NULL,
    received_at timestamptz NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_uplink_identities PRIMARY KEY (identity)
);
CREATE INDEX ix_uplink_identities_first_seen ON uplink_identities (first_seen);
"""
DOWNGRADE = """
DROP TABLE uplink_identities;
DROP TABLE dead_letter_repeats;
DROP INDEX ix_dead_letters_unattributed_device_id;
DROP INDEX ix_dead_letters_municipality_id_id;
CREATE INDEX ix_dead_letters_municipality_id ON dead_letters (municipality_id);
ALTER TABLE dead_letters DROP COLUMN payload_truncated_from;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
