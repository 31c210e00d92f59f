"""The schema of the last release before migrations (commit 0af07ab): every table it created.

A data directory written by that release has these tables and no `alembic_version`; the store recognises it
and stamps it at this revision instead of running it (`funnels.store.schema`).

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "dashboard_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_dashboard_sessions_key_id", "dashboard_sessions", ["key_id"])
    op.create_index("ix_dashboard_sessions_expires_ms", "dashboard_sessions", ["expires_ms"])
    op.create_table(
        "event_log",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(400), nullable=False),
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("event_id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("primary_id", sa.String(400), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("properties", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "instance_ids",
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("id_text", sa.String(400), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("model", "id_text"),
    )
    op.create_index("ix_instance_ids_id_text", "instance_ids", ["id_text"])
    op.create_index("ix_instance_ids_instance", "instance_ids", ["instance_id"])
    op.create_table(
        "relationships",
        sa.Column("parent_model", sa.String(200), nullable=False),
        sa.Column("parent_id", sa.String(400), nullable=False),
        sa.Column("child_model", sa.String(200), nullable=False),
        sa.Column("child_id", sa.String(400), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("parent_model", "parent_id", "child_model", "child_id"),
    )
    op.create_index("ix_relationships_child", "relationships", ["child_model", "child_id"])
    op.create_table(
        "satisfied_steps",
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("funnel_id", sa.String(200), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(400), nullable=False),
        sa.Column("event_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("satisfied_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("instance_id", "funnel_id", "step_index"),
    )
    op.create_table(
        "action_specs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "action_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("funnel_id", sa.String(200), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("action_index", sa.Integer(), nullable=False),
        sa.Column("action_type", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("spec_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(400), nullable=False),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("event_properties", sa.Text(), nullable=False),
        sa.Column("event_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_ms", sa.BigInteger(), nullable=False),
        sa.Column("next_ms", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("rendered", sa.Text(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("sent_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
        sqlite_autoincrement=True,
    )
    # The claim query's index: only jobs a worker must look at again (partial, on both dialects).
    op.create_index(
        "ix_action_jobs_next",
        "action_jobs",
        ["next_ms"],
        sqlite_where=sa.text("next_ms IS NOT NULL"),
        postgresql_where=sa.text("next_ms IS NOT NULL"),
    )
    op.create_index("ix_action_jobs_instance", "action_jobs", ["instance_id", "funnel_id"])
    op.create_index("ix_action_jobs_status", "action_jobs", ["status", "id"])
    op.create_table(
        "action_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("finished_ms", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_action_attempts_job_id", "action_attempts", ["job_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("credential", sa.String(64), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("epoch_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("finished_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("credential", "method", "path", "key"),
    )
    op.create_index("ix_idempotency_keys_created", "idempotency_keys", ["created_ms"])


def downgrade() -> None:
    for table in (
        "idempotency_keys",
        "action_attempts",
        "action_jobs",
        "action_specs",
        "satisfied_steps",
        "relationships",
        "instance_ids",
        "instances",
        "event_log",
        "dashboard_sessions",
        "api_keys",
    ):
        op.drop_table(table)
