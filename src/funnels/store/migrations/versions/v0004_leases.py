"""The `leases` table: a job one process at a time does among all that share the state store (shipping the
event log into a shared ClickHouse server), with its holder, expiry and last reported progress.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("progress", sa.BigInteger(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("leases")
