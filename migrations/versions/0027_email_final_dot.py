"""E-mail at most once after the final dot: `confirming` and `unconfirmed` deliveries.

The delivery worker commits an e-mail's attempt as past the point of no return
(``delivery_attempts.final_dot_at``, delivery status ``confirming``) just before it writes
SMTP's terminating ``<CRLF>.<CRLF>``, and ``delivered`` on the server's 250. A delivery
left ``confirming`` by a worker that died is never sent again: the worker's housekeeping
marks it ``unconfirmed`` (sent, not confirmed by the server) for staff to look at and, if
they decide so, send again (docs/notifications.md).

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations.sql import run_script

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE delivery_attempts ADD COLUMN final_dot_at timestamptz;
ALTER TABLE deliveries DROP CONSTRAINT ck_deliveries_status_known;
ALTER TABLE deliveries ADD CONSTRAINT ck_deliveries_status_known
    CHECK (status IN ('pending', 'held', 'delivered', 'dead', 'digested', 'confirming',
                      'unconfirmed'));
CREATE INDEX ix_deliveries_in_doubt ON deliveries (municipality_id)
    WHERE status IN ('confirming', 'unconfirmed');
"""

DOWNGRADE = """
DROP INDEX ix_deliveries_in_doubt;
UPDATE deliveries SET status = 'dead',
       last_error = 'unconfirmed: sent, not confirmed by the SMTP server'
WHERE status IN ('confirming', 'unconfirmed');
ALTER TABLE deliveries DROP CONSTRAINT ck_deliveries_status_known;
ALTER TABLE deliveries ADD CONSTRAINT ck_deliveries_status_known
    CHECK (status IN ('pending', 'held', 'delivered', 'dead', 'digested'));
ALTER TABLE delivery_attempts DROP COLUMN final_dot_at;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
