"""Each id of an instance records its place among the instance's ids (`instance_ids.position`: 0 for the id
the instance was created with, then in the order identifies added them), so "the instance's ids in order"
(`ids[0]` in templates, the People page) is a column both dialects can order by instead of SQLite's rowid.

Existing rows are numbered in rowid order per instance, which is the order the release before wrote them
(a SQLite-only statement: a PostgreSQL store is new at this revision, with no rows to number).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance_ids") as batch:
        batch.add_column(sa.Column("position", sa.Integer(), nullable=False, server_default="0"))
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "UPDATE instance_ids SET position = (SELECT COUNT(*) FROM instance_ids AS earlier"
            " WHERE earlier.instance_id = instance_ids.instance_id AND earlier.rowid < instance_ids.rowid)"
        )


def downgrade() -> None:
    with op.batch_alter_table("instance_ids") as batch:
        batch.drop_column("position")
