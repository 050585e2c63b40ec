"""The sweeper's scan for deliveries published but never claimed or finished (their message was lost).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_published_unfinished",
        "deliveries",
        ["published_at"],
        postgresql_where=sa.text("status IN ('queued', 'retrying') AND published_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_published_unfinished", table_name="deliveries")
