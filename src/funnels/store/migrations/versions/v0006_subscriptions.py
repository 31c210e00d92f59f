"""The `subscriptions` table: what each instance has unsubscribed from (a channel, or a channel's topic).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(240), nullable=False),
        sa.Column("unsubscribed_ms", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.PrimaryKeyConstraint("instance_id", "topic"),
    )


def downgrade() -> None:
    op.drop_table("subscriptions")
