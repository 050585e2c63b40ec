"""Indexes for delivery statistics (the window on created_at) and for dead letters (failed, newest first).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_deliveries_created", "deliveries", ["created_at"])
    op.create_index(
        "ix_deliveries_failed_updated",
        "deliveries",
        ["updated_at", "id"],
        postgresql_where=sa.text("status = 'failed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_failed_updated", table_name="deliveries")
    op.drop_index("ix_deliveries_created", table_name="deliveries")
