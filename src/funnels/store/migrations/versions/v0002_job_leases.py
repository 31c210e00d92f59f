"""Action jobs remember their lease's owner and when an at-most-once send started (`lease_owner`,
`send_started_ms`), so a job whose worker died mid-send ends `unknown` instead of being sent twice.

Both nullable with no default: on SQLite each is a plain `ALTER TABLE … ADD COLUMN` (the rows are not
rewritten), on PostgreSQL an instant one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("action_jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(80), nullable=True))
        batch.add_column(sa.Column("send_started_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("action_jobs") as batch:
        batch.drop_column("send_started_ms")
        batch.drop_column("lease_owner")
