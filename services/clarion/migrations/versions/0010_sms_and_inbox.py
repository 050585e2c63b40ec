"""SMS and the in-app inbox: the users' two new channel switches, the inbox's messages, and each user's inbox
sequence (the cursor WatchInbox resumes from).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults: PostgreSQL adds such columns without rewriting the table, and every existing user accepts
    # the new channels, as a user who never said otherwise accepts email and push.
    op.add_column("users", sa.Column("sms_enabled", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column("users", sa.Column("in_app_enabled", sa.Boolean(), nullable=False, server_default=sa.true()))
    # One row per user with an inbox: the last sequence number given out. Taking the next number locks the row, so
    # a user's messages commit in the order of their numbers, and a watcher that has seen number n has seen every
    # message before it (a global sequence would let a later number commit first, and a watcher skip the earlier).
    op.create_table(
        "inbox_sequences",
        sa.Column("user_id", sa.String(63), primary_key=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "inbox_messages",
        # The in-app delivery's id: a redelivered task inserts nothing twice.
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("user_id", sa.String(63), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("project_id", sa.String(63), nullable=False),
        sa.Column("notification_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("action_url", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("user_id", "seq", name="uq_inbox_messages_user_seq"),
    )
    # Lists (newest first) and watches (after a cursor) walk a user's messages by sequence; the counts read the
    # same range. The states are not in the index, so marking a message read can be a HOT update.
    op.create_index("ix_inbox_messages_user_project_seq", "inbox_messages", ["user_id", "project_id", "seq"])
    # Deleting a user deletes their inbox.
    op.create_foreign_key(
        "fk_inbox_messages_user_id_users", "inbox_messages", "users", ["user_id"], ["id"], ondelete="CASCADE"
    )
    op.create_foreign_key(
        "fk_inbox_sequences_user_id_users", "inbox_sequences", "users", ["user_id"], ["id"], ondelete="CASCADE"
    )


def downgrade() -> None:
    op.drop_table("inbox_messages")
    op.drop_table("inbox_sequences")
    op.drop_column("users", "in_app_enabled")
    op.drop_column("users", "sms_enabled")
