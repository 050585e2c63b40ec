"""Suppressions: the addresses each project does not send to.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("project_id", sa.String(63), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        # Email addresses in lower case (compared without regard to case); phone numbers in E.164.
        sa.Column("address", sa.String(254), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        # The accept looks a recipient up by this key; a second suppression of an address keeps the first.
        sa.PrimaryKeyConstraint("project_id", "channel", "address", name="pk_suppressions"),
    )
    # Lists walk a project's suppressions newest first.
    op.create_index("ix_suppressions_project_created", "suppressions", ["project_id", "created_at", "address"])


def downgrade() -> None:
    op.drop_table("suppressions")
